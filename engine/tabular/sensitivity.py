"""Sobol analysis of a tabular network with input distributions built from the data, and the input
reduction study (retrain on the top-k inputs, against random choices of k)."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.core.errors import UserError
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.core.vocab import DISTRIBUTIONS
from engine.stats.sobol import SobolResult, sobol_indices
from engine.stats.sobol_auto import AUTO_BUDGET, AUTO_TOLERANCE, sobol_auto
from engine.tabular.dataset import TabularData
from engine.tabular.parallel import train_metrics
from engine.tabular.train import TrainConfig


def _category(values: np.ndarray, count: int) -> np.ndarray:
    return np.clip(np.floor(values), 0, count - 1)


def _numeric(values: np.ndarray, quantiles: np.ndarray | None, integer: bool, low: float, high: float) -> np.ndarray:
    if quantiles is not None:
        # The empirical distribution: a uniform sample through the empirical quantile function.
        values = np.quantile(quantiles, np.clip(values, 0.0, 1.0), method="inverted_cdf")
    # Rounding half a unit beyond the range (see build_problem) must not leave it.
    return np.clip(np.floor(values + 0.5), low, high) if integer else values


def build_problem(data: TabularData, dist: str = "empirical") -> tuple[dict, callable]:
    """A SALib problem over the data's features and the map from SALib samples to feature values.

    uniform: on the observed range; normal / truncnorm: from the training rows' mean and standard
    deviation (truncated to the observed range); empirical: a uniform sample mapped through the
    empirical quantile function. Categorical inputs are sampled uniformly over their categories and
    integer inputs are rounded, whatever the distribution.
    """
    if dist not in DISTRIBUTIONS:
        raise UserError(f"distribution must be one of {', '.join(DISTRIBUTIONS)}, not '{dist}'")
    train_x = data.x[data.train]
    bounds, dists, transforms = [], [], []
    for index, feature in enumerate(data.features):
        column = train_x[:, index].astype(np.float64)
        if feature.kind == "categorical":
            count = len(feature.categories)
            bounds.append([0.0, float(count)])
            dists.append("unif")
            transforms.append(partial(_category, count=count))
            continue
        low, high = float(column.min()), float(column.max())
        if high <= low:
            raise UserError(f"feature '{feature.name}' is constant in the training rows, so its sensitivity is undefined; drop it")
        mean, std = float(column.mean()), float(column.std(ddof=1))
        quantiles = None
        if dist == "uniform":
            # Integers get half a unit either side, so the end values are as likely as the others.
            bounds.append([low - 0.5, high + 0.5] if feature.integer else [low, high])
            dists.append("unif")
        elif dist == "normal":
            bounds.append([mean, std])
            dists.append("norm")
        elif dist == "truncnorm":
            bounds.append([low, high, mean, std])
            dists.append("truncnorm")
        else:
            bounds.append([0.0, 1.0])
            dists.append("unif")
            quantiles = np.sort(column)
        transforms.append(partial(_numeric, quantiles=quantiles, integer=feature.integer, low=low, high=high) if quantiles is not None or feature.integer else None)
    problem = {"num_vars": len(data.names), "names": data.names, "bounds": bounds, "dists": dists}

    def to_features(samples: np.ndarray) -> np.ndarray:
        out = np.array(samples, dtype=np.float64, copy=True)
        for index, transform in enumerate(transforms):
            if transform is not None:
                out[:, index] = transform(out[:, index])
        return out

    return problem, to_features


def model_output(model: nn.Module, task: str, class_index: int | None) -> callable:
    """An (M, D) -> (M,) function: the probability of one class, or the regression output."""
    device = next(model.parameters()).device

    def evaluate(rows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model(torch.as_tensor(rows, dtype=torch.float32, device=device))
            values = torch.softmax(out, 1)[:, class_index] if task == "classification" else out[:, 0]
        return values.double().cpu().numpy()

    return evaluate


def positive_class(data: TabularData, name: str | None) -> int:
    """The class whose probability is analysed: the one named, else the positive one ('Yes', '1',
    'True', 'positive' ...), else the last in sorted order."""
    if data.task != "classification":
        return 0
    if name is not None:
        if name not in data.classes:
            raise UserError(f"no class '{name}' in '{data.target}'; its classes are: {', '.join(data.classes)}")
        return data.classes.index(name)
    for candidate in ("yes", "1", "true", "positive", "pos", "malignant", "disease"):
        for index, label in enumerate(data.classes):
            if label.strip().lower() == candidate:
                return index
    return len(data.classes) - 1


def tabular_sobol(
    model: nn.Module,
    data: TabularData,
    *,
    n: int | str = 1024,
    second_order: bool = False,
    dist: str = "empirical",
    class_name: str | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    tolerance: float = AUTO_TOLERANCE,
    budget: int = AUTO_BUDGET,
) -> SobolResult:
    """Sobol indices of the network's output (a class probability, or the regression output) with
    inputs drawn from ``dist`` built from the training rows.

    ``dist`` defaults to ``empirical``: each input through its empirical quantile function, so the
    network is evaluated on values patients actually have (a uniform box samples every combination
    of extreme values, far from the training data). ``n='auto'`` doubles N from 256 until the widest
    ST interval is below ``tolerance`` or the next N would pass ``budget`` evaluations.
    """
    problem, to_features = build_problem(data, dist)
    class_index = positive_class(data, class_name)
    evaluate = model_output(model, data.task, class_index)

    def fn(rows: np.ndarray) -> np.ndarray:
        return evaluate(to_features(rows))

    if n == "auto":
        result = sobol_auto(fn, problem, tolerance=tolerance, budget=budget, second_order=second_order, seed=seed, progress=progress, cancel=cancel)
    else:
        result = sobol_indices(fn, problem, n=int(n), second_order=second_order, seed=seed, progress=progress, cancel=cancel)
    result.notes.append(f"inputs drawn from the {dist} distribution built from the training rows")
    result.output_name = f"P({data.target} = {data.classes[class_index]})" if data.task == "classification" else data.target
    result.distribution = dist
    return result


@dataclass
class ReductionRow:
    k: int
    selection: str  # ranked or random
    features: list[list[str]]  # per seed
    metrics: dict[str, tuple[float, float]]  # name -> (mean, std over seeds)

    def to_dict(self) -> dict[str, Any]:
        """k, selection, features and NAME_mean / NAME_std per metric (the columns of reduction.csv)."""
        flat = {"k": self.k, "selection": self.selection, "features": [list(f) for f in self.features]}
        for name, (mean, std) in self.metrics.items():
            flat[f"{name}_mean"], flat[f"{name}_std"] = mean, std
        return flat

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> ReductionRow:
        """The row :meth:`to_dict` described; a JSON null reads as NaN."""
        names = [key[: -len("_mean")] for key in record if key.endswith("_mean")]
        metrics = {name: (_float(record[f"{name}_mean"]), _float(record.get(f"{name}_std", 0.0))) for name in names}
        return cls(int(record["k"]), str(record["selection"]), [[str(name) for name in f] for f in record.get("features", [])], metrics)


@dataclass
class ReductionResult:
    ranking: list[str]
    rank_by: str
    metric: str
    full_score: float
    tolerance: float
    recommended_k: int
    rows: list[ReductionRow] = field(default_factory=list)
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain data (NaN kept; engine.core.jsonable makes it strict JSON); :meth:`from_dict` reads it back."""
        return {
            "ranking": list(self.ranking),
            "rank_by": self.rank_by,
            "metric": self.metric,
            "full_score": self.full_score,
            "tolerance": self.tolerance,
            "recommended_k": self.recommended_k,
            "recommended_features": self.ranking[: self.recommended_k],
            "rows": [r.to_dict() for r in self.rows],
            "elapsed_s": self.elapsed_s,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> ReductionResult:
        """The result :meth:`to_dict` described (recommended_features is derived, so not read).

        Raises KeyError, TypeError or ValueError when the record is damaged.
        """
        return cls(
            ranking=[str(name) for name in record["ranking"]],
            rank_by=str(record.get("rank_by", "ST")),
            metric=str(record["metric"]),
            full_score=_float(record["full_score"]),
            tolerance=float(record["tolerance"]),
            recommended_k=int(record["recommended_k"]),
            rows=[ReductionRow.from_dict(row) for row in record.get("rows", [])],
            elapsed_s=float(record.get("elapsed_s", 0.0)),
        )


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


def _score_names(task: str) -> list[str]:
    return ["accuracy", "balanced_accuracy", "roc_auc"] if task == "classification" else ["r2", "rmse"]


def input_reduction(
    data: TabularData,
    ranking: list[str],
    *,
    rank_by: str = "ST",
    config: TrainConfig = TrainConfig(),
    seeds: int = 3,
    tolerance: float = 0.01,
    random_baseline: bool = True,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    workers: int = 1,
) -> ReductionResult:
    """Retrain on the top-k inputs for k = D .. 1 (several seeds each) and, as a baseline, on random
    choices of k inputs; recommend the smallest k whose mean score is within ``tolerance`` of the
    full model's (accuracy for classifiers, R^2 for regressors). ``workers`` > 1 runs the
    trainings in that many spawned processes (engine.tabular.parallel); the result is the same."""
    progress, cancel = resolve(progress, cancel)
    if seeds < 1:
        raise UserError("at least one seed is needed")
    if sorted(ranking) != sorted(data.names):
        raise UserError("the ranking must list every feature exactly once")
    start = time.perf_counter()
    metric = "accuracy" if data.task == "classification" else "r2"
    names = _score_names(data.task)
    d = len(ranking)
    plans = [(k, "ranked") for k in range(d, 0, -1)] + ([(k, "random") for k in range(d - 1, 0, -1)] if random_baseline else [])
    rng = np.random.default_rng(config.seed)
    # Every training planned first (the random choices drawn in the order of a serial run), then run.
    chosen = [[ranking[:k] if selection == "ranked" else [ranking[i] for i in sorted(rng.choice(d, size=k, replace=False))] for _ in range(seeds)] for k, selection in plans]
    tasks = [(data.select(features), dataclasses.replace(config, seed=config.seed + seed)) for per_plan in chosen for seed, features in enumerate(per_plan)]
    scores = train_metrics(tasks, workers, progress=lambda f, m: progress(f, f"input reduction: {m}"), cancel=cancel)
    rows = []
    for index, ((k, selection), features) in enumerate(zip(plans, chosen, strict=True)):
        block = scores[index * seeds : (index + 1) * seeds]
        values = {name: [m.get(name, float("nan")) for m in block] for name in names}
        rows.append(ReductionRow(k, selection, features, {n: (float(np.mean(v)), float(np.std(v))) for n, v in values.items()}))
    full = next(r for r in rows if r.k == d).metrics[metric][0]
    ranked = [r for r in rows if r.selection == "ranked"]
    good = [r.k for r in ranked if r.metrics[metric][0] >= full - tolerance]
    result = ReductionResult(ranking, rank_by, metric, full, tolerance, min(good), rows, time.perf_counter() - start)
    progress(1.0, "done")
    return result
