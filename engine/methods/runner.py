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
from engine.methods._registry import available_methods, get_method
from engine.models.loading import LoadedModel
from engine.runtime.batching import batch_for_budget, default_budget_bytes, is_out_of_memory, release_memory, run_in_batches
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


def _prepare(model: nn.Module | LoadedModel, method: str, params: Any, device) -> tuple[Any, Any, nn.Module]:
    """The method's spec, its checked parameters and the module, moved to ``device`` when given."""
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
    return spec, params, module


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
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> Explanation:
    """Explain one input with a registered method.

    ``params`` is the method's parameter dataclass or a mapping of names to values (strings are
    parsed and checked against the declared bounds). ``target=None`` explains the predicted class.
    With ``device`` the model is moved there; otherwise the input follows the model. Random
    methods are seeded without disturbing the global random state.
    """
    spec, params, module = _prepare(model, method, params, device)
    target_device = model_device(module)
    inputs = inputs.to(target_device)
    start = time.perf_counter()
    try:
        with _seeded(target_device):
            if seed is not None:
                torch.manual_seed(seed)
            result = spec.explain(module, inputs, target, params, progress=progress, cancel=cancel)
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc):
            raise
        raise _out_of_memory(exc, target_device, method) from None
    _check_finite(result, method)
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
    device: str | torch.device | None = None,
    seed: int | None = 0,
    batch_size: int = 0,
    memory_budget_mb: int = 0,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> list[Explanation]:
    """Explain several images (N x C x H x W, or a sequence of C x H x W of one size): one
    Explanation per image, the maps :func:`explain` gives per image up to float rounding.

    A method with a batched explain (``MethodSpec.batched``: saliency, input x gradient and the
    one-pass CAMs) runs ``batch_size`` images per forward and backward (0: 16 on a CPU, 64 on a
    GPU, lowered to fit ``memory_budget_mb``, by default a quarter of the available RAM or 80%
    of free GPU memory), halved on out-of-memory; the others, and a model in training mode (whose
    batch statistics would mix the images), run image by image. ``targets`` holds one class (or
    None: the image's prediction) per image. Each Explanation's ``elapsed_s`` is its share of its
    batch's time.
    """
    progress, cancel = resolve(progress, cancel)
    spec, params, module = _prepare(model, method, params, device)
    target_device = model_device(module)
    x = _as_images(images).to(target_device)
    count = x.shape[0]
    targets = [None] * count if targets is None else list(targets)
    if len(targets) != count:
        raise UserError(f"{len(targets)} targets for {count} images; give one target (or None) per image")
    batched = spec.batched
    if batched is None or module.training or count == 1:
        return _one_by_one(model, x, method, targets, params, seed, progress, cancel)
    results: list[Explanation | None] = [None] * count

    def evaluate(start: int, stop: int) -> None:
        begin = time.perf_counter()
        with _seeded(target_device):
            if seed is not None:
                torch.manual_seed(seed)
            chunk = batched(module, x[start:stop], targets[start:stop], params, cancel=cancel)
        share = (time.perf_counter() - begin) / (stop - start)
        for index, result in zip(range(start, stop), chunk, strict=True):
            _check_finite(result, method)
            result.seed, result.elapsed_s = seed, share
            results[index] = result

    progress(0.0, f"{method}: {count} images")
    size = _image_batch(module, x, batch_size, memory_budget_mb)
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


def _one_by_one(model, x, method, targets, params, seed, progress, cancel) -> list[Explanation]:
    count = x.shape[0]
    results = []
    for index in range(count):

        def part(fraction: float, message: str = "", data=None, index=index) -> None:
            progress((index + fraction) / count, f"image {index + 1}/{count}: {message}", data)

        results.append(explain(model, x[index], method, targets[index], params, seed=seed, progress=part, cancel=cancel))
    return results


def _image_batch(module: nn.Module, x: torch.Tensor, requested: int, budget_mb: int) -> int:
    """Images per forward: ``requested``, or 16 on a CPU and 64 on a GPU, lowered so that a batch's
    forward and backward fit the memory budget (every module's output is kept for the backward
    and its gradient made: twice the outputs of one image, plus the image thrice)."""
    device = x.device
    budget = budget_mb * 2**20 if budget_mb else default_budget_bytes(device)
    if requested and not budget_mb:
        return requested
    wanted = requested or (16 if device.type == "cpu" else 64)
    return batch_for_budget(wanted, _outputs_per_image(module, x[:1]), budget)


def _outputs_per_image(module: nn.Module, x: torch.Tensor) -> int:
    total = 0

    def hook(_module, _inputs, output) -> None:
        nonlocal total
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        total += sum(t.numel() * t.element_size() for t in outputs if isinstance(t, torch.Tensor))

    if isinstance(module, torch.jit.ScriptModule):
        return 0
    handles = [m.register_forward_hook(hook) for m in module.modules() if not list(m.children())]
    try:
        with torch.inference_mode():
            module(x)
    finally:
        for handle in handles:
            handle.remove()
    return 2 * total + 3 * x[0].numel() * x.element_size()


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
