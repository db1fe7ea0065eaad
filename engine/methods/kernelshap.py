"""Kernel SHAP over image segments (Lundberg and Lee, NeurIPS 2017).

The image is cut into M segments (a g x g grid, or SLIC superpixels). A coalition z in {0, 1}^M
keeps the segments with z_j = 1 and replaces the others by a baseline (zeros, the image's channel
means, or a blurred copy). The segments' Shapley values phi_j of the game v(z) = f(x_z) add up to
f(x) - f(baseline):

* with at most 12 segments all 2^M coalitions are evaluated and the values are exact;
* with more, ``samples`` coalitions are drawn from the Shapley kernel (sizes weighted by
  (M - 1) / (k (M - k)), in complementary pairs) and phi solves the Kernel SHAP least squares
  with the constraint sum(phi) = f(x) - f(baseline).

The map spreads each segment's value evenly over its pixels (phi_j / |segment j| at each of
them), so the map sums to f(x) - f(baseline) and a segment's total is its Shapley value.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.core.errors import UserError
from engine.core.explanation import Explanation
from engine.core.params import param
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.io.blur import baseline_image
from engine.methods._base import RunSettingNames, begin, finish
from engine.methods._image_regions import superpixels
from engine.methods._kernelshap import EXACT_MAX_SEGMENTS, bits, exact_shapley, grid_segments, kernel_shap, sample_coalitions, slic_segments
from engine.methods._perturb import BASELINES, perturbed_outputs, reference, scores
from engine.methods._registry import Cost, MethodSpec, register
from engine.models.outputs import OUTPUT_CHOICES


@dataclass(frozen=True)
class KernelShapParams(RunSettingNames):
    segmentation: str = param("slic", "how the image is cut into players: SLIC superpixels (scikit-image) or a square grid", choices=("slic", "grid"))
    n_segments: int = param(50, "slic: the number of superpixels asked for (SLIC may return somewhat more or fewer)", low=1, high=10000)
    compactness: float = param(10.0, "slic: balance of colour and space (higher: squarer superpixels)", low=0.001, high=1000.0)
    grid: int = param(4, "grid: cells per side (g x g segments)", low=1, high=1024)
    samples: int = param(1000, "coalitions evaluated when there are more than 12 segments (one forward pass each); with 12 or fewer all 2^M are", low=1)
    baseline: str = param("blur", "what replaces a removed segment: zeros, the image's channel means, or a Gaussian-blurred copy", choices=BASELINES)
    blur_sigma: float = param(5.0, "blur baseline: Gaussian standard deviation in pixels", low=0.1, high=1000.0)
    seed: int = param(-1, "seed of the sampled coalitions; -1 = the run's seed", low=-1)
    output: str = param("logit", "what is explained: the target's logit, probability or log-probability", choices=OUTPUT_CHOICES)


def _segments(x: torch.Tensor, params: KernelShapParams) -> tuple[torch.Tensor, list[str]]:
    """The H x W segment labels, and notes on how they came about."""
    height, width = x.shape[2:]
    if params.segmentation == "grid":
        return grid_segments(height, width, params.grid, x.device), []
    if params.segmentation != "slic":
        raise UserError(f"unknown segmentation '{params.segmentation}'; choose slic or grid")
    # slic_segments is looked up here, at the call, so that a test can replace it
    found = superpixels(x, params.n_segments, params.compactness, params.grid, slic=slic_segments)
    return found.labels, list(found.notes)


def _coalitions(count: int, params: KernelShapParams) -> torch.Tensor | None:
    """The sampled coalitions (samples x M, on the CPU), or None when all are enumerated."""
    if count <= EXACT_MAX_SEGMENTS:
        return None
    seed = params.seed if params.seed >= 0 else int(torch.randint(0, 2**62, (1,)))
    return sample_coalitions(count, params.samples, torch.Generator().manual_seed(seed))


def _evaluate_all(model, x, baseline, segments, target, coalitions, params, per_image, progress, cancel):
    """The output for every coalition in ``coalitions`` (an N x M boolean tensor on the CPU, or,
    when None, the 2^M - 1 bit sets 0 .. 2^M - 2: all but the whole image), and the sizer."""
    count = int(segments.max()) + 1
    device = x.device
    total = 2**count - 1 if coalitions is None else coalitions.shape[0]

    def perturb(start: int, stop: int) -> torch.Tensor:
        members = bits(torch.arange(start, stop, device=device), count) if coalitions is None else coalitions[start:stop].to(device)
        return torch.where(members[:, segments][:, None], x, baseline)  # B x 1 x H x W keeps

    return perturbed_outputs(model, total, perturb, target, params.output, per_image=per_image, device=device, progress=progress, cancel=cancel, message="coalitions")


def _values(outputs: torch.Tensor, coalitions: torch.Tensor | None, count: int, f_x: float, f_empty: float) -> torch.Tensor:
    if coalitions is None:
        return exact_shapley(torch.cat([outputs.double().cpu(), torch.tensor([f_x], dtype=torch.float64)]), count)
    return kernel_shap(coalitions, outputs, f_empty, f_x)


def explain(model: nn.Module, inputs: torch.Tensor, target: int | None, params: KernelShapParams, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> Explanation:
    """Shapley values of the image's segments, each spread evenly over its pixels."""
    progress, cancel = resolve(progress, cancel)
    x = begin(inputs, progress, cancel, "forward")
    segments, notes = _segments(x, params)
    count = int(segments.max()) + 1
    coalitions = _coalitions(count, params)
    baseline = baseline_image(x, params.baseline, params.blur_sigma, BASELINES)
    ref = reference(model, x, target, params.output)
    setup, f_x = ref.setup, ref.f_x
    with torch.inference_mode():
        outputs, sizer = _evaluate_all(model, x, baseline, segments, setup.target, coalitions, params, ref.per_image, progress, cancel)
        f_empty = float(scores(model(baseline), setup.target, params.output)[0]) if coalitions is not None else float(outputs[0])
    cancel.check()
    phi = _values(outputs, coalitions, count, f_x, f_empty)
    sizes = torch.bincount(segments.flatten().cpu(), minlength=count).double()
    saliency = (phi / sizes.clamp(min=1.0))[segments.cpu()]
    extras = {
        "forward_passes": 1 + outputs.shape[0] + (0 if coalitions is None else 1),
        "segments": count,
        "exact": coalitions is None,
        "segment_values": phi.float().numpy(),
        "segment_labels": segments.int().cpu().numpy(),
        "f_x": f_x,
        "f_baseline": f_empty,
        "completeness_gap": float(phi.sum()) - (f_x - f_empty),
        **sizer.extras(),
    }
    if notes:
        extras["notes"] = notes
    return finish(setup, SPEC.name, params, saliency, progress, extras)


def cost(params: KernelShapParams, height: int, width: int) -> Cost:
    """2^M passes with at most 12 segments (all coalitions; the whole image is the unperturbed
    forward), else the sampled coalitions, the baseline and the unperturbed forward. For SLIC
    the estimate takes the number of superpixels asked for; SLIC may return a few more or fewer."""
    count = params.grid**2 if params.segmentation == "grid" else params.n_segments
    return Cost(2**count) if count <= EXACT_MAX_SEGMENTS else Cost(params.samples + 2)


SPEC = register(
    MethodSpec(
        name="kernelshap",
        summary="Shapley value of each image segment (grid or SLIC superpixels) for the target output, spread over its pixels (Kernel SHAP; exact up to 12 segments; forward passes only)",
        params_cls=KernelShapParams,
        explain=explain,
        kind="perturbation",
        gradients=False,
        cost=cost,
    )
)
