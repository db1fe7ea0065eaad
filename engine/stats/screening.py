"""Sensitivity measures besides Sobol's, on a function of the unit cube or on given data (torch-free).

Every function returns a :class:`MethodResult`: one array per measure and input, the measure that
ranks the inputs, and its confidence half-width where the method has one.

- Morris elementary effects (Morris 1991, Technometrics 33: 161-174; mu* of Campolongo, Cariboni
  and Saltelli 2007, Environ. Model. Softw. 22: 1509-1518): SALib's sampler and analysis.
- FAST (Cukier et al. 1973; Saltelli, Tarantola and Chan 1999 for the total effect) and RBD-FAST
  (Tarantola, Gatelli and Mara 2006; Plischke 2010 for the estimator): SALib.
- The moment-independent delta (Borgonovo 2007, Reliab. Eng. Syst. Saf. 92: 771-784), estimated
  from given data as in Plischke, Borgonovo and Smith 2013 (Eur. J. Oper. Res. 226: 536-550): the
  rows are cut into equal-count classes of each input and the L1 distance between the output's
  density in each class and overall is averaged. Written here; SALib's version runs minutes on a
  few hundred rows.
- PAWN (Pianosi and Wagener 2015, 2018): SALib's given-data analysis (the median of the
  Kolmogorov-Smirnov distances over the conditioning slices ranks the inputs).
- DGSM (Sobol and Kucherenko 2009, Math. Comput. Simul. 79: 3009-3017): nu_i = E[(df/dx_i)^2],
  and the bound ST_i <= C_i nu_i / V with C_i = (b_i - a_i)^2 / pi^2 for a uniform input on
  [a_i, b_i] (Lamboni et al. 2013 give C_i = sigma_i^2 for a normal one). The gradients come from
  the caller (autograd on the network, engine.tabular.methods).
"""

from __future__ import annotations

import contextlib
import io
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import numpy as np

from engine.core.errors import UserError
from engine.stats.ranking import ranking_names

# method -> (the measure that ranks the inputs, its confidence half-width key or None)
MEASURES = {
    "sobol": ("ST", "ST_conf"),
    "morris": ("mu_star", "mu_star_conf"),
    "fast": ("ST", "ST_conf"),
    "rbd_fast": ("S1", "S1_conf"),
    "delta": ("delta", "delta_conf"),
    "pawn": ("median", None),
    "dgsm": ("bound", None),
}
METHOD_TITLES = {
    "sobol": "Sobol (Saltelli/Jansen)",
    "morris": "Morris elementary effects",
    "fast": "FAST",
    "rbd_fast": "RBD-FAST",
    "delta": "delta (given data)",
    "pawn": "PAWN (given data)",
    "dgsm": "DGSM (autograd)",
}


@dataclass
class MethodResult:
    """One method's indices per input: ``values[key]`` is an array over ``names``."""

    method: str
    names: list[str]
    values: dict[str, np.ndarray]
    n_evaluations: int = 0
    elapsed_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    output_name: str = "the output"
    distribution: str = ""
    seed: int = 0

    @property
    def measure(self) -> str:
        return MEASURES[self.method][0]

    @property
    def score(self) -> np.ndarray:
        return self.values[self.measure]

    @property
    def conf(self) -> np.ndarray | None:
        key = MEASURES[self.method][1]
        return None if key is None or key not in self.values else self.values[key]

    def ranking(self) -> list[str]:
        return ranking_names(self.names, self.score)

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "names": list(self.names),
            "measure": self.measure,
            "values": {k: np.asarray(v, dtype=np.float64).tolist() for k, v in self.values.items()},
            "n_evaluations": int(self.n_evaluations),
            "elapsed_s": float(self.elapsed_s),
            "notes": list(self.notes),
            "output_name": self.output_name,
            "distribution": self.distribution,
            "seed": int(self.seed),
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> MethodResult:
        """The result :meth:`to_dict` described (null reads as NaN); KeyError/TypeError/ValueError when damaged."""
        method = str(record["method"])
        if method not in MEASURES:
            raise ValueError(f"unknown method '{method}'")
        names = [str(n) for n in record["names"]]
        values = {str(k): np.array(v, dtype=np.float64) for k, v in record["values"].items()}
        if any(v.shape != (len(names),) for v in values.values()) or MEASURES[method][0] not in values:
            raise ValueError("the method's values do not match its inputs")
        return cls(method, names, values, int(record.get("n_evaluations", 0)), float(record.get("elapsed_s", 0.0)),
                   [str(n) for n in record.get("notes", [])], str(record.get("output_name", "the output")), str(record.get("distribution", "")), int(record.get("seed", 0)))


def from_sobol(sobol) -> MethodResult:
    """A SobolResult as a MethodResult (S1, ST and their half-widths)."""
    values = {k: np.asarray(getattr(sobol, k), dtype=np.float64) for k in ("S1", "S1_conf", "ST", "ST_conf")}
    return MethodResult("sobol", list(sobol.names), values, sobol.n_evaluations, sobol.total_s, list(sobol.notes), sobol.output_name, sobol.distribution, sobol.seed)


def unit_problem(names: list[str]) -> dict:
    return {"num_vars": len(names), "names": list(names), "bounds": [[0.0, 1.0]] * len(names)}


def _quiet(fn: Callable, *args, **kwargs):
    """SALib prints notices to stdout; a --json run keeps stdout for its JSON."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


def _outputs(fn: Callable[[np.ndarray], np.ndarray], samples: np.ndarray) -> np.ndarray:
    y = np.asarray(fn(samples), dtype=np.float64).reshape(-1)
    if y.shape[0] != len(samples) or not np.isfinite(y).all():
        raise UserError("the model returned NaN, infinite or too few outputs")
    if np.ptp(y) == 0:
        raise UserError("the output is constant over the inputs, so no sensitivity measure is defined")
    return y


def morris(fn: Callable[[np.ndarray], np.ndarray], names: list[str], trajectories: int = 64, levels: int = 4, seed: int = 0) -> MethodResult:
    """Morris screening over the unit cube: mu* (mean |elementary effect|), mu and sigma per input."""
    from SALib.analyze import morris as analyze
    from SALib.sample import morris as sample

    start = time.perf_counter()
    problem = unit_problem(names)
    x = sample.sample(problem, max(2, int(trajectories)), num_levels=levels, seed=seed)
    y = _outputs(fn, x)
    out = _quiet(analyze.analyze, problem, x, y, num_levels=levels, seed=seed)
    values = {k: np.asarray(out[k], dtype=np.float64) for k in ("mu_star", "mu_star_conf", "mu", "sigma")}
    return MethodResult("morris", names, values, len(x), time.perf_counter() - start, [f"{int(trajectories)} trajectories, {levels} levels; effects per unit of each input's quantile"], seed=seed)


def fast(fn: Callable[[np.ndarray], np.ndarray], names: list[str], n: int = 1024, seed: int = 0) -> MethodResult:
    """Extended FAST: first-order and total indices; N samples per input (at least 65 for M = 4)."""
    from SALib.analyze import fast as analyze
    from SALib.sample import fast_sampler

    start = time.perf_counter()
    problem = unit_problem(names)
    n = max(65, int(n))
    x = fast_sampler.sample(problem, n, M=4, seed=seed)
    y = _outputs(fn, x)
    with warnings.catch_warnings():  # SALib warns that FAST's bootstrap intervals are indicative: said in the note
        warnings.simplefilter("ignore", UserWarning)
        out = _quiet(analyze.analyze, problem, y, M=4, seed=seed)
    values = {k: np.asarray(out[k], dtype=np.float64) for k in ("S1", "S1_conf", "ST", "ST_conf")}
    note = f"{n} points per input; FAST's bootstrap intervals are indicative only (SALib issue 649)"
    return MethodResult("fast", names, values, len(x), time.perf_counter() - start, [note], seed=seed)


def rbd_fast(fn: Callable[[np.ndarray], np.ndarray], names: list[str], n: int = 1024, seed: int = 0) -> MethodResult:
    """RBD-FAST first-order indices from a Latin hypercube of N points."""
    from SALib.analyze import rbd_fast as analyze
    from SALib.sample import latin

    start = time.perf_counter()
    problem = unit_problem(names)
    x = latin.sample(problem, max(64, int(n)), seed=seed)
    y = _outputs(fn, x)
    out = _quiet(analyze.analyze, problem, x, y, seed=seed)
    values = {k: np.asarray(out[k], dtype=np.float64) for k in ("S1", "S1_conf")}
    return MethodResult("rbd_fast", names, values, len(x), time.perf_counter() - start, seed=seed)


def _block_densities(y: np.ndarray, starts: np.ndarray, grid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian kernel densities on ``grid`` of the contiguous blocks of ``y`` that begin at
    ``starts`` (rows: blocks), each with Silverman's bandwidth 0.9 sd n^(-1/5), and the block sizes."""
    counts = np.diff(np.append(starts, len(y))).astype(np.float64)
    mean = np.add.reduceat(y, starts) / counts
    square = np.add.reduceat(y * y, starts) / counts
    sd = np.sqrt(np.maximum(square - mean * mean, 0.0) * counts / np.maximum(counts - 1, 1))
    h = np.maximum(0.9 * sd * counts ** (-0.2), (grid[-1] - grid[0]) / len(grid))
    h_row = np.repeat(h, counts.astype(np.int64))
    z = (grid[None, :] - y[:, None]) / h_row[:, None]
    kernel = np.exp(-0.5 * z * z) / (h_row[:, None] * math.sqrt(2 * math.pi))
    return np.add.reduceat(kernel, starts, axis=0) / counts[:, None], counts


def _delta_once(x: np.ndarray, y: np.ndarray, classes: int, grid: np.ndarray) -> np.ndarray:
    whole, _ = _block_densities(y, np.array([0]), grid)
    step = grid[1] - grid[0]
    starts = np.unique(np.arange(classes) * len(y) // classes)
    out = np.empty(x.shape[1])
    for i in range(x.shape[1]):
        density, counts = _block_densities(y[np.argsort(x[:, i], kind="stable")], starts, grid)
        distance = np.abs(density - whole).sum(axis=1) * step
        out[i] = 0.5 * float((counts / len(y) * distance).sum())
    return out


def delta_given(x: np.ndarray, y: np.ndarray, names: list[str], resamples: int = 30, conf_level: float = 0.95, seed: int = 0) -> MethodResult:
    """Borgonovo's delta of each column of ``x`` on the observed rows (given data, any dependence).

    Classes: Plischke et al.'s rule M = min(48, ceil(N^(2 / (7 + tanh((1500 - N) / 500))))). The
    half-width is the normal bootstrap interval over ``resamples`` row resamples.
    """
    start = time.perf_counter()
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(y) < 20 or np.ptp(y) == 0:
        raise UserError("delta needs at least 20 rows and an output that varies")
    n = len(y)
    classes = int(min(48, math.ceil(n ** (2 / (7 + math.tanh((1500 - n) / 500))))))
    pad = 0.1 * np.ptp(y)
    grid = np.linspace(y.min() - pad, y.max() + pad, 128)
    delta = _delta_once(x, y, classes, grid)
    rng = np.random.default_rng(seed)
    boot = np.array([_delta_once(x[rows], y[rows], classes, grid) for rows in (rng.integers(0, n, n) for _ in range(resamples))])
    conf = NormalDist().inv_cdf(0.5 + conf_level / 2) * boot.std(axis=0, ddof=1) if resamples > 1 else np.full(len(names), np.nan)
    note = f"{n} observed rows, {classes} classes per input, {resamples} bootstrap resamples"
    return MethodResult("delta", names, {"delta": delta, "delta_conf": conf}, n, time.perf_counter() - start, [note], seed=seed)


def pawn_given(x: np.ndarray, y: np.ndarray, names: list[str], slices: int = 10, seed: int = 0) -> MethodResult:
    """PAWN on the observed rows (SALib): Kolmogorov-Smirnov distances between the output's
    distribution in each of ``slices`` conditioning slices of an input and overall."""
    from SALib.analyze import pawn

    start = time.perf_counter()
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(y) < 2 * slices or np.ptp(y) == 0:
        raise UserError(f"PAWN needs at least {2 * slices} rows and an output that varies")
    problem = {"num_vars": len(names), "names": list(names), "bounds": [[float(c.min()), float(c.max()) + (c.max() == c.min())] for c in x.T]}
    out = _quiet(pawn.analyze, problem, x, y, S=slices, seed=seed)
    values = {k: np.asarray(out[k], dtype=np.float64) for k in ("median", "mean", "minimum", "maximum", "CV")}
    return MethodResult("pawn", names, values, len(y), time.perf_counter() - start, [f"{len(y)} observed rows, {slices} slices"], seed=seed)


def dgsm_estimate(gradients: np.ndarray, outputs: np.ndarray, constants: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """DGSM from sampled gradients: nu_i = mean of (df/dx_i)^2 over the rows, its standard error,
    and the normalised bound C_i nu_i / V (an upper bound on ST_i; Sobol and Kucherenko 2009)."""
    g = np.asarray(gradients, dtype=np.float64)
    if g.ndim != 2 or g.shape[1] != len(names) or len(outputs) != len(g):
        raise UserError("DGSM needs one gradient row per output")
    variance = float(np.var(outputs, ddof=1))
    if not variance > 0:
        raise UserError("the output is constant over the inputs, so DGSM's bound is undefined")
    squared = g * g
    nu = squared.mean(axis=0)
    nu_se = squared.std(axis=0, ddof=1) / math.sqrt(len(g))
    return {"nu": nu, "nu_se": nu_se, "bound": np.asarray(constants, dtype=np.float64) * nu / variance}

