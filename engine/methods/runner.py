"""The one call that runs any registered method on a model and an input."""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.core.errors import UserError
from engine.core.explanation import Explanation
from engine.core.params import build_params
from engine.core.progress import CancelToken, ProgressFn
from engine.methods._registry import available_methods, get_method
from engine.models.loading import LoadedModel
from engine.runtime.batching import is_out_of_memory, release_memory
from engine.runtime.device import select_device


def model_device(model: nn.Module) -> torch.device:
    for tensor in model.parameters():
        return tensor.device
    for tensor in model.buffers():
        return tensor.device
    return torch.device("cpu")


def _fill_normalisation(params: Any, loaded: LoadedModel) -> Any:
    """Methods that work in display space take the mean and std of the input normalisation as
    text parameters; left empty, they come from the loaded model's preprocessing."""
    names = {f.name for f in dataclasses.fields(params)}
    updates = {}
    for name, values in (("mean", loaded.preprocess.mean), ("std", loaded.preprocess.std)):
        if name in names and getattr(params, name) == "":
            updates[name] = ",".join(f"{v:g}" for v in values)
    return dataclasses.replace(params, **updates) if updates else params


def explain(
    model: nn.Module | LoadedModel,
    inputs: torch.Tensor,
    method: str = "saliency",
    target: int | None = None,
    params: Any = None,
    *,
    device: str | torch.device | None = None,
    seed: int | None = 0,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> Explanation:
    """Explain one input with a registered method.

    ``params`` is the method's parameter dataclass or a mapping of names to values (strings are
    parsed and checked against the declared bounds). ``target=None`` explains the predicted class.
    With ``device`` the model is moved there; otherwise the input follows the model. Random
    methods are seeded without disturbing the global random state.
    """
    spec = get_method(method)
    if params is None or isinstance(params, dict):
        params = build_params(spec.params_cls, params)
    elif not isinstance(params, spec.params_cls):
        raise UserError(f"method '{method}' takes {spec.params_cls.__name__}, not {type(params).__name__}")
    if isinstance(model, LoadedModel):
        params = _fill_normalisation(params, model)
    module = model.module if isinstance(model, LoadedModel) else model
    _check_gradients(module, spec)
    if device is not None:
        module.to(select_device(device))
    target_device = model_device(module)
    inputs = inputs.to(target_device)
    start = time.perf_counter()
    devices = [target_device.index or 0] if target_device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices):
            if seed is not None:
                torch.manual_seed(seed)
            result = spec.explain(module, inputs, target, params, progress=progress, cancel=cancel)
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        release_memory(target_device)
        raise UserError(f"out of memory on {target_device} while running {method}; try a smaller input, batch or memory budget, or another device") from None
    _check_finite(result, method)
    result.seed = seed
    result.elapsed_s = time.perf_counter() - start
    return result


def _check_gradients(module: nn.Module, spec) -> None:
    """A model without gradients (an ONNX graph: ``has_gradients = False``) runs only the black-box
    methods; a gradient or layer method gets one line naming those."""
    if getattr(module, "has_gradients", True) or (not spec.gradients and not spec.needs_layer):
        return
    black_box = ", ".join(m.name for m in available_methods() if not m.gradients and not m.needs_layer)
    what = "hooks on its layers" if not spec.gradients else "gradients"
    raise UserError(f"{spec.name} needs {what}, which this model (an ONNX graph run by onnxruntime) does not have; methods that work on it: {black_box}")


def _check_finite(result: Explanation, method: str) -> None:
    """NaN weights or inputs give NaN maps silently; say so instead of returning garbage."""
    if not math.isfinite(result.probability):
        raise UserError(f"the model's output is not a finite number (NaN or infinite) for this input; its weights or the input hold invalid values, so {method} cannot explain it")
    bad = int(np.size(result.map) - np.isfinite(result.map).sum())
    if bad:
        raise UserError(f"{method} produced a map with {bad} of {result.map.size} values NaN or infinite; check the parameters (a step or weight too large?) and the model's weights")
