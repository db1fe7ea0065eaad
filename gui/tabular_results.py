"""The Table tab's last Sobol and input-reduction results as JSON for sessions, and back.

``results_state`` runs on the main thread (plain data only); ``rebuild_results`` runs in the session's
file-lane job and gives engine objects the Sobol and reduction views draw without recomputing.
"""

from __future__ import annotations

import numpy as np


def _floats(values) -> list | None:
    if values is None:
        return None
    array = np.asarray(values, dtype=float)
    return [_floats(row) for row in array] if array.ndim > 1 else [float(v) if np.isfinite(v) else None for v in array]


def _array(values) -> np.ndarray | None:
    if values is None:
        return None
    return np.array([[np.nan if v is None else v for v in row] for row in values] if values and isinstance(values[0], list) else [np.nan if v is None else v for v in values], dtype=float)


def sobol_record(result) -> dict:
    record = result.to_dict()
    for key in ("S1", "S1_conf", "ST", "ST_conf", "S2", "S2_conf"):
        record[key] = _floats(getattr(result, key))
    record["output_name"] = getattr(result, "output_name", "the output")
    record["distribution"] = getattr(result, "distribution", "")
    return record


def results_state(panel) -> dict | None:
    """The panel's last Sobol result and reduction (its to_dict()), or None when it has neither."""
    if panel.sobol is None and panel.reduction is None:
        return None
    return {"sobol": sobol_record(panel.sobol) if panel.sobol is not None else None, "reduction": panel.reduction.to_dict() if panel.reduction is not None else None}


def rebuild_sobol(record: dict):
    from engine.stats.sobol import SobolResult

    timings = record.get("timings_s") or {}
    result = SobolResult(
        names=[str(n) for n in record["names"]],
        S1=_array(record["S1"]),
        S1_conf=_array(record["S1_conf"]),
        ST=_array(record["ST"]),
        ST_conf=_array(record["ST_conf"]),
        n=int(record["n"]),
        n_evaluations=int(record.get("n_evaluations", 0)),
        second_order=bool(record.get("second_order", False)),
        S2=_array(record.get("S2")),
        S2_conf=_array(record.get("S2_conf")),
        sampling_s=float(timings.get("sampling", 0.0)),
        evaluation_s=float(timings.get("evaluation", 0.0)),
        analysis_s=float(timings.get("analysis", 0.0)),
        convergence_s=float(timings.get("convergence", 0.0)),
        seed=int(record.get("seed", 0)),
        conf_level=float(record.get("conf_level", 0.95)),
        convergence=list(record.get("convergence") or []),
        notes=[str(n) for n in record.get("notes") or []],
    )
    result.output_name = str(record.get("output_name", "the output"))
    result.distribution = str(record.get("distribution", ""))
    return result


def rebuild_reduction(record: dict):
    from engine.tabular.sensitivity import ReductionResult, ReductionRow

    rows = []
    for row in record.get("rows", []):
        names = [key[: -len("_mean")] for key in row if key.endswith("_mean")]
        metrics = {name: (float(row[f"{name}_mean"]), float(row.get(f"{name}_std", 0.0))) for name in names}
        rows.append(ReductionRow(int(row["k"]), str(row["selection"]), [list(map(str, f)) for f in row.get("features", [])], metrics))
    return ReductionResult(
        ranking=[str(n) for n in record["ranking"]],
        rank_by=str(record.get("rank_by", "ST")),
        metric=str(record["metric"]),
        full_score=float(record["full_score"]),
        tolerance=float(record["tolerance"]),
        recommended_k=int(record["recommended_k"]),
        rows=rows,
        elapsed_s=float(record.get("elapsed_s", 0.0)),
    )


def rebuild_results(state: dict | None) -> tuple:
    """(SobolResult | None, ReductionResult | None) from results_state's dict; KeyError, TypeError or ValueError when damaged."""
    if not state:
        return None, None
    sobol, reduction = state.get("sobol"), state.get("reduction")
    return (rebuild_sobol(sobol) if sobol else None, rebuild_reduction(reduction) if reduction else None)
