"""Gradient saliency (Simonyan, Vedaldi and Zisserman, 2014): d output / d input."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from engine.core.explanation import Explanation
from engine.core.params import param
from engine.core.progress import resolve
from engine.methods._registry import MethodSpec, register
from engine.models.outputs import OUTPUT_CHOICES, as_batch, check_target, logits_of, prediction, select_output


@dataclass(frozen=True)
class SaliencyParams:
    reduce: str = param(
        "maxabs",
        "how channels combine: max of |gradient| (maxabs) or the signed sum over channels (sum)",
        choices=("maxabs", "sum"),
    )
    output: str = param("logit", "what is differentiated: the target's logit, probability or log-probability", choices=OUTPUT_CHOICES)


def explain(model, inputs, target, params: SaliencyParams, *, progress=None, cancel=None) -> Explanation:
    """Saliency map of one input: the gradient of the target output, reduced over channels."""
    progress, cancel = resolve(progress, cancel)
    start = time.perf_counter()
    x = as_batch(inputs).detach().clone().requires_grad_(True)
    progress(0.0, "forward")
    cancel.check()
    with torch.enable_grad():
        logits = logits_of(model(x))
        predicted, probability = prediction(logits)
        target = check_target(target, logits.shape[1])
        target = predicted if target is None else target
        cancel.check()
        progress(0.5, "backward")
        (grad,) = torch.autograd.grad(select_output(logits, target, params.output).sum(), x)
    grad = grad[0]
    saliency = grad.abs().amax(dim=0) if params.reduce == "maxabs" else grad.sum(dim=0)
    target_probability = float(torch.softmax(logits.detach()[0].float(), 0)[target])
    progress(1.0, "done")
    return Explanation(
        map=saliency.detach().float().cpu().numpy(),
        method=SPEC.name,
        params=params,
        target=target,
        predicted=predicted,
        probability=probability,
        target_probability=target_probability,
        device=str(x.device),
        elapsed_s=time.perf_counter() - start,
    )


SPEC = register(
    MethodSpec(
        name="saliency",
        summary="Gradient of the target output with respect to the input pixels",
        params_cls=SaliencyParams,
        explain=explain,
        kind="gradient",
    )
)
