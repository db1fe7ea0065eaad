"""The Table tab's last Sobol and input-reduction results as JSON for sessions, and back.

Both go through the results' own ``to_dict()`` / ``from_dict()``, made strict JSON (NaN as null) by
engine.core.jsonable. ``results_state`` runs on the main thread (plain data only);
``rebuild_results`` runs in the session's file-lane job and gives engine objects the Sobol and
reduction views draw without recomputing.
"""

from __future__ import annotations

from typing import Any

from engine.core.jsonable import jsonable


def results_state(panel) -> dict[str, Any] | None:
    """The panel's last Sobol result and reduction as strict-JSON data, or None when it has neither."""
    if panel.sobol is None and panel.reduction is None:
        return None
    sobol = None if panel.sobol is None else panel.sobol.to_dict()
    reduction = None if panel.reduction is None else panel.reduction.to_dict()
    return jsonable({"sobol": sobol, "reduction": reduction})


def rebuild_results(state: dict[str, Any] | None) -> tuple:
    """(SobolResult | None, ReductionResult | None) from results_state's dict; KeyError, TypeError or ValueError when damaged."""
    if not state:
        return None, None
    sobol = reduction = None
    if state.get("sobol"):
        from engine.stats.sobol import SobolResult

        sobol = SobolResult.from_dict(state["sobol"])
    if state.get("reduction"):
        # Imported only when needed: this module of the engine imports torch.
        from engine.tabular.sensitivity import ReductionResult

        reduction = ReductionResult.from_dict(state["reduction"])
    return sobol, reduction
