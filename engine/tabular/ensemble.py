"""An ensemble of networks instead of one: K trainings with seeds s .. s+K-1 on the same split, a
sensitivity method on each, and per input the mean, the spread across networks, the bootstrap
interval, the rank in each network and Kendall's W for how well the networks agree.

One trained network is one draw of the training's randomness (initialisation, batches, dropout):
on Pima two seeds can rank different inputs first. The ensemble mean is the model of the data; the
spread says how much of a ranking is the seed's.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.core.errors import UserError
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.stats.ranking import kendall_w, ranking_names, ranks
from engine.stats.screening import MEASURES, METHOD_TITLES, MethodResult
from engine.stats.sobol import SobolResult
from engine.tabular.dataset import TabularData
from engine.tabular.train import TrainConfig, TrainedModel, train_tabular

DEFAULT_NETWORKS = 5
MAX_NETWORKS = 50


def train_ensemble(data: TabularData, config: TrainConfig, networks: int = DEFAULT_NETWORKS, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> list[TrainedModel]:
    """K networks trained with seeds config.seed .. config.seed + K - 1 on ``data``'s one split."""
    progress, cancel = resolve(progress, cancel)
    if not 1 <= networks <= MAX_NETWORKS:
        raise UserError(f"the number of networks must be from 1 to {MAX_NETWORKS}, not {networks}")
    trained = []
    for k in range(networks):
        cancel.check()
        config_k = dataclasses.replace(config, seed=config.seed + k)

        def report(fraction: float, message: str, payload=None, k: int = k) -> None:
            progress((k + fraction) / networks, f"network {k + 1}/{networks}: {message}", payload)

        trained.append(train_tabular(data, config_k, progress=report, cancel=cancel))
    return trained


@dataclass
class EnsembleResult:
    """One method over K networks. ``runs[k]`` is network k's result; the rest is derived from them."""

    method: str
    runs: list[MethodResult]
    seeds: list[int]
    metrics: list[dict] = field(default_factory=list)
    sobol: list[SobolResult] = field(default_factory=list)  # the full Sobol results (S2, convergence), method 'sobol' only

    def __post_init__(self) -> None:
        if not self.runs or any(r.names != self.runs[0].names or r.method != self.method for r in self.runs):
            raise ValueError("an ensemble needs results of one method over the same inputs")

    @property
    def names(self) -> list[str]:
        return self.runs[0].names

    @property
    def measure(self) -> str:
        return MEASURES[self.method][0]

    @property
    def scores(self) -> np.ndarray:
        """(K networks x D inputs) of the ranking measure."""
        return np.array([r.score for r in self.runs])

    @property
    def mean(self) -> np.ndarray:
        with warnings.catch_warnings():  # an input without values (DGSM of a categorical one) stays NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanmean(self.scores, axis=0)

    @property
    def spread(self) -> np.ndarray:
        """Standard deviation across networks (ddof 1; 0 for one network)."""
        scores = self.scores
        if len(scores) < 2:
            return np.zeros(scores.shape[1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return np.nanstd(scores, axis=0, ddof=1)

    @property
    def conf(self) -> np.ndarray:
        """Bootstrap half-width of the mean: the mean of the networks' half-widths, an upper bound
        on the mean's sampling error whatever the correlation between the networks' estimates
        (they share the design); NaN for methods without one."""
        confs = [r.conf for r in self.runs]
        return np.full(len(self.names), math.nan) if any(c is None for c in confs) else np.mean(confs, axis=0)

    @property
    def rank_matrix(self) -> np.ndarray:
        """(K x D) rank of each input in each network, 1 = most influential."""
        return np.array([ranks(s) for s in self.scores])

    @property
    def kendall_w(self) -> float:
        return kendall_w(self.rank_matrix)

    def ranking(self) -> list[str]:
        """Names by the ensemble mean, most influential first."""
        return ranking_names(self.names, self.mean)

    def mean_of(self, key: str) -> np.ndarray:
        return np.mean([r.values[key] for r in self.runs], axis=0)

    def summary(self) -> list[dict[str, Any]]:
        """Per input, most influential first: mean, spread, bootstrap half-width, min/max over networks, ranks."""
        index = {name: i for i, name in enumerate(self.names)}
        scores, rank_matrix, mean, spread, conf = self.scores, self.rank_matrix, self.mean, self.spread, self.conf
        rows = []
        for name in self.ranking():
            column = scores[:, index[name]]
            empty = bool(np.isnan(column).all())
            rows.append({
                "name": name, "mean": float(mean[index[name]]), "spread": float(spread[index[name]]), "conf": float(conf[index[name]]),
                "min": math.nan if empty else float(np.nanmin(column)), "max": math.nan if empty else float(np.nanmax(column)),
                "ranks": [int(r) if float(r).is_integer() else float(r) for r in rank_matrix[:, index[name]]],
            })
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Plain data; the derived figures are written for readers and recomputed by :meth:`from_dict`."""
        return {
            "method": self.method,
            "title": METHOD_TITLES[self.method],
            "measure": self.measure,
            "names": list(self.names),
            "networks": len(self.runs),
            "seeds": [int(s) for s in self.seeds],
            "kendall_w": self.kendall_w,
            "ranking": self.ranking(),
            "summary": self.summary(),
            "metrics": [dict(m) for m in self.metrics],
            "runs": [r.to_dict() for r in self.runs],
            "sobol": [s.to_dict() for s in self.sobol],
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> EnsembleResult:
        """KeyError, TypeError or ValueError when the record is damaged."""
        runs = [MethodResult.from_dict(r) for r in record["runs"]]
        seeds = [int(s) for s in record["seeds"]]
        if len(seeds) != len(runs):
            raise ValueError("one seed per network is needed")
        sobol = [SobolResult.from_dict(s) for s in record.get("sobol") or []]
        return cls(str(record["method"]), runs, seeds, [dict(m) for m in record.get("metrics") or []], sobol)


def ensemble_method(
    trained: list[TrainedModel],
    data: TabularData,
    method: str = "sobol",
    *,
    n: int | str = 1024,
    dist: str = "empirical",
    class_name: str | None = None,
    seed: int = 0,
    second_order: bool = False,
    tolerance: float = 0.02,
    budget: int = 2_000_000,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> EnsembleResult:
    """``method`` on every network; each network gets the same sample (seed), so the spread is the
    networks', not the sampling's. ``tolerance`` and ``budget`` apply to Sobol with ``n='auto'``."""
    from engine.stats.screening import from_sobol
    from engine.tabular.methods import network_method
    from engine.tabular.sensitivity import tabular_sobol

    progress, cancel = resolve(progress, cancel)
    runs, sobol = [], []
    for k, t in enumerate(trained):
        cancel.check()

        def report(fraction: float, message: str, payload=None, k: int = k) -> None:
            progress((k + fraction) / len(trained), f"{method}, network {k + 1}/{len(trained)}: {message}")

        if method == "sobol":
            full = tabular_sobol(t.model, data, n=n, second_order=second_order, dist=dist, class_name=class_name, seed=seed, progress=report, cancel=cancel, tolerance=tolerance, budget=budget)
            sobol.append(full)
            runs.append(from_sobol(full))
        else:
            runs.append(network_method(t.model, data, method, n=n, dist=dist, class_name=class_name, seed=seed, progress=report, cancel=cancel))
    return EnsembleResult(method, runs, [t.config.seed for t in trained], [t.metrics for t in trained], sobol)


@dataclass
class MethodComparison:
    """The ensemble ranking of several methods side by side, and Kendall's W across the methods."""

    names: list[str]
    methods: list[str]
    means: dict[str, list[float]]  # method -> ensemble mean of its measure per input
    network_w: dict[str, float]  # method -> Kendall's W across its networks

    @classmethod
    def from_ensembles(cls, ensembles: list[EnsembleResult]) -> MethodComparison:
        names = ensembles[0].names
        if any(e.names != names for e in ensembles):
            raise UserError("methods compared must cover the same inputs")
        return cls(list(names), [e.method for e in ensembles], {e.method: e.mean.tolist() for e in ensembles}, {e.method: e.kendall_w for e in ensembles})

    def rank_table(self) -> dict[str, list[float]]:
        """method -> rank of each input (1 = most influential)."""
        return {m: ranks(np.array(self.means[m], dtype=np.float64)).tolist() for m in self.methods}

    @property
    def kendall_w(self) -> float:
        """Agreement of the methods' rankings (NaN-free methods only, e.g. DGSM without categorical inputs)."""
        table = self.rank_table()
        return kendall_w(np.array([table[m] for m in self.methods]))

    def to_dict(self) -> dict[str, Any]:
        return {"names": list(self.names), "methods": list(self.methods), "means": {m: list(v) for m, v in self.means.items()},
                "network_w": dict(self.network_w), "ranks": self.rank_table(), "kendall_w": self.kendall_w}

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> MethodComparison:
        names, methods = [str(n) for n in record["names"]], [str(m) for m in record["methods"]]
        means = {m: [math.nan if v is None else float(v) for v in record["means"][m]] for m in methods}
        if any(len(v) != len(names) for v in means.values()) or any(m not in MEASURES for m in methods):
            raise ValueError("the comparison's methods do not match its inputs")
        network_w = {m: math.nan if record.get("network_w", {}).get(m) is None else float(record["network_w"][m]) for m in methods}
        return cls(names, methods, means, network_w)


def mean_sobol(ensemble: EnsembleResult) -> SobolResult:
    """The networks' Sobol results averaged input by input (S1, ST, their half-widths, S2 and the
    convergence view), so one chart, table and file set shows the ensemble; notes say so."""
    if ensemble.method != "sobol" or not ensemble.sobol:
        raise UserError("only a Sobol ensemble has a mean Sobol result")
    runs = ensemble.sobol
    if len(runs) == 1:
        return runs[0]
    mean = SobolResult.from_dict(runs[0].to_dict())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the lower triangle of S2 is NaN everywhere
        for key in ("S1", "S1_conf", "ST", "ST_conf", "S2", "S2_conf"):
            if getattr(mean, key) is not None:
                setattr(mean, key, np.mean([getattr(r, key) for r in runs], axis=0))
        sizes = [step["n"] for step in mean.convergence]
        if all([step["n"] for step in r.convergence] == sizes for r in runs):
            mean.convergence = [{"n": n, **{k: np.mean([r.convergence[i][k] for r in runs], axis=0).tolist() for k in ("S1", "ST", "S1_conf", "ST_conf")}} for i, n in enumerate(sizes)]
    mean.n_evaluations = sum(r.n_evaluations for r in runs)
    mean.evaluation_s = sum(r.evaluation_s for r in runs)
    mean.analysis_s = sum(r.analysis_s for r in runs)
    mean.notes.append(f"mean of {len(runs)} networks (seeds {', '.join(str(s) for s in ensemble.seeds)}); Kendall's W of their rankings {ensemble.kendall_w:.2f}")
    return mean
