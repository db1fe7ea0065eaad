"""Gradient saliency (Simonyan, Vedaldi and Zisserman, 2014): d output / d input."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.core.explanation import Explanation
from engine.core.params import param
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.methods._base import begin, finish, input_gradient
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
    saliency = grad.abs().amax(dim=0) if params.reduce == "maxabs" else grad.sum(dim=0)
    return finish(setup, SPEC.name, params, saliency, progress)


SPEC = register(
    MethodSpec(
        name="saliency",
        summary="Gradient of the target output with respect to the input pixels",
        params_cls=SaliencyParams,
        explain=explain,
        kind="gradient",
    )
)
