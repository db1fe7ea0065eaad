"""Gradient saliency (Simonyan, Vedaldi and Zisserman, 2014): d output / d input."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.core.explanation import Explanation
from engine.core.params import param
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.methods._base import begin, check_batch, finish, input_gradient, input_gradients
from engine.methods._registry import MethodSpec, register
from engine.models.outputs import OUTPUT_CHOICES


@dataclass(frozen=True)
class SaliencyParams:
    reduce: str = param(
        "maxabs",
        "how channels combine: max of |gradient| (maxabs) or the signed sum over channels (sum)",
        choices=("maxabs", "sum"),
    )
    output: str = param("logit", "what is differentiated: the target's logit, probability or log-probability", choices=OUTPUT_CHOICES)


def explain(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | None,
    params: SaliencyParams,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> Explanation:
    """Saliency map of one input: the gradient of the target output, reduced over channels."""
    progress, cancel = resolve(progress, cancel)
    setup, grad = input_gradient(model, begin(inputs, progress, cancel, "forward"), target, params.output, progress, cancel)
    return finish(setup, SPEC.name, params, _reduce(grad, params.reduce), progress)


def _reduce(grad: torch.Tensor, reduce: str) -> torch.Tensor:
    return grad.abs().amax(dim=0) if reduce == "maxabs" else grad.sum(dim=0)


def explain_batch(
    model: nn.Module,
    inputs: torch.Tensor,
    targets,
    params: SaliencyParams,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> list[Explanation]:
    """Saliency maps of an N x C x H x W batch, one target (or None) per image, in one forward
    and one backward."""
    progress, cancel = resolve(progress, cancel)
    x, targets = check_batch(inputs, targets)
    cancel.check()
    setups, grads = input_gradients(model, x, targets, params.output)
    return [finish(setup, SPEC.name, params, _reduce(grad, params.reduce), progress) for setup, grad in zip(setups, grads, strict=True)]


SPEC = register(
    MethodSpec(
        name="saliency",
        summary="Gradient of the target output with respect to the input pixels",
        params_cls=SaliencyParams,
        explain=explain,
        kind="gradient",
        explain_batch=explain_batch,
    )
)
