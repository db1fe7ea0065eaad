"""The Ray backend: images sharded into tasks over actors that each load the model once.

Without an address a local Ray is started with ``workers`` CPUs (and stopped afterwards); with one
(``ray://HEAD:10001`` or ``HEAD:6379``, or ``auto``) the run joins that cluster. Each actor asks
Ray for ``cpus_per_worker`` CPUs and ``gpus_per_worker`` GPUs, so on a GPU cluster Ray places one
actor per GPU (it sets CUDA_VISIBLE_DEVICES for it). The driver keeps two tasks in flight per
actor and yields each finished task's results (one image, or a group of ``Job.batch`` images) as it arrives (``ray.wait``), so the store fills
while the cluster works. Ray is the optional extra ``sensiscope[cluster]``; it is imported here
only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from engine.core.errors import UserError
from engine.core.progress import CancelToken
from engine.runs.worker import Job, PairResult, Task, Worker, task_groups

IN_FLIGHT_PER_ACTOR = 2


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("the Ray backend needs Ray: install the cluster extra (pip install 'sensiscope[cluster]')") from None
    return ray


class _RayWorker:
    """The actor: keeps the Worker (and so the loaded model) of the job it last ran, so a run
    loads the model once per actor, and a later run of the same job on a kept actor not at all."""

    def __init__(self) -> None:
        self.job: Job | None = None
        self.worker: Worker | None = None

    def run(self, job: Job, task: Task | list[Task]) -> list[PairResult]:
        """One image's pairs, or those of a group of images (``Job.batch``) run together."""
        if self.worker is None or job != self.job:
            self.worker = None
            self.worker = Worker(job)
            self.job = job
        return self.worker.run_many(task) if isinstance(task, list) else self.worker.run(task)


# Actors kept while a Ray that this module did not start stays up (a notebook's, a test's), by
# (Ray job, workers, CPUs and GPUs per worker): a second run reuses them instead of starting new
# processes that import torch again. A Ray this module starts is stopped after the run, actors and all.
_KEPT: dict[tuple, list] = {}


def _start(ray, options) -> bool:
    """Start or join Ray; True when this call started it (and must stop it)."""
    if ray.is_initialized():
        return False
    root = str(Path(__file__).resolve().parents[2])  # so workers import this checkout's engine
    runtime_env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)}}
    try:
        if options.address:
            ray.init(address=options.address, runtime_env=runtime_env, log_to_driver=False, logging_level="ERROR")
        else:
            cpus = max(1, int(options.workers * options.cpus_per_worker + 0.999))
            ray.init(num_cpus=cpus, include_dashboard=False, runtime_env=runtime_env, log_to_driver=False, logging_level="ERROR")
    except Exception as exc:  # Ray raises plain Exceptions (a node that timed out on start)
        raise UserError(f"cannot start or join Ray{' at ' + options.address if options.address else ''}: {str(exc).splitlines()[0] if str(exc) else exc}") from None
    return True


def _check_resources(ray, options) -> None:
    """Refuse workers that no node can hold (Ray would wait for them forever)."""
    resources = ray.cluster_resources()
    for name, need in (("GPU", options.gpus_per_worker), ("CPU", options.cpus_per_worker)):
        have = float(resources.get(name, 0.0))
        if need > have:
            raise UserError(f"each Ray worker asks for {need:g} {name}s but the cluster has {have:g}; lower --{name.lower()}s-per-worker or join a cluster that has them")


def _actors(ray, options, started: bool) -> list:
    key = (ray.get_runtime_context().get_job_id(), options.workers, options.cpus_per_worker, options.gpus_per_worker)
    if not started and key in _KEPT:
        return _KEPT[key]
    for old in _KEPT.values():  # one kept pool at a time: its CPUs and GPUs go to the new one
        for actor in old:
            with contextlib.suppress(Exception):
                ray.kill(actor)
    _KEPT.clear()
    actor_cls = ray.remote(num_cpus=options.cpus_per_worker, num_gpus=options.gpus_per_worker)(_RayWorker)
    actors = [actor_cls.remote() for _ in range(options.workers)]
    if not started:
        _KEPT[key] = actors
    return actors


def _result(ray, ref) -> list[PairResult]:
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, UserError):
            raise UserError(str(cause)) from None
        raise
    except ray.exceptions.RayActorError as exc:
        raise UserError(f"a Ray worker died: {str(exc).splitlines()[0]}") from None


def ray_results(job: Job, tasks: list[Task], options, cancel: CancelToken) -> Iterator[list[PairResult]]:
    """Yield each task's results as the actors finish them (see the module docstring)."""
    ray = import_ray()
    if options.workers < 1:
        raise UserError("--workers must be at least 1")
    started = _start(ray, options)
    pending: dict = {}
    try:
        _check_resources(ray, options)
        actors = _actors(ray, options, started)
        queue = iter(task_groups(tasks, job.batch))

        def submit(actor) -> None:
            task = next(queue, None)
            if task is not None:
                pending[actor.run.remote(job, task)] = actor

        for actor in actors:
            for _ in range(IN_FLIGHT_PER_ACTOR):
                submit(actor)
        while pending:
            cancel.check()
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                actor = pending.pop(ref)
                results = _result(ray, ref)
                submit(actor)
                yield results
    finally:
        for ref in pending:  # a run stopped early: drop the queued work of kept actors
            with contextlib.suppress(Exception):
                ray.cancel(ref)
        if started:
            ray.shutdown()
