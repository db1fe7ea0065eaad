"""The one call that runs any registered method on a model and an input."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.core.errors import UserError
from engine.core.explanation import Explanation
from engine.core.params import build_params
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.core.requests import TargetSpec
from engine.methods._registry import available_methods, get_method
from engine.models.loading import LoadedModel
from engine.runtime.batching import forward_with_backward_estimate, is_out_of_memory, release_memory, run_in_batches
from engine.runtime.context import RUN_SETTINGS, ExecutionContext, inherit, running
from engine.runtime.device import select_device
from engine.runtime.sizing import automatic_batch_size, fit_batch


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


def _run_settings(spec, values: dict) -> tuple[dict, dict[str, int]]:
    """A parameter mapping without the run settings that used to be method parameters
    (``batch_size``, ``memory_budget_mb``: see ``engine.runtime.context``), and those settings.
    A method whose dataclass still has one (pertmap's ``batch_size``, its noise samples per step)
    keeps it as its parameter."""
    fields = {f.name for f in dataclasses.fields(spec.params_cls)}
    values, settings = dict(values), {}
    for name in RUN_SETTINGS:
        if name in values and name not in fields:
            settings[name] = _setting(name, values.pop(name))
    return values, settings


def _setting(name: str, value: Any) -> int:
    """A run setting as a whole number of at least 0 (0: measured, or the default budget)."""
    try:
        number = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        number = None
    if number is None or number < 0:
        raise UserError(f"{name} is a whole number of at least 0 (0 = {'measured' if name == 'batch_size' else 'the default budget'}), not {value!r}")
    return number


def _prepare(model: nn.Module | LoadedModel, method: str, params: Any, device) -> tuple[Any, Any, nn.Module, dict[str, int]]:
    """The method's spec, its checked parameters, the module (moved to ``device`` when given) and
    the run settings found among the parameters (:func:`_run_settings`)."""
    spec = get_method(method)
    settings: dict[str, int] = {}
    if isinstance(params, dict):
        params, settings = _run_settings(spec, params)
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
    return spec, params, module, settings


def _context(spec, module: nn.Module, target_device: torch.device, shape, batch_size: int, memory_budget_mb: int, settings: dict[str, int]) -> ExecutionContext:
    """The execution context of a run: the keyword settings, else those given among the
    parameters, else the enclosing run's (0: measured batch sizes, the default memory budget)."""
    return inherit(
        device=target_device,
        batch_size=_setting("batch_size", batch_size) or settings.get("batch_size", 0),
        memory_budget_mb=_setting("memory_budget_mb", memory_budget_mb) or settings.get("memory_budget_mb", 0),
        method=spec.name,
        model=module,
        input_shape=tuple(shape),
    )


def _with_notes(result: Explanation, notes: list[str]) -> Explanation:
    """The context's notes added to the result's own."""
    if notes:
        result.extras["notes"] = list(result.extras.get("notes", [])) + [n for n in notes if n not in result.extras.get("notes", [])]
    return result


def _target_index(target: Any, model: Any) -> int | None:
    """A target as a class index: an int, a class name (with the loaded model's labels), 'pred' or None."""
    if target is None or (isinstance(target, int) and not isinstance(target, bool) and target >= 0):
        return target
    if isinstance(target, (str, TargetSpec)):
        spec = target if isinstance(target, TargetSpec) else TargetSpec.parse(target)
        labels = model.labels if isinstance(model, LoadedModel) else None
        classes = model.num_classes if isinstance(model, LoadedModel) else None
        return spec.resolve(labels, classes)
    if isinstance(target, (np.integer,)) and int(target) >= 0:
        return int(target)
    raise UserError(f"a target is a class index (0 or more), a class name or 'pred', not {target!r}")


def _seeded(target_device: torch.device):
    devices = [target_device.index or 0] if target_device.type == "cuda" else []
    return torch.random.fork_rng(devices=devices)


def _out_of_memory(exc: BaseException, target_device: torch.device, method: str) -> UserError:
    release_memory(target_device)
    return UserError(f"out of memory on {target_device} while running {method}; try a smaller input, batch or memory budget, or another device")


def explain(
    model: nn.Module | LoadedModel,
    inputs: torch.Tensor,
    method: str = "saliency",
    target: int | None = None,
    params: Any = None,
    *,
    device: str | torch.device | None = None,
    seed: int | None = 0,
    batch_size: int = 0,
    memory_budget_mb: int = 0,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> Explanation:
    """Explain one input with a registered method.

    ``params`` is the method's parameter dataclass or a mapping of names to values (strings are
    parsed and checked against the declared bounds). ``target=None`` explains the predicted class.
    With ``device`` the model is moved there; otherwise the input follows the model. Random
    methods are seeded without disturbing the global random state.

    ``batch_size`` and ``memory_budget_mb`` are run settings, not parameters: the inputs a method's
    batched loop evaluates at once (0: measured, ``engine.runtime.sizing``) and the memory a batch
    may use (0: a quarter of the available RAM on a CPU, 80% of free GPU memory). The methods read
    them from the execution context this call sets (``engine.runtime.context``). For older callers
    a parameter mapping may still carry them (``params={"window": 2, "batch_size": 4}``).
    """
    spec, params, module, settings = _prepare(model, method, params, device)
    target = _target_index(target, model)
    target_device = model_device(module)
    inputs = inputs.to(target_device)
    context = _context(spec, module, target_device, inputs.shape[-3:], batch_size, memory_budget_mb, settings)
    start = time.perf_counter()
    try:
        with _seeded(target_device), running(context):
            if seed is not None:
                torch.manual_seed(seed)
            result = spec.explain(module, inputs, target, params, progress=progress, cancel=cancel)
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise _out_of_memory(exc, target_device, method) from None
    _check_finite(result, method)
    _with_notes(result, context.notes)
    result.seed = seed
    result.elapsed_s = time.perf_counter() - start
    return result


def explain_many(
    model: nn.Module | LoadedModel,
    images: torch.Tensor | Sequence[torch.Tensor],
    method: str = "saliency",
    targets: Sequence[int | None] | None = None,
    params: Any = None,
    *,
    device: str | torch.device | None = None, seed: int | None = 0,
    batch_size: int = 0, memory_budget_mb: int = 0,  # images per pass here (see below)
    progress: ProgressFn | None = None, cancel: CancelToken | None = None,
) -> list[Explanation]:  # fmt: skip
    """Explain several images (N x C x H x W, or a sequence of C x H x W of one size): one
    Explanation per image, the maps :func:`explain` gives per image up to float rounding.

    A method with a batched explain (``MethodSpec.batched``: saliency, input x gradient and the
    one-pass CAMs) runs ``batch_size`` images per forward and backward (0: 16 on a CPU, 64 on a
    GPU, lowered to fit ``memory_budget_mb``, by default a quarter of the available RAM or 80%
    of free GPU memory), halved on out-of-memory; the others, and a model in training mode (whose
    batch statistics would mix the images), run image by image, each with the run settings of
    :func:`explain` (``memory_budget_mb``, and a ``batch_size`` given among the parameters).
    ``targets`` holds one class (or None: the image's prediction) per image. Each Explanation's
    ``elapsed_s`` is its share of its batch's time.
    """
    progress, cancel = resolve(progress, cancel)
    spec, params, module, settings = _prepare(model, method, params, device)
    target_device = model_device(module)
    x = _as_images(images).to(target_device)
    memory_budget_mb = _setting("memory_budget_mb", memory_budget_mb) or settings.get("memory_budget_mb", 0)
    count = x.shape[0]
    targets = [None] * count if targets is None else [_target_index(t, model) for t in targets]
    if len(targets) != count:
        raise UserError(f"{len(targets)} targets for {count} images; give one target (or None) per image")
    batched = spec.batched
    if batched is None or module.training or count == 1:
        run = {"batch_size": settings.get("batch_size", 0), "memory_budget_mb": memory_budget_mb}
        return _one_by_one(model, x, method, targets, params, seed, run, progress, cancel)
    results: list[Explanation | None] = [None] * count
    # The images of one pass share a context: the batch size here is images per pass, the
    # setting of this loop, not of the method's own (the batched methods have none).
    context = _context(spec, module, target_device, x.shape[1:], 0, memory_budget_mb, {})

    def evaluate(start: int, stop: int) -> None:
        begin = time.perf_counter()
        with _seeded(target_device), running(context):
            if seed is not None:
                torch.manual_seed(seed)
            chunk = batched(module, x[start:stop], targets[start:stop], params, cancel=cancel)
        share = (time.perf_counter() - begin) / (stop - start)
        for index, result in zip(range(start, stop), chunk, strict=True):
            _check_finite(result, method)
            result.seed, result.elapsed_s = seed, share
            results[index] = _with_notes(result, context.notes)

    progress(0.0, f"{method}: {count} images")
    size = _image_batch(module, x, _setting("batch_size", batch_size), memory_budget_mb)
    run_in_batches(count, size, evaluate, cancel=cancel, progress=progress, message="images", device=target_device)
    return results


def _as_images(images) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        batch = images
    else:
        images = list(images)
        if not images:
            raise UserError("no images to explain")
        if len({tuple(i.shape) for i in images}) > 1:
            raise UserError("the images to explain together must all have the same size")
        batch = torch.stack([i[0] if i.ndim == 4 and i.shape[0] == 1 else i for i in images])
    if batch.ndim != 4 or batch.shape[0] == 0 or not batch.is_floating_point():
        raise UserError(f"expected a floating-point N x C x H x W batch of images, got shape {tuple(batch.shape)}")
    return batch.detach()


def _one_by_one(model, x, method, targets, params, seed, run: dict[str, int], progress, cancel) -> list[Explanation]:
    count = x.shape[0]
    results = []
    for index in range(count):

        def part(fraction: float, message: str = "", data=None, index=index) -> None:
            progress((index + fraction) / count, f"image {index + 1}/{count}: {message}", data)

        results.append(explain(model, x[index], method, targets[index], params, seed=seed, progress=part, cancel=cancel, **run))
    return results


def _image_batch(module: nn.Module, x: torch.Tensor, requested: int, budget_mb: int) -> int:
    """Images per forward: ``requested``, or 16 on a CPU and 64 on a GPU, lowered so that a batch's
    forward and backward fit the memory budget (every module's output is kept for the backward
    and its gradient made: twice the outputs of one image, plus the image thrice)."""
    if requested and not budget_mb:
        return requested
    return fit_batch(requested or automatic_batch_size(x.device), forward_with_backward_estimate(module, x[:1])[1], x.device, budget_mb)[0]


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
