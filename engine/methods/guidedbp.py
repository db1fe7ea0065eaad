"""Guided backpropagation (Springenberg et al., ICLR workshop 2015): the gradient of the target
output with respect to the input, where every ReLU passes back only positive gradients (and only
where its input was positive).

The rule is applied through torch's function dispatch (see ``_gradients.GuidedReLUs``), so it
reaches nn.ReLU modules in place or not, modules used twice (ResNet's blocks) and functional
``F.relu`` / ``torch.relu`` / ``Tensor.relu`` calls alike, without changing the model. TorchScript
models are refused: their ReLUs cannot be reached.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.core.explanation import Explanation
from engine.core.params import param
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.methods._base import Setup, begin, finish
from engine.methods._gradients import REDUCE_CHOICES, REDUCE_HELP, GuidedReLUs, reduce_channels, refuse_script
from engine.methods._registry import MethodSpec, register
from engine.models.outputs import OUTPUT_CHOICES, logits_of, select_output


@dataclass(frozen=True)
class GuidedBpParams:
    reduce: str = param("maxabs", REDUCE_HELP, choices=REDUCE_CHOICES)
    output: str = param("logit", "what is differentiated: the target's logit, probability or log-probability", choices=OUTPUT_CHOICES)


def guided_gradient(
    model: nn.Module, x: torch.Tensor, target: int | None, output: str, progress: ProgressFn, cancel: CancelToken, span: tuple[float, float] = (0.0, 1.0)
) -> tuple[Setup, torch.Tensor]:
    """The prediction on ``x`` (1 x C x H x W) and the guided gradient of the target output (C x H x W)."""
    refuse_script(model, "guided backpropagation")
    inputs = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), GuidedReLUs():
        logits = logits_of(model(inputs))
        setup = Setup.from_logits(x, logits, target)
        cancel.check()
        progress(span[0] + 0.5 * (span[1] - span[0]), "guided backward")
        (grad,) = torch.autograd.grad(select_output(logits, setup.target, output).sum(), inputs)
    return setup, grad[0]


def explain(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | None,
    params: GuidedBpParams,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> Explanation:
    """Guided-backpropagation map of one input, reduced over channels."""
    progress, cancel = resolve(progress, cancel)
    x = begin(inputs, progress, cancel, "forward")
    setup, grad = guided_gradient(model, x, target, params.output, progress, cancel)
    extras = {"attribution": grad.float().cpu().numpy()}
    return finish(setup, SPEC.name, params, reduce_channels(grad, params.reduce), progress, extras)


SPEC = register(
    MethodSpec(
        name="guidedbp",
        summary="Guided backpropagation: the input gradient with only positive gradients passed back through the ReLUs",
        params_cls=GuidedBpParams,
        explain=explain,
        kind="gradient",
    )
)
