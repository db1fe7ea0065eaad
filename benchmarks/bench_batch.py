"""Data-set runs (`batch`): images per second for Grad-CAM and LOCAL on phantom images, image by
image against batched (``Job.batch``), and the local backend against a local Ray with 2 workers.

Each figure is one whole run into a fresh result store: explanation, the deletion and insertion
curves (10 steps) and the writes (Parquet records, Zarr maps). Batched, Grad-CAM explains 16
images per forward and backward and the curves of all 16 images share forwards (32 perturbed
images per forward on a CPU, 256 on a GPU); LOCAL has no batched form (its windows are already evaluated in batches per
image), so only its curves are pooled. The local backend runs with one torch thread (on a loaded
2-core machine two threads per process oversubscribe the cores). The first Ray run includes
starting the workers (each imports torch and loads the model); the later one reuses them
(engine.runs.ray_backend keeps them while Ray is up), which is what a long run converges to. On a
machine with 2 cores, 2 Ray workers with one torch thread each compete with the driver and with
each other, so Ray cannot beat the local backend there; its use is a cluster (several machines, or
one GPU per worker).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from common import BenchResult, Context


def _job(method: str, device: str, threads: int | None, batch: int):
    from engine.core.params import build_params
    from engine.methods._registry import get_method
    from engine.metrics.study import EVALUATE_DEFAULTS
    from engine.runs.worker import Job, MetricSettings

    spec = get_method(method)
    params = build_params(spec.params_cls, {k: str(v) for k, v in EVALUATE_DEFAULTS.get(method, {}).items()})
    return Job("demo:ultrasound", None, None, False, {method: params}, MetricSettings(steps=10), seed=0, device=device, threads=threads, batch=batch)


def _timed(job, items, backend: str, folder: Path, ray_options=None) -> float:
    from engine.runs.run import run_batch

    start = time.perf_counter()
    summary = run_batch(job, folder, items, data="phantom", backend=backend, ray=ray_options)
    elapsed = time.perf_counter() - start
    assert summary.complete and summary.computed == len(items)
    return elapsed


BATCH = 16


def run_batch(ctx: Context) -> BenchResult:
    result = BenchResult("batch", "Data-set runs: images per second, one by one against batched, local backend against a local Ray with 2 workers")
    from engine.demo.phantom import write_imagefolder
    from engine.io.images import scan_inputs

    n = 16 if ctx.quick else 32
    methods = ("gradcam", "local")
    result.config.update(
        {
            "images": n,
            "size": 128,
            "model": "demo:ultrasound",
            "methods": list(methods),
            "deletion_insertion_steps": 10,
            "batch": BATCH,
            "local_params": "window 16, stride 8 (the evaluate defaults)",
        }
    )
    device = "cuda" if ctx.device.type == "cuda" else "cpu"
    threads = None if device == "cuda" else 1
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        write_imagefolder(root / "data", n=n, size=128, seed=11)
        items = [i for i in scan_inputs(root / "data").items if not i.is_tensor]
        for method in methods:
            for batch, text in ((1, "image by image"), (BATCH, f"batched ({BATCH} images)")):
                ctx.log(f"  batch {method}: local backend, {text}, {n} images")
                seconds = _timed(_job(method, device, threads, batch), items, "local", root / f"local-{method}-{batch}")
                result.figure(f"{method}: local backend, {text}", n / seconds, unit="images/s", seconds=seconds)
        _ray_rows(ctx, result, items, methods, device, root)
    result.notes.append("one figure per row (a whole run, not repeated): a run of many images is its own average")
    return result


def _ray_rows(ctx: Context, result: BenchResult, items, methods, device: str, root: Path) -> None:
    from engine.runs.run import RayOptions

    try:
        import ray
    except ImportError:
        result.notes.append("Ray is not installed (the cluster extra): the Ray rows are skipped")
        return
    n = len(items)
    options = RayOptions(workers=2, gpus_per_worker=1.0 if device == "cuda" and _gpus() >= 2 else 0.0)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        for index, method in enumerate(methods):
            # groups of n / 2 images, so that each of the 2 workers gets one group
            job = _job(method, device, 1, max(1, min(BATCH, n // 2)))
            if index == 0:  # the start of Ray's workers (torch imported, model loaded) is paid once
                ctx.log(f"  batch {method}: Ray, 2 workers, cold")
                cold = _timed(job, items, "ray", root / f"ray-cold-{method}", options)
                result.figure(f"{method}: Ray 2 workers, batched, first run (workers' start included)", n / cold, unit="images/s", seconds=cold)
            ctx.log(f"  batch {method}: Ray, 2 workers, warm")
            warm = _timed(job, items, "ray", root / f"ray-warm-{method}", options)
            result.figure(f"{method}: Ray 2 workers (1 torch thread each), batched, workers running", n / warm, unit="images/s", seconds=warm)
    finally:
        ray.shutdown()


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0
