"""Global Sobol sensitivity of image regions (Fel et al., NeurIPS 2021, "Look at the Variance!").

The image is cut into D regions: a grid of g x g cells or SLIC superpixels. Each region gets a mask
value m in [0, 1] from a scrambled Sobol (Saltelli) design of N base points; the masks are painted
onto the input (smoothly for a grid, see ``_sobol_regions``; as they are for superpixels) and the image is blended towards
a baseline, x' = b + M (x - b), so m = 1 keeps a region and m = 0 replaces it by the baseline
(a blurred copy by default, zeros, or the channel means). The N(D+2) perturbed images are
evaluated by the perturbation family base (``_perturb``: batches sized by the run's execution
context, halved on out-of-memory); the indices come from ``engine.stats.sobol``, the same SALib
estimator as the tabular analysis (Saltelli 2010 for S1, Jansen for ST), with a bootstrap interval
per region and a convergence view at N/4 and N/2 from the leading rows of the same design (no extra
passes). Superpixels come from ``_image_regions`` with kernelshap's fallbacks (SLIC without its
connectivity step on noise-like images, the grid where it still finds a single superpixel).

The map is the total index ST of every region (or S1), painted back through the mask operator.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from engine.core.errors import UserError
from engine.core.explanation import Explanation
from engine.core.params import param
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.io.blur import baseline_image
from engine.methods._base import RunSettingNames, begin, finish
from engine.methods._perturb import perturbed_outputs, reference
from engine.methods._registry import Cost, MethodSpec, register
from engine.methods._sobol_regions import Regions, grid_regions, segment_regions
from engine.models.outputs import OUTPUT_CHOICES
from engine.stats.sobol import SobolDesign, SobolResult, power_of_two, sobol_analysis, sobol_design

CONF_LEVEL = 0.95


@dataclass(frozen=True)
class SobolMapParams(RunSettingNames):
    regions: str = param("grid", "grid: g x g cells, upsampled smoothly; segments: SLIC superpixels of the image (scikit-image)", choices=("grid", "segments"))
    grid: int = param(8, "regions=grid: cells per side, D = grid x grid regions (regions=segments: the grid used where SLIC finds a single superpixel)", low=2, high=64)
    softness: float = param(
        0.125,
        "regions=grid: how far a cell's mask value fades into its neighbours, as a Gaussian sigma in cell widths (0 = hard nearest-neighbour edges, as in Fel et al.'s code)",
        low=0.0,
        high=2.0,
    )
    segments: int = param(64, "regions=segments: the number of superpixels SLIC aims at (it returns about that many)", low=2, high=4096)
    compactness: float = param(10.0, "regions=segments: SLIC's weight of space against colour (higher: squarer superpixels)", low=0.001)
    n: int = param(32, "N, base points of the scrambled Sobol design (a power of two, others are rounded up); a run takes N(D+2) forward passes", low=4, high=65536)
    index: str = param("ST", "what the map shows: the total-order index ST (Jansen) or the first-order index S1 (Saltelli) of each region", choices=("ST", "S1"))
    baseline: str = param(
        "blur",
        "what a region is blended towards as its mask value goes from 1 to 0: a Gaussian-blurred copy of the image, zeros, or the image's per-channel mean",
        choices=("blur", "zero", "mean"),
    )
    blur_sigma: float = param(5.0, "baseline=blur: Gaussian standard deviation in pixels", low=0.1)
    output: str = param("logit", "what is measured: the target's logit, probability or log-probability", choices=OUTPUT_CHOICES)
    resamples: int = param(100, "bootstrap resamples for each region's confidence interval", low=10, high=10000)


def _baseline(x: torch.Tensor, params: SobolMapParams) -> torch.Tensor:
    return baseline_image(x, params.baseline, params.blur_sigma, ("blur", "zero", "mean"))


def _regions(x: torch.Tensor, params: SobolMapParams) -> Regions:
    height, width = x.shape[2:]
    if params.regions == "grid":
        return grid_regions(height, width, params.grid, x.device, params.softness, x.dtype if x.is_floating_point() else torch.float32)
    if params.regions == "segments":
        return segment_regions(x, params.segments, params.compactness, params.grid, params.softness)
    raise UserError(f"unknown regions '{params.regions}'; choose grid or segments")


def _design_seed() -> int:
    """The design's seed, drawn from torch's generator, which the runner seeds: same seed, same map.
    Never 0, because SALib's bootstrap falls back to numpy's global random state for seed 0."""
    return int(torch.randint(1, 2**31 - 1, (1,)).item())


def _design_outputs(model, x: torch.Tensor, target: int, regions: Regions, design: SobolDesign, params: SobolMapParams, per_image: int, progress, cancel):
    """The target output (float64) of the image blended by every row of the design, and the sizer."""
    baseline = _baseline(x, params)
    difference = x - baseline
    rows = torch.as_tensor(design.samples, dtype=x.dtype)

    def perturb(start: int, stop: int) -> torch.Tensor:
        return baseline + regions.masks(rows[start:stop].to(x.device)) * difference

    outputs, sizer = perturbed_outputs(model, len(rows), perturb, target, params.output, per_image=per_image, device=x.device, progress=progress, cancel=cancel, span=(0.01, 0.95))
    return outputs.cpu().numpy(), sizer


def _constant(outputs: np.ndarray) -> bool:
    """Whether the output did not move beyond rounding under any perturbation (every index is then 0/0)."""
    return float(np.ptp(outputs)) <= 1e-6 * max(1.0, float(np.abs(outputs).max()))


def _analyse(design: SobolDesign, regions: Regions, outputs: np.ndarray, params: SobolMapParams, progress: ProgressFn, cancel: CancelToken) -> tuple[dict, list[dict], list[str]]:
    """The indices of every region with their bootstrap half-widths, the convergence view and notes."""
    if not np.isfinite(outputs).all():
        raise UserError("the model returned NaN or infinite outputs on some perturbed images, so no Sobol index can be computed")
    notes = list(design.notes) + list(regions.notes)
    count = len(design.problem["names"])
    if _constant(outputs):
        zeros = {key: np.zeros(count) for key in ("S1", "S1_conf", "ST", "ST_conf")}
        notes.append("the output did not change under any perturbation of the design: every index is 0")
        return zeros, [{"n": design.n, **{key: value.tolist() for key, value in zeros.items()}}], notes
    sizes = [size for size in (design.n // 4, design.n // 2) if size >= 2]

    def scaled(fraction: float, message: str = "", data=None) -> None:  # the analysis reports 0.7..1
        progress(0.95 + 0.04 * fraction, message or "Sobol indices", data)

    progress(0.95, "Sobol indices")
    result: SobolResult = sobol_analysis(design, outputs, conf_level=CONF_LEVEL, num_resamples=params.resamples, convergence=sizes, progress=scaled, cancel=cancel)
    indices = {key: np.asarray(getattr(result, key), dtype=np.float64) for key in ("S1", "S1_conf", "ST", "ST_conf")}
    return indices, result.convergence, notes


def explain(model: nn.Module, inputs: torch.Tensor, target: int | None, params: SobolMapParams, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> Explanation:
    """Map of each region's Sobol index (ST by default) for the target output."""
    progress, cancel = resolve(progress, cancel)
    x = begin(inputs, progress, cancel, "forward")
    regions = _regions(x, params)
    names = [f"region {i}" for i in range(regions.count)]
    design = sobol_design({"names": names, "bounds": [[0.0, 1.0]] * regions.count}, params.n, second_order=False, seed=_design_seed())
    cancel.check()
    ref = reference(model, x, target, params.output, x[0, 0].numel() * x.element_size())  # and each image's mask
    setup, f_x = ref.setup, ref.f_x
    with torch.inference_mode():
        outputs, sizer = _design_outputs(model, x, setup.target, regions, design, params, ref.per_image, progress, cancel)
    cancel.check()
    indices, convergence, notes = _analyse(design, regions, outputs, params, progress, cancel)
    shown, half = indices[params.index], indices[f"{params.index}_conf"]
    extras = {
        # as for every other method: the design's N(D+2) passes and the one of the unperturbed image
        "forward_passes": len(design.samples) + 1,
        "design_passes": len(design.samples),
        "n": design.n,
        "regions": regions.count,
        "grid": regions.grid,
        "index": params.index,
        "labels": regions.labels.cpu().numpy().astype(np.int32),
        **indices,
        "interval": np.stack([shown - half, shown + half], axis=1),
        "conf_level": CONF_LEVEL,
        "convergence": convergence,
        "design_seed": design.seed,
        "f_x": f_x,
        "output_variance": float(np.var(outputs)),
        **sizer.extras(),
    }
    if notes:
        extras["notes"] = notes
    return finish(setup, SPEC.name, params, regions.paint(shown), progress, extras)


def cost(params: SobolMapParams, height: int, width: int) -> Cost:
    """N(D+2) forward passes (the design), D = grid^2, plus the one of the unperturbed image; for
    superpixels D is SLIC's target count, so the estimate is approximate there."""
    n, _ = power_of_two(params.n)
    regions = params.grid**2 if params.regions == "grid" else params.segments
    return Cost(n * (regions + 2) + 1)


SPEC = register(
    MethodSpec(
        name="sobol",
        summary="Global Sobol indices of image regions under random soft masks (Fel et al. 2021): how much of the output's variance each region drives",
        params_cls=SobolMapParams,
        explain=explain,
        kind="perturbation",
        gradients=False,
        cost=cost,
    )
)
