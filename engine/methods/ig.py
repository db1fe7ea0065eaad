"""Integrated Gradients (Sundararajan, Taly and Yan, ICML 2017).

The attribution of input element i is (x_i - b_i) times the integral over alpha in [0, 1] of
d f / d x_i at b + alpha (x - b), for a baseline b. The integral is taken by a quadrature rule with
``steps`` points: Gauss-Legendre (as Captum's default), or the left, right, middle or trapezoid
Riemann sums. By the fundamental theorem of calculus the attributions sum to f(x) - f(b); how far
the quadrature misses that (the completeness gap) is reported in the extras.

The trapezoid rule here has points 0, 1/(n-1), ..., 1 with the textbook weights (ends halved, the
weights summing to one); Captum uses the same points with steps 1/n, which scales its map by
(n - 1) / n (the same map up to that factor, but its sum misses f(x) - f(b) by 1/n).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.accel import channels_last, fast_copy
from engine.core.explanation import Explanation
from engine.core.params import param
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.methods._base import RunSettingNames, Setup, begin, finish
from engine.methods._gradients import (
    BASELINE_CHOICES,
    REDUCE_CHOICES,
    REDUCE_HELP,
    RULE_CHOICES,
    gradient_batch_size,
    make_baseline,
    path_gradient,
    quadrature,
    reduce_channels,
)
from engine.methods._registry import Cost, MethodSpec, register
from engine.models.outputs import OUTPUT_CHOICES, logits_of, select_output
from engine.runtime.batching import forward_with_backward_estimate


@dataclass(frozen=True)
class IgParams(RunSettingNames):
    baseline: str = param(
        "zero",
        "the reference input the path starts from: zeros, a Gaussian-blurred copy, the image's per-channel mean, or uniform noise over the image's range",
        choices=BASELINE_CHOICES,
    )
    blur_sigma: float = param(10.0, "blur baseline: Gaussian standard deviation in pixels", low=0.1)
    steps: int = param(50, "points on the path from the baseline to the input (one forward and backward each)", low=2, high=100_000)
    rule: str = param("gausslegendre", "quadrature rule of the path integral", choices=RULE_CHOICES)
    reduce: str = param("sum", REDUCE_HELP, choices=REDUCE_CHOICES)
    output: str = param("logit", "what is differentiated: the target's logit, probability or log-probability", choices=OUTPUT_CHOICES)


def explain(model: nn.Module, inputs: torch.Tensor, target: int | None, params: IgParams, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> Explanation:
    """Integrated-gradients map of one input, reduced over channels."""
    progress, cancel = resolve(progress, cancel)
    x = begin(inputs, progress, cancel, "forward")
    baseline = make_baseline(x, params.baseline, params.blur_sigma)
    # The folded copy (engine.accel.fast_copy) is what the path runs through: its memory is what counts.
    raw, per_image = forward_with_backward_estimate(fast_copy(model, x), channels_last(torch.cat([x, baseline])))
    logits = logits_of(raw)
    setup = Setup.from_logits(x, logits[:1], target)
    f_x, f_b = (float(v) for v in select_output(logits.double(), setup.target, params.output))
    rule = quadrature(params.rule, params.steps)
    batch_size = gradient_batch_size(x.device, params.steps, per_image)
    integral, used = path_gradient(model, x, baseline, setup.target, params.output, rule, batch_size=batch_size, cancel=cancel, progress=progress, span=(0.02, 0.98))
    attribution = (x - baseline)[0].to(integral.dtype) * integral
    total = float(attribution.sum())
    gap = total - (f_x - f_b)
    extras = {
        "attribution": attribution.float().cpu().numpy(),
        "completeness_gap": gap,
        "relative_completeness_gap": gap / abs(f_x - f_b) if f_x != f_b else None,
        "attribution_sum": total,
        "f_input": f_x,
        "f_baseline": f_b,
        "batch_size_used": used,
        "forward_passes": params.steps + 2,
        "backward_passes": params.steps,
    }
    return finish(setup, SPEC.name, params, reduce_channels(attribution, params.reduce), progress, extras)


def cost(params: IgParams, height: int, width: int) -> Cost:
    """One forward and backward per path point, and the forwards of the input and the baseline."""
    return Cost(params.steps + 2, params.steps)


SPEC = register(
    MethodSpec(
        name="ig",
        summary="Integrated Gradients: input minus baseline times the gradient averaged along the straight path between them",
        params_cls=IgParams,
        explain=explain,
        kind="gradient",
        cost=cost,
    )
)
