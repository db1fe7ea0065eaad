"""Data-set work for the front-ends: evaluation studies, the result store, batch runs locally or on Ray."""

from __future__ import annotations

from engine.app._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "EVALUATE_DEFAULTS": "engine.metrics.study",
    "evaluate_dataset": "engine.runs.evaluate",
    "MemoryStore": "engine.runs.store",
    "sanity_checks": "engine.metrics.study",
    "report_from_store": "engine.runs.report",
    "RayOptions": "engine.runs.run",
    "image_name": "engine.runs.run",
    "run_batch": "engine.runs.run",
    "MANIFEST": "engine.runs.store",
    "METRIC_COLUMNS": "engine.runs.store",
    "Store": "engine.runs.store",
    "Job": "engine.runs.worker",
    "MetricSettings": "engine.runs.worker",
})
