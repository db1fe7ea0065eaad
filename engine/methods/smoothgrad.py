"""Noise tunnel: SmoothGrad (Smilkov et al. 2017), SmoothGrad-squared and VarGrad (Adebayo et al.
2018) over gradient saliency, Integrated Gradients or input x gradient.

Each of ``samples`` noisy copies x + e, e ~ N(0, (sigma (max x - min x))^2) per element, is
explained with the base method, keeping every channel; the map is the mean of those attributions
(smoothgrad), the mean of their squares (smoothgrad_sq) or their variance (vargrad), then reduced
over channels. The noise of copy s comes from its own generator seeded from one number drawn from
torch's random state (which the runner seeds), so the map does not depend on the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

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
    gradients_in_batches,
    make_baseline,
    path_gradient,
    quadrature,
    reduce_channels,
)
from engine.methods._registry import Cost, MethodSpec, register
from engine.models.outputs import OUTPUT_CHOICES, logits_of
from engine.runtime.batching import forward_with_backward_estimate


@dataclass(frozen=True)
class SmoothGradParams(RunSettingNames):
    base: str = param("saliency", "the method run on every noisy copy: gradient saliency, Integrated Gradients (ig) or input x gradient", choices=("saliency", "ig", "inputxgrad"))
    variant: str = param(
        "smoothgrad",
        "statistic of the noisy attributions: their mean (smoothgrad), mean of squares (smoothgrad_sq) or variance (vargrad)",
        choices=("smoothgrad", "smoothgrad_sq", "vargrad"),
    )
    samples: int = param(50, "noisy copies of the input", low=1, high=100_000)
    sigma: float = param(0.15, "standard deviation of the Gaussian noise, as a fraction of the input's range (max - min)", low=0.0, high=10.0)
    reduce: str = param("maxabs", REDUCE_HELP, choices=REDUCE_CHOICES)
    output: str = param("logit", "what is differentiated: the target's logit, probability or log-probability", choices=OUTPUT_CHOICES)
    steps: int = param(20, "base ig: points on each path (one forward and backward each)", low=2, high=100_000)
    rule: str = param("gausslegendre", "base ig: quadrature rule of the path integral", choices=RULE_CHOICES)
    baseline: str = param("zero", "base ig: the path's start, computed once from the clean input", choices=BASELINE_CHOICES)
    blur_sigma: float = param(10.0, "base ig with the blur baseline: Gaussian standard deviation in pixels", low=0.1)


class _Moments:
    """Running sums of attributions and their squares, shifted by the first one (the variance does
    not change with the shift, and identical attributions give exactly zero)."""

    def __init__(self) -> None:
        self.shift: torch.Tensor | None = None
        self.total: torch.Tensor | None = None
        self.squares: torch.Tensor | None = None
        self.count = 0

    def add(self, attributions: torch.Tensor) -> None:
        values = attributions.double()
        if self.shift is None:
            self.shift = values[0].clone()
            self.total = torch.zeros_like(self.shift)
            self.squares = torch.zeros_like(self.shift)
        centred = values - self.shift
        self.total += centred.sum(0)
        self.squares += centred.pow(2).sum(0)
        self.count += values.shape[0]

    def statistic(self, variant: str) -> torch.Tensor:
        mean_centred = self.total / self.count
        variance = (self.squares / self.count - mean_centred.pow(2)).clamp(min=0)
        if variant == "vargrad":
            return variance
        mean = self.shift + mean_centred
        return mean if variant == "smoothgrad" else variance + mean.pow(2)


def _noisy(x: torch.Tensor, std: float, seed: int, start: int, stop: int) -> torch.Tensor:
    """Noisy copies start..stop-1, copy s from a generator seeded with seed + s."""
    noise = torch.empty((stop - start, *x.shape[1:]), dtype=x.dtype)
    for row, index in enumerate(range(start, stop)):
        noise[row].normal_(0.0, std, generator=torch.Generator().manual_seed(seed + index))
    return x + noise.to(x.device)


def _gradient_samples(model, x, setup: Setup, params: SmoothGradParams, std: float, seed: int, moments: _Moments, per_image: int, progress, cancel) -> int:
    batch_size = gradient_batch_size(x.device, params.samples, per_image)

    def collect(_start: int, _stop: int, inputs: torch.Tensor, grad: torch.Tensor) -> None:
        moments.add(inputs * grad if params.base == "inputxgrad" else grad)

    return gradients_in_batches(
        model, lambda start, stop: _noisy(x, std, seed, start, stop), params.samples, setup.target, params.output, collect,
        batch_size=batch_size, cancel=cancel, progress=progress, span=(0.02, 0.98), message="noisy copies", device=x.device,
    )


def _ig_samples(model, x, setup: Setup, params: SmoothGradParams, std: float, seed: int, moments: _Moments, per_image: int, progress, cancel) -> int:
    baseline = make_baseline(x, params.baseline, params.blur_sigma)
    rule = quadrature(params.rule, params.steps)
    batch_size = gradient_batch_size(x.device, params.steps, per_image)
    width = 0.96 / params.samples
    for index in range(params.samples):
        noisy = _noisy(x, std, seed, index, index + 1)
        span = (0.02 + index * width, 0.02 + (index + 1) * width)
        integral, batch_size = path_gradient(model, noisy, baseline, setup.target, params.output, rule, batch_size=batch_size, cancel=cancel, progress=progress, span=span)
        moments.add(((noisy - baseline).double() * integral)[:1])
    return batch_size


def explain(model: nn.Module, inputs: torch.Tensor, target: int | None, params: SmoothGradParams, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> Explanation:
    """Noise-tunnel map of one input: a statistic of the base method over noisy copies."""
    progress, cancel = resolve(progress, cancel)
    x = begin(inputs, progress, cancel, "forward")
    raw, per_image = forward_with_backward_estimate(model, x)
    setup = Setup.from_logits(x, logits_of(raw), target)
    std = params.sigma * float(x.max() - x.min())
    seed = int(torch.randint(0, 2**62, (1,)))
    moments = _Moments()
    sample = _ig_samples if params.base == "ig" else _gradient_samples
    used = sample(model, x, setup, params, std, seed, moments, per_image, progress, cancel)
    cancel.check()
    attribution = moments.statistic(params.variant)
    extras = {"attribution": attribution.float().cpu().numpy(), "noise_std": std, "batch_size_used": used}
    return finish(setup, SPEC.name, params, reduce_channels(attribution, params.reduce), progress, extras)


def cost(params: SmoothGradParams, height: int, width: int) -> Cost:
    """One forward and backward per noisy copy (per path point with ig), and the clean forward."""
    per_sample = params.steps if params.base == "ig" else 1
    return Cost(params.samples * per_sample + 1, params.samples * per_sample)


SPEC = register(
    MethodSpec(
        name="smoothgrad",
        summary="Noise tunnel: saliency, IG or input x gradient averaged (or squared, or their variance) over noisy copies of the input",
        params_cls=SmoothGradParams,
        explain=explain,
        kind="gradient",
        cost=cost,
    )
)
