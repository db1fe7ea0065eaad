"""Sobol indices with N chosen automatically: N doubles until the widest total-index interval is
narrow enough, or until the evaluation budget would be passed (torch-free).

The scrambled Sobol sequence with one seed makes the Saltelli design of N the leading rows of the
design of 2N (checked at every step, not assumed), so each doubling evaluates only the new rows:
the model is evaluated N_final (D + 2) times in all, never more than ``budget``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from engine.core.errors import UserError
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.stats.sobol import SobolResult, _check_problem, _convergence, _evaluate, convergence_sizes, power_of_two, sobol_analysis, sobol_design

AUTO_START = 256
AUTO_TOLERANCE = 0.02
AUTO_BUDGET = 2_000_000


def _analyse(design, values: np.ndarray, conf_level: float) -> dict:
    from SALib.analyze import sobol as sobol_analyze

    return sobol_analyze.analyze(design.problem, values, calc_second_order=design.second_order, conf_level=conf_level, seed=design.seed)


def _rows(n: int, d: int, second_order: bool) -> int:
    return n * (2 * d + 2 if second_order else d + 2)


def sobol_auto(
    fn: Callable[[np.ndarray], np.ndarray],
    problem: dict,
    *,
    tolerance: float = AUTO_TOLERANCE,
    budget: int = AUTO_BUDGET,
    start: int = AUTO_START,
    second_order: bool = False,
    seed: int = 0,
    conf_level: float = 0.95,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
    batch_rows: int = 65536,
) -> SobolResult:
    """Sobol indices of ``fn`` at the smallest N = start * 2^k whose largest ST half-width (the
    '+-' of the bootstrap interval) is below ``tolerance``, or at the largest N whose design fits in
    ``budget`` evaluations. The result's ``stop_reason`` note says which ("tolerance" or "budget")."""
    progress, cancel = resolve(progress, cancel)
    problem = _check_problem(problem)
    if not 0 < tolerance < 1:
        raise UserError(f"the tolerance on the ST interval must be between 0 and 1, not {tolerance}")
    n, _ = power_of_two(max(2, int(start)))
    d = len(problem["names"])
    if _rows(n, d, second_order) > budget:
        raise UserError(f"a budget of {budget:,} evaluations is below the first design (N = {n}: {_rows(n, d, second_order):,} evaluations)")
    outputs = np.empty(0)
    previous = np.empty((0, d))
    evaluation_s = 0.0
    while True:
        cancel.check()
        design = sobol_design(problem, n, second_order=second_order, seed=seed)
        known = len(outputs)
        if known and not np.array_equal(design.samples[:known], previous):  # never assumed
            known, outputs = 0, np.empty(0)
        clock = time.perf_counter()
        fresh = _evaluate(fn, design.samples[known:], batch_rows, lambda f, m: None, cancel) if known < len(design.samples) else np.empty(0)
        evaluation_s += time.perf_counter() - clock
        outputs = np.concatenate([outputs, fresh])
        previous = design.samples
        result = sobol_analysis(design, outputs, conf_level=conf_level, convergence=False, evaluation_s=evaluation_s, cancel=cancel)
        widest = float(np.nanmax(result.ST_conf))
        progress(min(0.99, _rows(n, d, second_order) / budget), f"N = {n}: widest ST interval +-{widest:.3f}")
        if widest < tolerance:
            reason = f"stopped at N = {n}: the widest ST interval (+-{widest:.3f}) is below the tolerance {tolerance:g}"
            stop = "tolerance"
            break
        if _rows(2 * n, d, second_order) > budget:
            reason = f"stopped at N = {n}: the widest ST interval is still +-{widest:.3f} (tolerance {tolerance:g}), and N = {2 * n} would pass the budget of {budget:,} evaluations"
            stop = "budget"
            break
        n *= 2
    # The convergence view over the leading rows (analysis only, nothing evaluated). The result
    # itself is the one the stopping rule read: SALib's bootstrap differs from call to call.
    _convergence(result, outputs, lambda values: _analyse(design, values, conf_level), convergence_sizes(n), lambda f, m: None, cancel)
    result.n_evaluations = len(outputs)
    result.notes.append(reason)
    result.stop_reason = stop  # type: ignore[attr-defined]  (also in the notes, which travel in to_dict)
    progress(1.0, "done")
    return result
