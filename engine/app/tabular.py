"""The tabular workflow for the front-ends: tables, networks, Sobol and the other sensitivity
methods over ensembles, input reduction, reports."""

from __future__ import annotations

from engine.app._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "ranking_names": "engine.stats.ranking",
    "classification_metrics": "engine.stats.scores",
    "regression_metrics": "engine.stats.scores",
    "METHOD_TITLES": "engine.stats.screening",
    "SobolResult": "engine.stats.sobol",
    "power_of_two": "engine.stats.sobol",
    "sobol_indices": "engine.stats.sobol",
    "TrainConfig": "engine.tabular",
    "TrainedModel": "engine.tabular",
    "load_tabular_model": "engine.tabular",
    "prepare": "engine.tabular",
    "train_tabular": "engine.tabular",
    "EnsembleResult": "engine.tabular.ensemble",
    "MethodComparison": "engine.tabular.ensemble",
    "ensemble_method": "engine.tabular.ensemble",
    "mean_sobol": "engine.tabular.ensemble",
    "train_ensemble": "engine.tabular.ensemble",
    "check_model_output": "engine.tabular.network",
    "default_workers": "engine.tabular.parallel",
    "pyplot": "engine.tabular.report:_pyplot",
    "save_figure": "engine.tabular.report",
    "write_comparison_files": "engine.tabular.report",
    "write_ensemble_files": "engine.tabular.report",
    "write_reduction_files": "engine.tabular.report",
    "write_sobol_files": "engine.tabular.report",
    "ReductionResult": "engine.tabular.sensitivity",
    "input_reduction": "engine.tabular.sensitivity",
    "check_networks_state": "engine.tabular.snapshot",
    "networks_state": "engine.tabular.snapshot",
    "restore_networks": "engine.tabular.snapshot",
    "predict": "engine.tabular.train",
})
