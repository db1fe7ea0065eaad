"""Input x gradient (Shrikumar et al. 2016): each input element times the gradient of the target
output with respect to it, the first-order Taylor term of f(x) - f(0)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.core.explanation import Explanation
from engine.core.params import param
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.methods._base import begin, check_batch, finish, input_gradient, input_gradients
from engine.methods._gradients import REDUCE_CHOICES, REDUCE_HELP, reduce_channels
from engine.methods._registry import MethodSpec, register
from engine.models.outputs import OUTPUT_CHOICES


@dataclass(frozen=True)
class InputXGradParams:
    reduce: str = param("sum", REDUCE_HELP, choices=REDUCE_CHOICES)
    output: str = param("logit", "what is differentiated: the target's logit, probability or log-probability", choices=OUTPUT_CHOICES)


def explain(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | None,
    params: InputXGradParams,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> Explanation:
    """Input x gradient map of one input, reduced over channels."""
    progress, cancel = resolve(progress, cancel)
    x = begin(inputs, progress, cancel, "forward")
    setup, grad = input_gradient(model, x, target, params.output, progress, cancel)
    return _finish(setup, x[0], grad, params, progress)


def _finish(setup, x: torch.Tensor, grad: torch.Tensor, params: InputXGradParams, progress: ProgressFn) -> Explanation:
    attribution = x * grad
    extras = {"attribution": attribution.float().cpu().numpy()}
    return finish(setup, SPEC.name, params, reduce_channels(attribution, params.reduce), progress, extras)


def explain_batch(
    model: nn.Module,
    inputs: torch.Tensor,
    targets,
    params: InputXGradParams,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> list[Explanation]:
    """Input x gradient maps of an N x C x H x W batch, one target (or None) per image, in one
    forward and one backward."""
    progress, cancel = resolve(progress, cancel)
    x, targets = check_batch(inputs, targets)
    cancel.check()
    setups, grads = input_gradients(model, x, targets, params.output)
    return [_finish(setup, image, grad, params, progress) for setup, image, grad in zip(setups, x, grads, strict=True)]


SPEC = register(
    MethodSpec(
        name="inputxgrad",
        summary="Input x gradient: each pixel value times the gradient of the target output",
        params_cls=InputXGradParams,
        explain=explain,
        kind="gradient",
        explain_batch=explain_batch,
    )
)
