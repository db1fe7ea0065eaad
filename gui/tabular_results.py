"""The Table tab's results as JSON for sessions, and back: the Sobol result, the ensembles of every
method run, the input reduction, and the trained networks with their loss curves and metrics.

Results go through their own ``to_dict()`` / ``from_dict()``, made strict JSON (NaN as null) by
engine.core.jsonable; the networks travel as base64 safetensors (engine.tabular.snapshot), never
pickled. ``results_state`` runs on the main thread (plain data only); ``rebuild_results`` runs in
the session's file-lane job, checks everything it can without the table, and gives engine objects
the views draw without recomputing. The networks are rebuilt on the table once it reopens
(:func:`restore_networks`), where their features and classes are checked against it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.core.jsonable import jsonable


@dataclass
class TableResults:
    """What a session restores to the Table tab besides the reduction."""

    sobol: Any = None  # SobolResult (the ensemble mean)
    ensembles: dict = field(default_factory=dict)  # method -> EnsembleResult
    networks: dict | None = None  # engine.tabular.snapshot record, checked but not yet rebuilt


def results_state(panel) -> dict[str, Any] | None:
    """The panel's results and networks as strict-JSON data, or None when it has none."""
    networks = getattr(panel, "networks", []) or ([panel.model_result] if panel.model_result is not None else [])
    ensembles = getattr(panel, "ensembles", {})
    if panel.sobol is None and panel.reduction is None and not ensembles and not networks:
        return None
    saved = None
    if networks:
        from engine.app.tabular import networks_state

        saved = networks_state(networks, getattr(panel, "prepared", {}) or {})
    return jsonable({
        "sobol": None if panel.sobol is None else panel.sobol.to_dict(),
        "reduction": None if panel.reduction is None else panel.reduction.to_dict(),
        "ensembles": {method: e.to_dict() for method, e in ensembles.items()},
        "networks": saved,
    })


def rebuild_results(state: dict[str, Any] | None) -> tuple:
    """(TableResults | None, ReductionResult | None) from results_state's dict; KeyError, TypeError
    or ValueError when damaged."""
    if not state:
        return None, None
    results = TableResults()
    reduction = None
    if state.get("sobol"):
        from engine.app.tabular import SobolResult

        results.sobol = SobolResult.from_dict(state["sobol"])
    if state.get("ensembles") or state.get("networks") or state.get("reduction"):
        # Imported only when needed: these modules of the engine import torch.
        from engine.app.tabular import EnsembleResult, ReductionResult, check_networks_state

        ensembles = state.get("ensembles") or {}
        if not isinstance(ensembles, dict):
            raise TypeError("ensembles must be a mapping of method to result")
        results.ensembles = {str(m): EnsembleResult.from_dict(e) for m, e in ensembles.items()}
        if state.get("networks"):
            check_networks_state(state["networks"])
            results.networks = state["networks"]
        if state.get("reduction"):
            reduction = ReductionResult.from_dict(state["reduction"])
    has = results.sobol is not None or results.ensembles or results.networks
    return (results if has else None), reduction


def restore_networks(table, record: dict) -> list:
    """The saved networks on the reopened ``table``, prepared as when they were trained.
    Raises UserError when the table no longer fits them, ValueError when the record is damaged."""
    from engine.app.tabular import prepare
    from engine.app.tabular import restore_networks as rebuild

    prepared = record.get("prepared") or {}
    data = prepare(table, str(prepared.get("target", record["target"])), missing=str(prepared.get("missing", "error")), seed=int(prepared.get("seed", 0)))
    return rebuild(record, data)


def export_results(folder, sobol, reduction, ensembles: dict, networks: list) -> dict:
    """Write the Sobol, ensemble, comparison and reduction files and the trained networks (runs in a
    job, on values the caller took from the panel on the main thread)."""
    from pathlib import Path

    from engine.app.tabular import MethodComparison, write_comparison_files, write_ensemble_files, write_reduction_files, write_sobol_files

    files = {}
    for index, trained in enumerate(networks):
        weights, sidecar = trained.save(Path(folder) / ("tabular_model" if index == 0 else f"tabular_model_seed{trained.config.seed}"))
        if index == 0:
            files.update({"model_weights": str(weights), "model_json": str(sidecar)})
    if sobol is not None:
        files.update(write_sobol_files(sobol, folder))
    for ensemble in ensembles.values():
        files.update(write_ensemble_files(ensemble, folder))
    if len(ensembles) > 1:
        files.update(write_comparison_files(MethodComparison.from_ensembles(list(ensembles.values())), folder))
    if reduction is not None:
        files.update({f"reduction_{k}": v for k, v in write_reduction_files(reduction, folder).items()})
    return files


def training_job(table, target: str, missing: str, count: int, settings: dict):
    """The job that trains ``count`` networks with seeds s .. s+K-1 on one split (each network's
    epochs are reported with their EpochLosses payload, so the loss curve follows the running one)."""

    def run(progress, cancel):
        import dataclasses

        from engine.app import tabular as app_tabular
        from engine.app.tabular import TrainConfig, prepare

        config = TrainConfig(**settings)
        data = prepare(table, target, missing=missing, seed=config.seed)
        trained = []
        for k in range(count):
            def report(fraction, message, payload=None, k=k):
                progress((k + fraction) / count, f"network {k + 1}/{count}: {message}", payload)

            trained.append(app_tabular.train_tabular(data, dataclasses.replace(config, seed=config.seed + k), progress=report, cancel=cancel))
        return trained

    return run


def analysis_job(networks: list, methods: list[str], n, dist: str, second: bool, seed: int):
    """The job that runs each method on every network: a list of EnsembleResult."""

    def run(progress, cancel):
        from engine.app.tabular import ensemble_method

        results = []
        for i, method in enumerate(methods):
            def report(fraction, message, payload=None, i=i):
                progress((i + fraction) / len(methods), message)

            results.append(ensemble_method(networks, networks[0].data, method, n=n, dist=dist, seed=seed, second_order=second and method == "sobol", progress=report, cancel=cancel))
        return results

    return run


def reduction_job(data, ranking: list[str], settings: dict, seeds: int, tolerance: float, workers: int | None):
    """The job that retrains on the top-k inputs, in ``workers`` processes (None: the cores available)."""

    def run(progress, cancel):
        from engine.app.tabular import TrainConfig, default_workers, input_reduction

        return input_reduction(data, ranking, rank_by="ST", config=TrainConfig(**settings), seeds=seeds, tolerance=tolerance, progress=progress, cancel=cancel,
                               workers=workers or default_workers())

    return run


def ensemble_metrics_html(networks: list, html: str) -> str:
    """``html`` (the first network's metrics) headed by the test score of every network of the ensemble."""
    if len(networks) < 2:
        return html
    first = networks[0]
    key = "accuracy" if "accuracy" in first.metrics else "r2"
    values = ", ".join(f"{t.metrics.get(key, float('nan')):.3f}" for t in networks)
    return f"<b>Network 1 of {len(networks)}</b> (seed {first.config.seed}); test {key} of each: {values}<br><br>" + html


def _number(value, digits: int = 4) -> str:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return str(value)
    return "–" if value != value else f"{value:.{digits}f}"  # NaN: no value


def _sobol_tables(sobol, ensemble) -> list[dict]:
    """First- and total-order indices with their bootstrap half-widths, by ST; the S2 pairs if computed."""
    spread = ensemble.spread if ensemble is not None and len(ensemble.runs) > 1 else None
    index = {name: i for i, name in enumerate(sobol.names)}
    header = ["input", "S1", "S1 ±", "ST", "ST ±"] + (["ST spread across networks"] if spread is not None else [])
    rows = []
    for name in sobol.ranking("ST"):
        i = index[name]
        row = [name, *(_number(v) for v in (sobol.S1[i], sobol.S1_conf[i], sobol.ST[i], sobol.ST_conf[i]))]
        rows.append(row + ([_number(spread[i])] if spread is not None else []))
    note = (f"Sobol indices of {sobol.output_name}: N = {sobol.n}, {sobol.n_evaluations} model evaluations, "
            f"± the {sobol.conf_level:.0%} bootstrap half-width" + (f", {len(ensemble.runs)} networks (their mean)" if spread is not None else ""))
    tables = [{"title": "Sobol indices", "note": note, "header": header, "rows": rows}]
    if sobol.S2 is not None:
        pairs = [(sobol.names[a], sobol.names[b], sobol.S2[a][b], None if sobol.S2_conf is None else sobol.S2_conf[a][b])
                 for a in range(len(sobol.names)) for b in range(a + 1, len(sobol.names))]
        pairs.sort(key=lambda pair: -float(pair[2]) if pair[2] == pair[2] else 0.0)
        tables.append({"title": "Second-order indices S2", "note": "pairs by S2, largest first", "header": ["input", "input", "S2", "S2 ±"],
                       "rows": [[a, b, _number(value), _number(conf) if conf is not None else ""] for a, b, value, conf in pairs]})
    return tables


def _ensemble_table(ensemble) -> dict:
    record = ensemble.to_dict()
    rows = [[row["name"], *(_number(row[key]) for key in ("mean", "spread", "conf", "min", "max")), ", ".join(str(r) for r in row["ranks"])]
            for row in ensemble.summary()]
    return {"title": f"{record['title']}: {record['measure']} over {len(ensemble.runs)} network(s)",
            "note": f"inputs by the mean across networks, most influential first; Kendall's W of the networks' rankings {_number(ensemble.kendall_w, 2)}",
            "header": ["input", "mean", "spread", "±", "min", "max", "rank in each network"], "rows": rows}


def _reduction_table(reduction) -> dict:
    metrics = list(reduction.rows[0].metrics) if reduction.rows else []
    rows = []
    for row in reduction.rows:
        cells = [str(row.k), row.selection] + [f"{_number(row.metrics[m][0], 3)} ± {_number(row.metrics[m][1], 3)}" for m in metrics]
        rows.append(cells + [", ".join(row.features[0]) if row.features else ""])
    note = (f"networks retrained on the top k inputs by {reduction.rank_by} (and on k random ones); {reduction.metric} with all inputs "
            f"{_number(reduction.full_score, 3)}; recommended k = {reduction.recommended_k} ({', '.join(reduction.ranking[:reduction.recommended_k])}): "
            f"the smallest k whose mean score is within {reduction.tolerance:g} of that")
    return {"title": "Input reduction", "note": note, "header": ["k", "inputs", *metrics, "inputs kept (first seed)"], "rows": rows}


def report_tables(panel) -> list[dict]:
    """The Table tab's results for the HTML report (gui/report.py): dicts of title, note, header and
    rows (text), for the Sobol indices (and S2), every method's ensemble table and the input reduction."""
    ensembles = dict(getattr(panel, "ensembles", {}) or {})
    tables = []
    if panel.sobol is not None:
        tables += _sobol_tables(panel.sobol, ensembles.get("sobol"))
    tables += [_ensemble_table(ensemble) for method, ensemble in ensembles.items() if method != "sobol" or panel.sobol is None]
    if panel.reduction is not None:
        tables.append(_reduction_table(panel.reduction))
    return tables
