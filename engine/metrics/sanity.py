"""Model-parameter randomisation test (Adebayo et al., "Sanity checks for saliency maps", NeurIPS 2018).

Cascading randomisation: on a deep copy of the model, re-initialise (seeded) the parameters of the
last layer, recompute the map with the same method, parameters and target, then also the layer
below, and so on down to the input. A map that still looks the same once the weights are random
does not explain the model: it fails. The comparison is the Spearman rank correlation
(``compare.spearman``) of the original and randomised maps, on signed values and on magnitudes.

Layers are the modules that own parameters, in reverse execution order (found with forward
pre-hooks on a dry run); they can be grouped by top-level block, and ``max_layers`` merges
neighbouring groups so that the last step still randomises the whole model.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.core.errors import UserError
from engine.core.jsonable import json_float
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.methods.runner import explain, model_device
from engine.metrics._common import as_map
from engine.metrics.agreement import spearman
from engine.models.loading import LoadedModel
from engine.models.outputs import as_batch

GROUPS = ("module", "block")

ExplainFn = Callable[[nn.Module], np.ndarray]


class MethodMap:
    """``explain_fn(model) -> map`` for a registered method on one input, with a fixed target.

    With ``target=None`` the target is the class the first model it is called with (the original
    one) predicts, and it stays that class for every randomised model, as in Adebayo et al.
    """

    def __init__(self, inputs: torch.Tensor, method: str = "saliency", target: int | None = None, params: Any = None, *, seed: int | None = 0) -> None:
        self.inputs = inputs
        self.method = method
        self.target = target
        self.params = params
        self.seed = seed

    def __call__(self, model: nn.Module) -> np.ndarray:
        result = explain(model, self.inputs, self.method, self.target, self.params, seed=self.seed)
        if self.target is None:
            self.target = result.target
        return result.map


def explain_fn_for(inputs: torch.Tensor, method: str = "saliency", target: int | None = None, params: Any = None, *, seed: int | None = 0) -> MethodMap:
    """The map function of ``engine.explain(model, inputs, method, target, params)`` for the sanity check."""
    return MethodMap(inputs, method, target, params, seed=seed)


def _owns_parameters(module: nn.Module) -> bool:
    return next(module.parameters(recurse=False), None) is not None


def _execution_order(model: nn.Module, inputs: torch.Tensor) -> tuple[list[str], list[str]]:
    """Names of the parameter-owning modules in the order they start running, and those never run."""
    if isinstance(model, torch.jit.ScriptModule):
        raise UserError("the sanity check needs hooks on layers, which a TorchScript model cannot have; load the architecture with its weights instead")
    owners = [(name, module) for name, module in model.named_modules() if _owns_parameters(module)]
    if not owners:
        raise UserError("the model has no parameters to randomise")
    fired: list[str] = []
    handles = []
    for name, module in owners:

        def hook(_module, _inputs, name=name):
            if name not in fired:
                fired.append(name)

        handles.append(module.register_forward_pre_hook(hook))
    training = model.training
    try:
        model.eval()  # a dry run in training mode would update batch-norm statistics
        with torch.inference_mode():
            model(as_batch(inputs).detach().to(model_device(model)))
    finally:
        model.train(training)
        for handle in handles:
            handle.remove()
    unused = [name for name, _ in owners if name not in fired]
    return fired, unused


def _merge(groups: list[list[str]], max_layers: int | None) -> list[list[str]]:
    """Merge neighbouring groups into at most ``max_layers`` steps of near-equal size."""
    if max_layers is not None and (isinstance(max_layers, bool) or not isinstance(max_layers, int) or max_layers < 1):
        raise UserError(f"max_layers must be a positive integer, not {max_layers}")
    if max_layers is None or len(groups) <= max_layers:
        return groups
    bounds = np.linspace(0, len(groups), max_layers + 1).round().astype(int)
    return [[name for group in groups[a:b] for name in group] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def parameter_layers(model: nn.Module | LoadedModel, inputs: torch.Tensor, *, group: str = "module", max_layers: int | None = None) -> list[list[str]]:
    """The randomisation steps, top (output) first: lists of names of parameter-owning modules.

    ``group="module"``: one step per module; ``"block"``: neighbouring modules under the same
    top-level child (``layer4``, ``features``, ...) form one step. Modules that never run on this
    input are left out.
    """
    module = model.module if isinstance(model, LoadedModel) else model
    order, _ = _execution_order(module, inputs)
    return _group_steps(order, group, max_layers)


def _group_steps(order: list[str], group: str, max_layers: int | None) -> list[list[str]]:
    if group not in GROUPS:
        raise UserError(f"unknown grouping '{group}'; choose one of {', '.join(GROUPS)}")
    top_down = order[::-1]
    if group == "module":
        groups = [[name] for name in top_down]
    else:
        groups = []
        for name in top_down:
            block = name.split(".")[0]
            if groups and groups[-1][0].split(".")[0] == block:
                groups[-1].append(name)
            else:
                groups.append([name])
    return _merge(groups, max_layers)


def _reinitialise(module: nn.Module) -> None:
    """Draw fresh parameters: the layer's own initialiser when it has one and no parameter-owning
    children (which it would also reset), otherwise a normal draw with the tensor's own spread."""
    if hasattr(module, "reset_parameters") and not any(_owns_parameters(child) for child in module.modules() if child is not module):
        module.reset_parameters()
        return
    with torch.no_grad():
        for tensor in module.parameters(recurse=False):
            spread = float(tensor.float().std()) if tensor.numel() > 1 else 0.0
            tensor.normal_(0.0, spread if math.isfinite(spread) and spread > 0 else 0.02)


@dataclass
class SanityStep:
    """One step of the cascade: the layers randomised so far and the agreement with the original map."""

    index: int
    layers: list[str]  # the layers newly randomised at this step
    fraction_randomised: float  # share of parameter-owning modules randomised so far
    spearman: float
    spearman_abs: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "layers": list(self.layers),
            "fraction_randomised": float(self.fraction_randomised),
            "spearman": json_float(self.spearman),
            "spearman_abs": json_float(self.spearman_abs),
        }


@dataclass
class SanityReport:
    """The cascade's correlations and the verdict."""

    method: str
    threshold: float
    seed: int
    group: str
    steps: list[SanityStep]
    final_correlation: float | None  # what the verdict is based on (see cascading_randomisation)
    passed: bool | None
    verdict: str
    unused_layers: list[str]
    elapsed_s: float
    original_map: np.ndarray | None = field(default=None, repr=False)
    maps: list[np.ndarray] | None = field(default=None, repr=False)  # one per step with keep_maps

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "threshold": float(self.threshold),
            "seed": int(self.seed),
            "group": self.group,
            "steps": [step.to_dict() for step in self.steps],
            "final_correlation": json_float(self.final_correlation),
            "passed": self.passed,
            "verdict": self.verdict,
            "unused_layers": list(self.unused_layers),
            "elapsed_s": round(float(self.elapsed_s), 6),
        }


def _dependence(step: SanityStep) -> float:
    """How strongly a randomised map still follows the original: the larger of |signed Spearman|
    (a sign-flipped copy still ignores the weights) and Spearman of magnitudes; NaN (the randomised
    map is constant) counts as 0, no rank relation left."""
    values = [abs(v) if i == 0 else v for i, v in enumerate((step.spearman, step.spearman_abs)) if not math.isnan(v)]
    return max(values) if values else 0.0


def _verdict(method: str, steps: list[SanityStep], threshold: float) -> tuple[float | None, bool | None, str]:
    final = _dependence(steps[-1])
    n = len(steps)
    if final > threshold:
        text = (
            f"FAILED: with all {n} layer step(s) randomised the map still has rank correlation {final:.2f} with the original "
            f"(threshold {threshold:g}); {method} barely depends on the model's weights (Adebayo et al. 2018)"
        )
        return final, False, text
    below = next(step.index for step in steps if _dependence(step) <= threshold)
    text = (
        f"PASSED: randomising the model's layers changes the map; the rank correlation with the original fell to {final:.2f} "
        f"with all {n} layer step(s) randomised (threshold {threshold:g}; first at or below it after step {below + 1})"
    )
    return final, True, text


def _cascade_steps(working: nn.Module, order: list[str], layers: list[list[str]] | None, group: str, max_layers: int | None) -> list[list[str]]:
    """The steps to randomise: the given ``layers`` (checked against the model) or those of :func:`parameter_layers`."""
    if layers is None:
        return _group_steps(order, group, max_layers)
    named = dict(working.named_modules())
    missing = [name for step in layers for name in step if name not in named]
    if missing or not layers:
        raise UserError(f"the model has no layer(s) {', '.join(missing)}" if missing else "the list of layers to randomise is empty")
    return _merge([list(step) for step in layers], max_layers)


def _run_cascade(
    working: nn.Module,
    explain_fn: ExplainFn,
    original: np.ndarray,
    steps_layers: list[list[str]],
    order: list[str],
    seed: int,
    keep_maps: bool,
    progress: ProgressFn,
    cancel: CancelToken,
) -> tuple[list[SanityStep], list[np.ndarray]]:
    """Randomise ``working`` step by step (in place), comparing each new map with the original."""
    modules = dict(working.named_modules())
    n_owners = len(order) or 1
    total = len(steps_layers) + 1
    device = model_device(working)
    devices = [device.index or 0] if device.type == "cuda" else []
    results: list[SanityStep] = []
    maps: list[np.ndarray] = []
    randomised: set[str] = set()
    for index, step in enumerate(steps_layers):
        cancel.check()
        # Each step its own seed, derived from (seed, step), so that a map function drawing random
        # numbers cannot shift the weights of the following steps.
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed * 1_000_003 + index)
            for name in step:
                _reinitialise(modules[name])
        randomised.update(step)
        current = as_map(explain_fn(working), "randomised map")
        if current.shape != original.shape:
            raise UserError(f"the map function returned shape {current.shape} after randomisation but {original.shape} before")
        if keep_maps:
            maps.append(current)
        results.append(
            SanityStep(
                index=index,
                layers=list(step),
                fraction_randomised=len(randomised & set(order)) / n_owners,
                spearman=spearman(original, current),
                spearman_abs=spearman(np.abs(original), np.abs(current)),
            )
        )
        progress((index + 2) / total, f"randomised {index + 1}/{len(steps_layers)}: {', '.join(step)}")
    return results, maps


def cascading_randomisation(
    model: nn.Module | LoadedModel,
    inputs: torch.Tensor,
    explain_fn: ExplainFn,
    *,
    threshold: float = 0.5,
    group: str = "module",
    max_layers: int | None = None,
    layers: list[list[str]] | None = None,
    seed: int = 0,
    keep_maps: bool = False,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> SanityReport:
    """Adebayo et al.'s cascading randomisation test of one map function on one input.

    ``explain_fn(model) -> H x W map`` is called on a deep copy of the model (the original is never
    touched): first intact, then after each step of the cascade (``layers`` or, by default,
    :func:`parameter_layers`). The method passes when, with every step randomised, the larger of
    |Spearman| and Spearman-of-magnitudes is at most ``threshold``. ``inputs`` is the image for the
    dry run that finds the execution order.
    """
    progress, cancel = resolve(progress, cancel)
    start_time = time.perf_counter()
    module = model.module if isinstance(model, LoadedModel) else model
    if not 0 <= threshold <= 1:
        raise UserError(f"the correlation threshold must be in [0, 1], not {threshold}")
    method = getattr(explain_fn, "method", getattr(explain_fn, "__name__", type(explain_fn).__name__))
    if not getattr(module, "has_gradients", True):
        # An ONNX graph: its weights live in the onnxruntime session, out of reach of the cascade.
        verdict = "NOT RUN: the weights of an ONNX graph cannot be randomised here; check the model it was exported from"
        return SanityReport(str(method), float(threshold), int(seed), group, [], None, None, verdict, [], time.perf_counter() - start_time)
    working = copy.deepcopy(module)
    order, unused = _execution_order(working, inputs)
    steps_layers = _cascade_steps(working, order, layers, group, max_layers)

    progress(0.0, "original map")
    cancel.check()
    original = as_map(explain_fn(working), "original map")
    progress(1 / (len(steps_layers) + 1), "original map")
    results, maps = _run_cascade(working, explain_fn, original, steps_layers, order, seed, keep_maps, progress, cancel)
    if np.ptp(original) == 0:
        final, passed, verdict = None, None, "NOT JUDGED: the original map is constant, so rank correlations are undefined"
    else:
        final, passed, verdict = _verdict(method, results, threshold)
    progress(1.0, "done")
    return SanityReport(
        method=str(method),
        threshold=float(threshold),
        seed=int(seed),
        group=group if layers is None else "custom",
        steps=results,
        final_correlation=final,
        passed=passed,
        verdict=verdict,
        unused_layers=unused,
        elapsed_s=time.perf_counter() - start_time,
        original_map=original.astype(np.float32),
        maps=[m.astype(np.float32) for m in maps] if keep_maps else None,
    )
