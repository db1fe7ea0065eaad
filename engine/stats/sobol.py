"""Sobol global sensitivity analysis with SALib: Saltelli sampling, batched evaluation, bootstrap
confidence intervals and a convergence view. SALib is the reference; no estimator of our own.

:func:`sobol_indices` runs the whole analysis of a numpy function. Callers that evaluate the rows
themselves (the image method evaluates them on a device, in batches) take its two halves:
:func:`sobol_design` for the rows and :func:`sobol_analysis` for the indices of their outputs.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import psutil

from engine.core.errors import UserError
from engine.core.progress import CancelToken, ProgressFn, resolve

MIN_CONVERGENCE_N = 2**8
_INDEX_ARRAYS = ("S1", "S1_conf", "ST", "ST_conf", "S2", "S2_conf")
_CONVERGENCE_KEYS = ("S1", "ST", "S1_conf", "ST_conf")


def _as_list(array: np.ndarray | None) -> list | None:
    # NaN stays NaN here; engine.core.jsonable turns it into null when the dict becomes JSON.
    return None if array is None else np.asarray(array, dtype=np.float64).tolist()


def _as_array(values: list | None) -> np.ndarray | None:
    # numpy reads None as NaN in a float array, so a JSON null comes back as the NaN it was.
    return None if values is None else np.array(values, dtype=np.float64)


def _as_floats(values: list) -> list[float]:
    return [math.nan if v is None else float(v) for v in values]


@dataclass
class SobolResult:
    """Sobol indices with their confidence half-widths, timings, the convergence view and notes."""

    names: list[str]
    S1: np.ndarray
    S1_conf: np.ndarray
    ST: np.ndarray
    ST_conf: np.ndarray
    n: int
    n_evaluations: int
    second_order: bool
    S2: np.ndarray | None = None
    S2_conf: np.ndarray | None = None
    sampling_s: float = 0.0
    evaluation_s: float = 0.0
    analysis_s: float = 0.0
    convergence_s: float = 0.0  # the convergence view's extra analyses, not part of total_s
    seed: int = 0
    conf_level: float = 0.95
    convergence: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problem: dict = field(default_factory=dict)
    output_name: str = "the output"  # what the model output is, e.g. "P(type = Yes)"
    distribution: str = ""  # the input distribution's name, when the caller built it from data

    @property
    def total_s(self) -> float:
        return self.sampling_s + self.evaluation_s + self.analysis_s

    def ranking(self, by: str = "ST") -> list[str]:
        """Names from the most to the least influential input."""
        values = self.ST if by == "ST" else self.S1
        return [self.names[i] for i in np.argsort(-values, kind="stable")]

    def to_dict(self) -> dict[str, Any]:
        """Plain lists and numbers (NaN kept; engine.core.jsonable makes it strict JSON); :meth:`from_dict` reads it back."""
        return {
            "names": list(self.names),
            **{key: _as_list(getattr(self, key)) for key in _INDEX_ARRAYS},
            "n": int(self.n),
            "n_evaluations": int(self.n_evaluations),
            "second_order": bool(self.second_order),
            "seed": int(self.seed),
            "conf_level": float(self.conf_level),
            "timings_s": {"sampling": self.sampling_s, "evaluation": self.evaluation_s, "analysis": self.analysis_s, "total": self.total_s, "convergence": self.convergence_s},
            "convergence": [{"n": int(step["n"]), **{key: _as_list(step[key]) for key in _CONVERGENCE_KEYS}} for step in self.convergence],
            "notes": list(self.notes),
            "problem": copy.deepcopy(self.problem),
            "output_name": self.output_name,
            "distribution": self.distribution,
        }

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> SobolResult:
        """The result :meth:`to_dict` described, also after a trip through JSON (null reads as NaN).

        Keys added since the first sessions (problem, output_name, ...) fall back to the defaults.
        Raises KeyError, TypeError or ValueError when the record is damaged.
        """
        timings = record.get("timings_s") or {}
        return cls(
            names=[str(name) for name in record["names"]],
            S1=_as_array(record["S1"]),
            S1_conf=_as_array(record["S1_conf"]),
            ST=_as_array(record["ST"]),
            ST_conf=_as_array(record["ST_conf"]),
            S2=_as_array(record.get("S2")),
            S2_conf=_as_array(record.get("S2_conf")),
            n=int(record["n"]),
            n_evaluations=int(record.get("n_evaluations", 0)),
            second_order=bool(record.get("second_order", False)),
            sampling_s=float(timings.get("sampling", 0.0)),
            evaluation_s=float(timings.get("evaluation", 0.0)),
            analysis_s=float(timings.get("analysis", 0.0)),
            convergence_s=float(timings.get("convergence", 0.0)),
            seed=int(record.get("seed", 0)),
            conf_level=float(record.get("conf_level", 0.95)),
            convergence=[{"n": int(step["n"]), **{key: _as_floats(step[key]) for key in _CONVERGENCE_KEYS}} for step in record.get("convergence") or []],
            notes=[str(note) for note in record.get("notes") or []],
            problem=copy.deepcopy(record.get("problem") or {}),
            output_name=str(record.get("output_name", "the output")),
            distribution=str(record.get("distribution", "")),
        )


def power_of_two(n: int) -> tuple[int, str | None]:
    """``n`` rounded up to a power of two (Sobol sequences are balanced only there), with a note."""
    if n < 2:
        raise UserError(f"the Sobol base sample size N must be at least 2, not {n}")
    rounded = 1 << (int(n) - 1).bit_length()
    note = None if rounded == n else f"N = {n} is not a power of two; rounded up to {rounded}"
    return rounded, note


def design_bytes(n: int, d: int, second_order: bool) -> int:
    """Memory the Saltelli design and its outputs take: N(2D+2) or N(D+2) rows of D float64 values,
    counted three times for SALib's working copies."""
    rows = n * (2 * d + 2 if second_order else d + 2)
    return 3 * rows * (d + 1) * 8


def check_design_memory(n: int, d: int, second_order: bool, available: int | None = None) -> None:
    """Refuse, before sampling, a design that cannot fit in the memory this machine has free."""
    needed = design_bytes(n, d, second_order)
    if available is None:
        try:
            available = int(psutil.virtual_memory().available)
        except (OSError, RuntimeError):  # memory figures unavailable: let the run try
            return
    if needed > available // 2:
        rows = n * (2 * d + 2 if second_order else d + 2)
        raise UserError(
            f"a Sobol design of N = {n} for {d} inputs has {rows:,} rows and needs about {needed / 2**30:.1f} GiB; "
            f"{available / 2**30:.1f} GiB is free. Use a smaller N{', no second order' if second_order else ''} or fewer inputs"
        )


def _check_problem(problem: dict) -> dict:
    try:
        names = list(problem["names"])
        bounds = [list(map(float, b)) for b in problem["bounds"]]
    except (KeyError, TypeError, ValueError):
        raise UserError("a Sobol problem needs 'names' and 'bounds' (a pair per input)") from None
    if len(names) != len(bounds) or len(names) < 2:
        raise UserError(f"a Sobol problem needs at least two inputs with one bounds entry each (got {len(names)} names, {len(bounds)} bounds)")
    checked = {"num_vars": len(names), "names": names, "bounds": bounds}
    if "dists" in problem:
        checked["dists"] = list(problem["dists"])
    for name, b, dist in zip(names, bounds, checked.get("dists", ["unif"] * len(names)), strict=True):
        if dist == "unif" and not b[0] < b[1]:
            raise UserError(f"input '{name}' has bounds {b}: the lower bound must be below the upper")
    return checked


def _evaluate(fn: Callable[[np.ndarray], np.ndarray], samples: np.ndarray, batch_rows: int, progress: ProgressFn, cancel: CancelToken) -> np.ndarray:
    """``fn`` over every sample row, ``batch_rows`` at a time; refuses outputs Sobol indices cannot use."""
    outputs = np.empty(len(samples), dtype=np.float64)
    for low in range(0, len(samples), batch_rows):
        cancel.check()
        high = min(len(samples), low + batch_rows)
        values = np.asarray(fn(samples[low:high]), dtype=np.float64).reshape(-1)
        if values.shape[0] != high - low:
            raise UserError(f"the model returned {values.shape[0]} outputs for {high - low} rows")
        outputs[low:high] = values
        progress(0.05 + 0.6 * high / len(samples), f"evaluating {high}/{len(samples)}")
    if not np.isfinite(outputs).all():
        raise UserError("the model returned NaN or infinite outputs on some samples")
    if np.ptp(outputs) == 0:
        raise UserError("the output is constant over the whole input space, so every Sobol index is undefined")
    return outputs


def convergence_sizes(n: int, smallest: int = MIN_CONVERGENCE_N) -> list[int]:
    """The powers of two from ``smallest`` up to, not including, ``n``: the leading-row sizes of the
    convergence view (``n`` itself is always its last step)."""
    smallest = max(2, int(smallest))
    return [2**k for k in range(max(1, math.ceil(math.log2(smallest))), int(math.log2(n))) if 2**k >= smallest]


def _convergence(sobol: SobolResult, outputs: np.ndarray, analyse: Callable[[np.ndarray], dict], sizes: list[int], progress: ProgressFn, cancel: CancelToken) -> None:
    """Fill ``sobol.convergence`` with the indices at each of ``sizes`` and then at the result's own N."""
    start = time.perf_counter()
    # The first N' base points of a scrambled Sobol sequence are themselves balanced when N' is a
    # power of two, so the leading rows of the Saltelli design are a valid smaller design.
    rows_per_point = len(outputs) // sobol.n
    for index, size in enumerate(sizes):
        cancel.check()
        part = analyse(outputs[: size * rows_per_point])
        sobol.convergence.append({"n": size, **{key: part[key].tolist() for key in _CONVERGENCE_KEYS}})
        progress(0.7 + 0.3 * (index + 1) / max(1, len(sizes)), f"convergence N = {size}")
    sobol.convergence.append({"n": sobol.n, **{key: getattr(sobol, key).tolist() for key in _CONVERGENCE_KEYS}})
    sobol.convergence_s = time.perf_counter() - start


@dataclass(frozen=True)
class SobolDesign:
    """A Saltelli design over a checked problem: N base points (a power of two) and their rows."""

    problem: dict
    samples: np.ndarray  # N(D+2) rows, or N(2D+2) with second order, of D values
    n: int
    second_order: bool
    seed: int
    notes: tuple[str, ...] = ()
    sampling_s: float = 0.0

    @property
    def rows_per_point(self) -> int:
        return len(self.samples) // self.n


def sobol_design(problem: dict, n: int = 1024, second_order: bool = True, seed: int = 0) -> SobolDesign:
    """The scrambled Sobol (Saltelli) design that :func:`sobol_analysis` reads; N is rounded up to
    a power of two and a design that cannot fit in free memory is refused before sampling."""
    from SALib.sample import sobol as sobol_sample

    problem = _check_problem(problem)
    n, note = power_of_two(n)
    check_design_memory(n, len(problem["names"]), second_order)
    start = time.perf_counter()
    samples = sobol_sample.sample(problem, n, calc_second_order=second_order, scramble=True, seed=seed)
    return SobolDesign(problem, samples, n, second_order, seed, (note,) if note else (), time.perf_counter() - start)


def sobol_analysis(
    design: SobolDesign,
    outputs: np.ndarray,
    *,
    conf_level: float = 0.95,
    num_resamples: int = 100,
    convergence: bool | list[int] = True,
    evaluation_s: float = 0.0,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> SobolResult:
    """SALib's indices (Saltelli for S1, Jansen for ST) of the outputs of every row of ``design``.

    ``convergence``: True for the view at N = 256, 512, ... below N; a list of smaller powers of
    two for those leading-row sizes; False for none. No output is evaluated again.
    """
    from SALib.analyze import sobol as sobol_analyze

    progress, cancel = resolve(progress, cancel)
    if not 0 < conf_level < 1:
        raise UserError(f"the confidence level must be between 0 and 1, not {conf_level}")
    problem, second_order = design.problem, design.second_order

    def analyse(values: np.ndarray) -> dict:
        return sobol_analyze.analyze(problem, values, calc_second_order=second_order, num_resamples=num_resamples, conf_level=conf_level, seed=design.seed)

    start = time.perf_counter()
    cancel.check()
    result = analyse(np.asarray(outputs, dtype=np.float64))
    sobol = SobolResult(
        names=problem["names"],
        S1=np.asarray(result["S1"]),
        S1_conf=np.asarray(result["S1_conf"]),
        ST=np.asarray(result["ST"]),
        ST_conf=np.asarray(result["ST_conf"]),
        S2=np.asarray(result["S2"]) if second_order else None,
        S2_conf=np.asarray(result["S2_conf"]) if second_order else None,
        n=design.n,
        n_evaluations=len(design.samples),
        second_order=second_order,
        sampling_s=design.sampling_s,
        evaluation_s=evaluation_s,
        analysis_s=time.perf_counter() - start,
        seed=design.seed,
        conf_level=conf_level,
        notes=list(design.notes),
        problem=problem,
    )
    if convergence is not False:
        sizes = convergence_sizes(design.n) if convergence is True else [int(s) for s in convergence if 2 <= int(s) < design.n]
        _convergence(sobol, np.asarray(outputs, dtype=np.float64), analyse, sizes, progress, cancel)
    return sobol


def sobol_indices(
    fn: Callable[[np.ndarray], np.ndarray],
    problem: dict,
    n: int = 1024,
    second_order: bool = True,
    seed: int = 0,
    conf_level: float = 0.95,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    *,
    num_resamples: int = 100,
    convergence: bool = True,
    batch_rows: int = 65536,
) -> SobolResult:
    """First, total and (optionally) second-order Sobol indices of ``fn`` over ``problem``.

    ``fn`` maps an (M, D) array to M outputs and is called on batches of rows; ``problem`` is a
    SALib problem dict (names, bounds, optional dists). N is rounded up to a power of two.
    """
    progress, cancel = resolve(progress, cancel)
    problem = _check_problem(problem)
    if not 0 < conf_level < 1:
        raise UserError(f"the confidence level must be between 0 and 1, not {conf_level}")
    progress(0.0, "sampling")
    design = sobol_design(problem, n, second_order=second_order, seed=seed)
    cancel.check()

    start = time.perf_counter()
    outputs = _evaluate(fn, design.samples, batch_rows, progress, cancel)
    evaluation_s = time.perf_counter() - start
    sobol = sobol_analysis(design, outputs, conf_level=conf_level, num_resamples=num_resamples, convergence=convergence, evaluation_s=evaluation_s, progress=progress, cancel=cancel)
    progress(1.0, "done")
    return sobol
