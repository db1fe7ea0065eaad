"""Extremal perturbations (Fong, Patrick and Vedaldi, ICCV 2019, "Understanding Deep Networks via
Extremal Perturbations and Smooth Masks").

For each target area a, a smooth mask m in [0, 1]^{H x W} is optimised so that

* ``preserve``: the image that keeps x where m = 1 and is blurred elsewhere,
  m x + (1 - m) blur(x), scores as high as possible;
* ``delete``: the image with x blurred where m = 1, (1 - m) x + m blur(x), scores as low as
  possible;

while the mask covers a fraction a of the image. The area is imposed, as in the paper and its
reference code (TorchRay), by the rank loss ||sort(m) - r_a||^2 / (H W), r_a being 0 on the
lowest (1 - a) H W entries and 1 on the others, with a weight that starts at ``area_weight`` and
grows geometrically by ``area_growth`` in total over the steps. Unlike the reference (SGD with
momentum on a raw logit, weight 300), the optimiser is Adam and the reward is divided by
|f(x) - f(blurred x)|, so that the balance of reward and area does not depend on the model's
output scale; the parameters start at 0.5. The mask is smooth by
construction: a parameter grid with one cell per ``step`` pixels, clamped to [0, 1], upsampled
bilinearly and blurred with a Gaussian of ``smoothing`` x ``step`` pixels. Adam optimises the grid.

The map is the mean of the masks of the requested areas (1 where a pixel is in the mask at every
area), so with several areas the pixels kept even at the smallest area stand out. The method
needs the gradient of the model's output with respect to its input (one forward and one backward
pass per area and step); it uses the model in no other way. The reference's random jitter of the
perturbed image and its blur pyramid (the blur grows as the mask falls) are left out: the
perturbation here blends the image with one blurred copy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.core.errors import UserError
from engine.core.explanation import Explanation
from engine.core.params import param
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.io.blur import gaussian_blur
from engine.methods._base import apply_gradients, begin, finish, predict, report_step
from engine.methods._perturb import scores
from engine.methods._registry import Cost, MethodSpec, register
from engine.models.outputs import OUTPUT_CHOICES


@dataclass(frozen=True)
class ExtremalParams:
    areas: str = param("0.1", "target area(s) of the mask as fractions of the image, e.g. 0.1 or 0.05,0.1,0.2; the map is the mean of their masks")
    variant: str = param(
        "preserve",
        "preserve: the smallest region that keeps the output when the rest is blurred; delete: the region whose blurring lowers it most",
        choices=("preserve", "delete"),
    )
    steps: int = param(300, "optimisation steps (the paper uses 800); each is one forward and one backward pass per area", low=1, high=100000)
    learning_rate: float = param(0.03, "Adam's learning rate on the mask parameters (which live in [0, 1])", low=1e-6, high=10.0)
    step: int = param(7, "pixels per cell of the mask's parameter grid (the paper: 7, a 32 x 32 grid at 224 x 224)", low=1, high=1024)
    smoothing: float = param(0.5, "Gaussian smoothing of the upsampled mask, in cells (0 = bilinear upsampling only)", low=0.0, high=10.0)
    blur_sigma: float = param(10.0, "standard deviation of the blur perturbation, in pixels", low=0.1, high=1000.0)
    area_weight: float = param(3.0, "initial weight of the area constraint, against a reward measured in units of |f(x) - f(blurred x)|", low=0.0, high=1e9)
    area_growth: float = param(30.0, "factor by which the area weight grows over the run, geometrically per step (the paper: 1.0035^800, about 16)", low=1.0, high=1e6)
    output: str = param("logit", "what is preserved or deleted: the target's logit, probability or log-probability", choices=OUTPUT_CHOICES)


def parse_areas(text: str) -> list[float]:
    """The area fractions in ``text`` (comma-separated), each strictly between 0 and 1."""
    try:
        areas = [float(part) for part in str(text).replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise UserError(f"areas takes fractions separated by commas, e.g. 0.05,0.1,0.2, not '{text}'") from None
    if not areas:
        raise UserError("areas needs at least one fraction, e.g. 0.1")
    bad = [a for a in areas if not (math.isfinite(a) and 0.0 < a < 1.0)]
    if bad:
        raise UserError(f"areas must lie strictly between 0 and 1, not {', '.join(str(a) for a in bad)}")
    return areas


@dataclass(frozen=True)
class _MaskShape:
    """The parameter grid (rows x cols) behind an H x W mask, and the smoothing in pixels."""

    grid: tuple[int, int]
    size: tuple[int, int]
    sigma: float

    @classmethod
    def of(cls, params: ExtremalParams, height: int, width: int) -> _MaskShape:
        grid = (max(2, math.ceil(height / params.step)), max(2, math.ceil(width / params.step)))
        return cls(grid, (height, width), params.smoothing * params.step)

    def masks(self, grid_params: torch.Tensor) -> torch.Tensor:
        """K x 1 x H x W smooth masks in [0, 1] from K x 1 x rows x cols parameters."""
        up = F.interpolate(grid_params.clamp(0.0, 1.0), size=self.size, mode="bilinear", align_corners=False)
        return gaussian_blur(up, self.sigma)


def _reference(areas: list[float], pixels: int, device: torch.device) -> torch.Tensor:
    """K x pixels sorted target masks: 0 on the lowest (1 - a) pixels, 1 on the rest."""
    reference = torch.ones(len(areas), pixels, device=device)
    for i, area in enumerate(areas):
        reference[i, : int(pixels * (1.0 - area))] = 0.0
    return reference


@dataclass
class _Problem:
    """What every step needs: the image, its blurred copy, the target and the area references."""

    model: nn.Module
    x: torch.Tensor
    blurred: torch.Tensor
    target: int
    shape: _MaskShape
    reference: torch.Tensor
    params: ExtremalParams
    scale: float = 1.0  # |f(x) - f(blurred x)|: the reward is measured in units of it

    def energy(self, grid_params: torch.Tensor, area_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(energy to maximise, reward per area, masks) for the current parameters."""
        masks = self.shape.masks(grid_params)
        kept = masks if self.params.variant == "preserve" else 1.0 - masks
        perturbed = kept * self.x + (1.0 - kept) * self.blurred
        reward = scores(self.model(perturbed), self.target, self.params.output)
        if self.params.variant == "delete":
            reward = -reward
        ordered = masks.flatten(1).sort(dim=1).values
        area_loss = ((ordered - self.reference) ** 2).mean(dim=1)
        return (reward / self.scale - area_weight * area_loss).sum(), reward.detach(), masks.detach()


def _optimise(problem: _Problem, count: int, progress, cancel) -> tuple[torch.Tensor, torch.Tensor]:
    """The masks (K x H x W) and the last rewards (K) after ``steps`` Adam steps."""
    params = problem.params
    grid_params = torch.full((count, 1, *problem.shape.grid), 0.5, device=problem.x.device, dtype=problem.x.dtype, requires_grad=True)
    optimizer = torch.optim.Adam([grid_params], lr=params.learning_rate)
    growth = params.area_growth ** (1.0 / params.steps)
    weight = params.area_weight
    masks = reward = None
    for step in range(params.steps):
        cancel.check()
        with torch.enable_grad():
            energy, reward, masks = problem.energy(grid_params, weight)
            (grad,) = torch.autograd.grad(-energy, grid_params)
        apply_gradients(optimizer, [grid_params], [grad])
        with torch.no_grad():
            grid_params.clamp_(0.0, 1.0)
        weight *= growth
        report_step(progress, step + 1, params.steps, float(energy.detach()), name="energy")
    # The masks of the last evaluated parameters: their rewards are the ones reported.
    return masks[:, 0], reward


def explain(model: nn.Module, inputs: torch.Tensor, target: int | None, params: ExtremalParams, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> Explanation:
    """Mean of the extremal masks of the requested areas."""
    progress, cancel = resolve(progress, cancel)
    x = begin(inputs, progress, cancel, "forward")
    areas = parse_areas(params.areas)
    if params.steps < 1:
        raise UserError(f"steps must be at least 1, not {params.steps}")
    setup = predict(model, x, target)
    height, width = x.shape[2:]
    shape = _MaskShape.of(params, height, width)
    blurred = gaussian_blur(x, params.blur_sigma)
    f_x = float(scores(setup.logits, setup.target, params.output)[0])
    with torch.inference_mode():
        f_blurred = float(scores(model(blurred), setup.target, params.output)[0])
    scale = max(abs(f_x - f_blurred), 1e-6 * max(1.0, abs(f_x)))
    problem = _Problem(model, x, blurred, setup.target, shape, _reference(areas, height * width, x.device), params, scale)
    masks, reward = _optimise(problem, len(areas), progress, cancel)
    cancel.check()
    sign = -1.0 if params.variant == "delete" else 1.0
    passes = params.steps * len(areas)
    extras = {
        "forward_passes": passes + 2,
        "backward_passes": passes,
        "needs_gradients": True,
        "areas": areas,
        "mask_areas": [float(a) for a in masks.flatten(1).mean(1)],
        "final_outputs": [sign * float(r) for r in reward],
        "f_x": f_x,
        "f_blurred": f_blurred,
        "masks": masks.float().cpu().numpy(),
        "parameter_grid": list(shape.grid),
    }
    return finish(setup, SPEC.name, params, masks.mean(0), progress, extras)


def cost(params: ExtremalParams, height: int, width: int) -> Cost:
    """One forward and one backward pass per area and step, and the unperturbed forward."""
    try:
        count = len(parse_areas(params.areas))
    except UserError:
        count = 1
    return Cost(params.steps * count + 2, params.steps * count)


SPEC = register(
    MethodSpec(
        name="extremal",
        summary="Smooth mask of a fixed area that best preserves (or deletes) the target output under blur (extremal perturbations; needs gradients w.r.t. the mask)",
        params_cls=ExtremalParams,
        explain=explain,
        kind="perturbation",
        cost=cost,
    )
)
