"""``evaluate``: one pipeline whether or not the results are kept. The pairs run through
:func:`engine.runs.run.run_batch` into a result store (a folder with ``--store``, resumable; in
memory otherwise) and the report is always read from that store, so both paths give the same
numbers from the same code."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.metrics.study import EvaluationReport, sanity_checks
from engine.runs.report import report_from_store
from engine.runs.run import RayOptions, RunSummary, run_batch
from engine.runs.store import MemoryStore, Store
from engine.runs.worker import Job


def evaluate_dataset(
    job: Job,
    items: list,
    *,
    loaded: Any = None,
    store: str | Path | None = None,
    data: str = "",
    resume: bool = False,
    backend: str = "local",
    ray: RayOptions | None = None,
    map_dtype: str = "float32",
    limit: int | None = None,
    retry_failed: bool = False,
    repair: bool = False,
    sanity_images: int = 1,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> tuple[EvaluationReport, RunSummary]:
    """Explain and score every (image, method) pair of ``job`` on ``items`` and report on them.

    ``store``: a folder to keep the results in (and resume from); None keeps them in memory.
    ``loaded``: the job's model, already loaded (else it is loaded from ``job.model``). The
    model-randomisation sanity check runs on the first ``sanity_images`` images with a lesion mask.
    """
    progress, cancel = resolve(progress, cancel)
    start = time.perf_counter()
    target = MemoryStore.for_run(None, None, resume=resume) if store is None else store
    summary = run_batch(
        job, target, items, data=data, resume=resume, backend=backend, ray=ray, map_dtype=map_dtype, limit=limit, retry_failed=retry_failed, repair=repair,
        loaded=loaded, progress=progress, cancel=cancel,
    )
    opened = target if isinstance(target, MemoryStore) else Store.open(target)
    sanity = None
    if sanity_images:
        if loaded is None:
            from engine.models.loading import load_spec

            loaded = load_spec(dataclasses.replace(job.model, seed=job.seed), check_size=False)
        sanity = sanity_checks(loaded, items, job.methods, sanity_images=sanity_images, seed=job.seed, cancel=cancel)
    return report_from_store(opened, time.perf_counter() - start, sanity), summary
