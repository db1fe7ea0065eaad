"""Explanation for the front-ends: the methods and their parameters, one call to explain, the
result files, agreement between maps."""

from __future__ import annotations

from engine.app._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "MethodSpec": "engine.methods._registry",
    "available_methods": "engine.methods._registry",
    "get_method": "engine.methods._registry",
    "explain": "engine.methods.runner",
    "explain_many": "engine.methods.runner",
    "check_result_files": "engine.io.writers",
    "write_comparison": "engine.io.writers",
    "write_figure": "engine.io.writers",
    "write_optimised_images": "engine.io.writers",
    "write_result": "engine.io.writers",
    "pairwise_agreement": "engine.metrics.agreement",
})
