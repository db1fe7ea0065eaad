"""The driver of a data-set run: find the pairs still to do, hand them to a backend, and write
each image's results to the store as they come back.

Backends: ``local`` (one worker in this process) and ``ray`` (:mod:`engine.runs.ray_backend`:
actors on a local Ray or a cluster). Both yield lists of :class:`PairResult`; only the driver
writes the store, so the store never sees two writers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core.errors import UserError
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.runs.store import MANIFEST, MAP_DTYPES, MemoryStore, Store
from engine.runs.worker import Job, PairResult, Task, Worker, task_groups

BACKENDS = ("local", "ray")


@dataclass(frozen=True)
class RunCount:
    """Progress payload of a run: pairs finished (this run and before) out of all."""

    done: int
    total: int
    computed: int


@dataclass
class RunSummary:
    store: str
    total: int  # (image, method) pairs of the run
    skipped: int  # already in the store when this run began (resume)
    computed: int  # computed and written by this run
    complete: bool
    backend: str
    elapsed_s: float
    # pairs of this run that could not be computed, as (image, method, reason); they are in the
    # store as failed records, which a resume skips unless asked to retry them
    failures: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return len(self.failures)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__) | {"failed": self.failed, "failures": [{"image": i, "method": m, "reason": r} for i, m, r in self.failures]}


@dataclass(frozen=True)
class RayOptions:
    workers: int = 2
    address: str | None = None
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0


def image_name(item: Any) -> str:
    return Path(item.relative).as_posix()


def run_settings(job: Job, data: str, items: list, map_dtype: str) -> dict:
    """The manifest settings of a run (what a resume must match)."""
    if map_dtype not in MAP_DTYPES:
        raise UserError(f"unknown map type '{map_dtype}'; choose one of {', '.join(MAP_DTYPES)}")
    return job.settings() | {"data": str(data), "images": [image_name(item) for item in items], "map_dtype": map_dtype}


def _write(store: Store, results: list[PairResult]) -> None:
    """Write finished pairs; a full disk (or any failing write) is one line, and the store keeps
    every pair written before (a part is whole or absent, so a resume continues from there)."""
    try:
        store.write(results)
    except OSError as exc:
        raise UserError(f"cannot write to the store {store.folder}: {exc.strerror or exc}; the pairs written before are kept, continue with --resume once there is room") from None


def _remove_new_store(store: Store, keep_folder: bool) -> None:
    import contextlib

    with contextlib.suppress(OSError):
        store.manifest_path.unlink()
        ledger = store.folder / ".sensiscope-files.json"
        if ledger.is_file():
            ledger.unlink()
        if not keep_folder:
            store.folder.rmdir()  # only when it is empty again


def pending_tasks(items: list, methods: list[str], done: set[tuple[int, str]]) -> list[Task]:
    tasks = []
    for index, item in enumerate(items):
        todo = tuple(m for m in methods if (index, m) not in done)
        if todo:
            tasks.append(Task(index, item, image_name(item), todo))
    return tasks


def local_results(job: Job, tasks: list[Task], cancel: CancelToken, loaded: Any = None) -> Iterator[list[PairResult]]:
    import torch

    threads = torch.get_num_threads()
    try:
        worker = Worker(job, loaded)
        for group in task_groups(tasks, job.batch):
            cancel.check()
            yield worker.run_many(group, cancel)
    finally:
        torch.set_num_threads(threads)  # the job's thread count is the run's, not the process's


def _open_store(store_dir, settings: dict, resume: bool, repair: bool) -> tuple[Store, Callable[[], None] | None]:
    """The store a run writes, and (for a store this call made) how to remove it again."""
    if isinstance(store_dir, MemoryStore):
        store_dir._write_manifest(MemoryStore.for_run(None, settings).manifest())
        return store_dir, None
    if store_dir is MemoryStore:
        return MemoryStore.for_run(None, settings, resume=resume), None
    folder = Path(store_dir).expanduser()
    fresh, existed = not (folder / MANIFEST).exists(), folder.exists()
    store = Store.for_run(store_dir, settings, resume=resume, repair=repair)
    return store, ((lambda: _remove_new_store(store, existed)) if fresh else None)


def _stream_into(store: Store, stream, limit: int | None, skipped: int, total: int, progress: ProgressFn) -> tuple[int, list[tuple[str, str, str]]]:
    """Write the results of ``stream`` as they come; (pairs written, failures among them)."""
    computed, failures = 0, []
    try:
        for results in stream:
            if limit is not None:
                results = results[: limit - computed]
            _write(store, results)
            computed += len(results)
            failures += [(r.record["image"], r.method, r.record["error"]) for r in results if r.failed]
            finished = skipped + computed
            if results:
                progress(finished / total, f"{results[-1].record['image']}", RunCount(finished, total, computed))
            if limit is not None and computed >= limit:
                break
    except UserError as exc:
        exc.computed = computed  # what was written before the failure
        raise
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return computed, failures


def run_batch(
    job: Job,
    store_dir: str | Path | Store,
    items: list,
    *,
    data: str = "",
    resume: bool = False,
    backend: str = "local",
    ray: RayOptions | None = None,
    map_dtype: str = "float32",
    limit: int | None = None,
    retry_failed: bool = False,
    repair: bool = False,
    loaded: Any = None,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> RunSummary:
    """Run every (image, method) pair of ``job`` on ``items`` into the store at ``store_dir`` (a
    folder, or a :class:`MemoryStore` class or instance for a run read back once).

    ``loaded``: the job's model already loaded (the local backend then uses it instead of
    loading ``job.model`` again; the Python API's own modules travel this way).

    ``resume`` continues a store with the same settings, skipping its finished pairs (and its
    failed ones, unless ``retry_failed``; ``repair`` first sets a damaged store's damage aside).
    An image that cannot be read or explained is recorded as failed pairs, with the reason, and
    the run goes on; a backend that fails before any pair is written leaves no new store behind.
    ``limit`` stops after that many pairs have been written (what a kill mid-way leaves behind;
    tests use it). The summary counts the pairs computed by this call."""
    progress, cancel = resolve(progress, cancel)
    if backend not in BACKENDS:
        raise UserError(f"unknown backend '{backend}'; choose one of {', '.join(BACKENDS)}")
    if not items:
        raise UserError("no images to run")
    if limit is not None and limit < 0:
        raise UserError("the limit of pairs must be 0 or more")
    start = time.perf_counter()
    methods = list(job.methods)
    store, remove_new = _open_store(store_dir, run_settings(job, data, items, map_dtype), resume, repair)
    done = store.done_pairs(include_failed=not retry_failed)
    total = len(items) * len(methods)
    skipped = sum(1 for index in range(len(items)) for m in methods if (index, m) in done)
    tasks = pending_tasks(items, methods, done)
    computed, failures = 0, []
    progress(skipped / total, f"{skipped} of {total} pairs already in the store", RunCount(skipped, total, 0))
    if tasks and (limit is None or limit > 0):
        if backend == "ray":
            from engine.runs.ray_backend import ray_results

            stream = ray_results(job, tasks, ray or RayOptions(), cancel)
        else:
            stream = local_results(job, tasks, cancel, loaded)
        try:
            computed, failures = _stream_into(store, stream, limit, skipped, total, progress)
        except UserError as exc:
            if remove_new is not None and getattr(exc, "computed", 0) == 0:
                remove_new()
            raise
    complete = skipped + computed == total
    summary = RunSummary(str(store.folder), total, skipped, computed, complete, backend, time.perf_counter() - start, failures)
    store.add_run_entry({"backend": backend, "computed": computed, "skipped": skipped, "failed": len(failures), "complete": complete, "elapsed_s": round(summary.elapsed_s, 3)})
    return summary
