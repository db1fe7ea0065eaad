"""What a worker does, on any backend: load the model once, then explain and score the pending
(image, method) pairs of one image at a time, or of a group of ``Job.batch`` images together
(:meth:`Worker.run_many`). Everything here is picklable, so a Ray actor runs the same code as the
local backend."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.core.progress import CancelToken
from engine.core.requests import ModelSpec


@dataclass(frozen=True)
class MetricSettings:
    """How every map is scored (the same for every pair of a run)."""

    steps: int = 50  # deletion and insertion curve steps
    baseline: str = "blur"
    tolerance: float = 0.0  # pointing-game tolerance in pixels (see engine.metrics.localisation)
    road: bool = False  # ROAD MoRF / LeRF with noisy linear imputation (engine.metrics.road)
    road_noise: float = 0.01


@dataclass(frozen=True)
class Job:
    """Everything a worker needs: the model spec (loaded by each worker, with the user's
    preprocessing), the methods with their parameter objects, the target, the metric settings and
    the seed."""

    model: ModelSpec
    methods: dict[str, Any]  # name -> parameter dataclass
    metrics: MetricSettings = field(default_factory=MetricSettings)
    seed: int = 0
    device: str = "auto"
    # Torch's CPU threads in each worker (None: torch's default; a Ray worker has as many as its
    # CPUs). Reductions are summed in a thread-dependent order, so bit-identical maps on two
    # backends need the same count; it is not a result setting, so a resume may change it.
    threads: int | None = None
    # Images a worker explains and scores together (1: one by one, as ``explain`` does). With more,
    # the batched methods (MethodSpec.batched) take several images per forward and backward and
    # the deletion and insertion curves of all their pairs share forwards; the maps and scores
    # are the one-by-one ones up to float rounding. Not a result setting: a resume may change it.
    batch: int = 1
    # The class every map explains (None: each image's predicted class).
    target: int | None = None
    # Digests of the model's files, its preprocessing and the version (engine.models.fingerprint):
    # a resume must match them, so rows of two different networks never share a store.
    fingerprint: dict = field(default_factory=dict)

    def settings(self) -> dict:
        """The part of the store's manifest that a resume must match."""
        return self.model.to_dict() | {
            "target": self.target,
            "fingerprint": dict(self.fingerprint),
            "methods": {name: dataclasses.asdict(params) for name, params in self.methods.items()},
            "metrics": dataclasses.asdict(self.metrics),
            "seed": self.seed,
        }


@dataclass(frozen=True)
class Task:
    """One image and the methods still to run on it."""

    index: int
    item: Any  # engine.io.images.InputItem
    image: str  # the image's name in the store (its path relative to the data folder)
    methods: tuple[str, ...]


def task_groups(tasks: list[Task], size: int) -> list[list[Task]]:
    """The tasks in groups of ``size`` images, in order: what one worker call runs together."""
    size = max(1, int(size))
    return [tasks[i : i + size] for i in range(0, len(tasks), size)]


@dataclass
class PairResult:
    index: int
    method: str
    record: dict
    map: np.ndarray | None  # None for a failed pair (its record holds the reason in "error")

    @property
    def failed(self) -> bool:
        return self.map is None


def failed_pair(task: Task, method: str, error: BaseException) -> PairResult:
    """The record of a pair that could not be computed: the image, the method and why."""
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    record = {"image_index": task.index, "image": task.image, "label": task.item.label, "method": method, "error": reason[:500]}
    return PairResult(task.index, method, record, None)


def _finite_or_none(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if np.isfinite(value) else None


class Worker:
    """Loads the job's model once; :meth:`run` computes one task's pairs."""

    def __init__(self, job: Job, loaded: Any = None) -> None:
        from engine.models.loading import load_spec
        from engine.runtime.device import select_device

        self.job = job
        if job.threads is not None:
            import torch

            torch.set_num_threads(job.threads)
        self.loaded = loaded if loaded is not None else load_spec(dataclasses.replace(job.model, seed=job.seed), check_size=False)
        self.loaded.module.to(select_device(job.device))

    def run(self, task: Task, cancel: CancelToken | None = None) -> list[PairResult]:
        """One image's pairs; an image that cannot be read or explained gives failed pairs (with
        the reason) instead of stopping the run."""
        from engine.core.errors import UserError

        try:
            tensor, mask = self._load(task)
        except UserError as exc:
            return [failed_pair(task, name, exc) for name in task.methods]
        out = []
        for name in task.methods:
            try:
                out.append(self._pair(task, name, tensor, mask, cancel))
            except UserError as exc:
                out.append(failed_pair(task, name, exc))
        return out

    def run_many(self, tasks: list[Task], cancel: CancelToken | None = None) -> list[PairResult]:
        """The pairs of several images, image by image in the order given: each method explains
        all its images with ``explain_many`` (several per forward where the method allows it), then
        the deletion and insertion curves of every pair are computed in shared forwards. Images
        that cannot be read or explained give failed pairs; the others go on."""
        from engine.core.errors import UserError

        if len(tasks) == 1:
            return self.run(tasks[0], cancel)
        readable, failures = [], []
        for task in tasks:
            try:
                readable.append((task, self._load(task)))
            except UserError as exc:
                failures += [failed_pair(task, name, exc) for name in task.methods]
        if not readable:
            return failures
        tasks, loaded = [t for t, _ in readable], [data for _, data in readable]
        try:
            return failures + self._run_loaded(tasks, loaded, cancel)
        except UserError:  # one image the batch cannot take: each alone, so only it fails
            return failures + [pair for task in tasks for pair in self.run(task, cancel)]

    def _run_loaded(self, tasks: list[Task], loaded: list, cancel) -> list[PairResult]:
        from engine.methods.runner import explain_many
        from engine.metrics.evaluate import evaluate_maps

        job, metrics = self.job, self.job.metrics
        explained = {}
        for name in job.methods:
            positions = [p for p, task in enumerate(tasks) if name in task.methods]
            if positions:
                results = explain_many(self.loaded, [loaded[p][0] for p in positions], name, [job.target] * len(positions), job.methods[name], seed=job.seed, cancel=cancel)
                explained.update({(p, name): result for p, result in zip(positions, results, strict=True)})
        pairs = [(p, name) for p, task in enumerate(tasks) for name in task.methods]
        scores = evaluate_maps(
            [explained[pair] for pair in pairs],
            masks=[loaded[p][1] for p, _ in pairs],
            model=self.loaded,
            inputs=[loaded[p][0] for p, _ in pairs],
            tolerance=metrics.tolerance,
            steps=metrics.steps,
            baseline=metrics.baseline,
            cancel=cancel,
        )
        return [self._result(tasks[p], name, loaded[p][0], explained[(p, name)], score, cancel) for (p, name), score in zip(pairs, scores, strict=True)]

    def _load(self, task: Task):
        from engine.io.images import load_input
        from engine.metrics.study import mask_for

        tensor, _ = load_input(task.item, self.loaded.preprocess)
        mask = mask_for(task.item, self.loaded.preprocess)
        return tensor, (mask if mask is not None and mask.any() else None)

    def _pair(self, task: Task, name: str, tensor, mask, cancel) -> PairResult:
        from engine.methods.runner import explain
        from engine.metrics import evaluate_map

        job, metrics = self.job, self.job.metrics
        result = explain(self.loaded, tensor, name, job.target, job.methods[name], seed=job.seed, cancel=cancel)
        scores = evaluate_map(result, mask=mask, model=self.loaded, inputs=tensor, steps=metrics.steps, baseline=metrics.baseline, tolerance=metrics.tolerance, cancel=cancel)
        return self._result(task, name, tensor, result, scores, cancel)

    def _result(self, task: Task, name: str, tensor, result, scores, cancel) -> PairResult:
        from engine.metrics.road import road

        job, metrics = self.job, self.job.metrics
        local, faith = scores.localisation, scores.faithfulness
        record = {
            "image_index": task.index,
            "image": task.image,
            "label": task.item.label,
            "method": name,
            "target": int(result.target),
            "predicted": self.loaded.label(result.predicted),
            "time_s": float(result.elapsed_s),
            "deletion_auc": _finite_or_none(faith.deletion.auc),
            "insertion_auc": _finite_or_none(faith.insertion.auc),
            "deletion_curve": [float(v) for v in faith.deletion.scores],
            "insertion_curve": [float(v) for v in faith.insertion.scores],
        }
        if result.extras.get("stability") is not None:
            record["stability"] = _finite_or_none(result.extras["stability"])
        if local is not None and local.pointing_hit is not None:
            record |= {"pointing": float(local.pointing_hit), "energy": _finite_or_none(local.energy), "iou": _finite_or_none(local.iou)}
        if metrics.road:
            curves = road(self.loaded, tensor, result, result.target, noise=metrics.road_noise, seed=job.seed + task.index, cancel=cancel)
            record |= {"road_morf": curves.morf_mean, "road_lerf": curves.lerf_mean}
        return PairResult(task.index, name, record, np.asarray(result.map, dtype=np.float32))
