"""Input x gradient (Shrikumar et al. 2016): each input element times the gradient of the target
output with respect to it, the first-order Taylor term of f(x) - f(0)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.core.explanation import Explanation
from engine.core.params import param
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.methods._base import Setup, begin, finish
from engine.methods._gradients import REDUCE_CHOICES, REDUCE_HELP, reduce_channels
from engine.methods._registry import MethodSpec, register
from engine.models.outputs import OUTPUT_CHOICES, logits_of, select_output


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
    x = begin(inputs, progress, cancel, "forward").clone().requires_grad_(True)
    with torch.enable_grad():
        logits = logits_of(model(x))
        setup = Setup.from_logits(x, logits, target)
        cancel.check()
        progress(0.5, "backward")
        (grad,) = torch.autograd.grad(select_output(logits, setup.target, params.output).sum(), x)
    attribution = (x.detach() * grad)[0]
    extras = {"attribution": attribution.float().cpu().numpy()}
    return finish(setup, SPEC.name, params, reduce_channels(attribution, params.reduce), progress, extras)


SPEC = register(
    MethodSpec(
        name="inputxgrad",
        summary="Input x gradient: each pixel value times the gradient of the target output",
        params_cls=InputXGradParams,
        explain=explain,
        kind="gradient",
    )
)
