"""Many small trainings at once: worker processes (spawned, one torch thread each) for the
retrainings of the input reduction. A table network trains on one thread fastest, so processes,
not threads, are what use a machine's cores. ``workers=1`` trains in this process, one by one.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import os

from engine.core.errors import UserError
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.tabular.dataset import TabularData
from engine.tabular.train import TrainConfig, train_tabular

MAX_WORKERS = 32


def default_workers() -> int:
    """The cores this process may use (at most 8)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(8, cores))


def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)


def _train_metrics(data: TabularData, config: TrainConfig) -> dict:
    """A worker's task: the test metrics of one training (the network itself stays in the worker)."""
    return train_tabular(data, config).metrics


def train_metrics(tasks: list[tuple[TabularData, TrainConfig]], workers: int = 1, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> list[dict]:
    """The test metrics of each (data, config) training, in the order given; ``progress`` gets
    (fraction, 'training i/n') as trainings end, and a cancel stops the workers' queue."""
    progress, cancel = resolve(progress, cancel)
    if not 1 <= workers <= MAX_WORKERS:
        raise UserError(f"workers must be from 1 to {MAX_WORKERS}, not {workers}")
    results: list[dict | None] = [None] * len(tasks)
    if workers == 1 or len(tasks) < 2:
        for i, (data, config) in enumerate(tasks):
            cancel.check()
            results[i] = train_tabular(data, config, cancel=cancel).metrics
            progress((i + 1) / len(tasks), f"training {i + 1}/{len(tasks)}")
        return results  # type: ignore[return-value]
    context = multiprocessing.get_context("spawn")
    pool = futures.ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context, initializer=_one_thread)
    try:
        pending = {pool.submit(_train_metrics, data, config): i for i, (data, config) in enumerate(tasks)}
        done = 0
        while pending:
            cancel.check()
            finished, _ = futures.wait(pending, timeout=0.2, return_when=futures.FIRST_COMPLETED)
            for future in finished:
                results[pending.pop(future)] = future.result()
                done += 1
                progress(done / len(tasks), f"training {done}/{len(tasks)}")
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results  # type: ignore[return-value]
