"""Sensiscope's compute engine: models, data, explanation methods, metrics, tabular sensitivity.

Free of Qt by design. ``import engine`` is cheap: it loads neither torch nor Qt. The names below
are attributes resolved on first use (PEP 562), so ``engine.explain`` and ``engine.load_model``
work as before while a torch-free caller (an error type, a vocabulary) never pays for torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> module that defines it
_EXPORTS = {
    "CancelToken": "engine.core.progress",
    "Cancelled": "engine.core.errors",
    "UserError": "engine.core.errors",
    "Explanation": "engine.core.explanation",
    "app_version": "engine.core.versions",
    "versions": "engine.core.versions",
    "InputItem": "engine.io.images",
    "load_input": "engine.io.images",
    "read_image": "engine.io.images",
    "scan_inputs": "engine.io.images",
    "Preprocess": "engine.io.preprocess",
    "load_table": "engine.io.tables",
    "describe_device": "engine.runtime.device",
    "list_devices": "engine.runtime.device",
    "select_device": "engine.runtime.device",
    "LoadedModel": "engine.models.loading",
    "classification_models": "engine.models.loading",
    "find_cached_weights": "engine.models.weights",
    "load_model": "engine.models.loading",
    "read_state_dict": "engine.models.weights",
    "summarize": "engine.models.summary",
    "MethodSpec": "engine.methods._registry",
    "available_methods": "engine.methods._registry",
    "get_method": "engine.methods._registry",
    "explain": "engine.methods.runner",
    "pairwise_agreement": "engine.metrics.agreement",
    "sobol_indices": "engine.stats.sobol",
    "SobolResult": "engine.stats.sobol",
}

__all__ = [
    "CancelToken",
    "Cancelled",
    "Explanation",
    "InputItem",
    "LoadedModel",
    "MethodSpec",
    "Preprocess",
    "SobolResult",
    "UserError",
    "app_version",
    "available_methods",
    "classification_models",
    "describe_device",
    "explain",
    "find_cached_weights",
    "get_method",
    "list_devices",
    "load_input",
    "load_model",
    "load_table",
    "pairwise_agreement",
    "read_image",
    "read_state_dict",
    "scan_inputs",
    "select_device",
    "sobol_indices",
    "summarize",
    "versions",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute '{name}'")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # static analysers and IDEs see the real names
    from engine.core.errors import Cancelled, UserError
    from engine.core.explanation import Explanation
    from engine.core.progress import CancelToken
    from engine.core.versions import app_version, versions
    from engine.io.images import InputItem, load_input, read_image, scan_inputs
    from engine.io.preprocess import Preprocess
    from engine.io.tables import load_table
    from engine.methods._registry import MethodSpec, available_methods, get_method
    from engine.methods.runner import explain
    from engine.metrics.agreement import pairwise_agreement
    from engine.models.loading import LoadedModel, classification_models, load_model
    from engine.models.summary import summarize
    from engine.models.weights import find_cached_weights, read_state_dict
    from engine.runtime.device import describe_device, list_devices, select_device
    from engine.stats.sobol import SobolResult, sobol_indices
