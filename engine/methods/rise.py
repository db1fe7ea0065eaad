"""RISE: Randomized Input Sampling for Explanation (Petsiuk, Das and Saenko, BMVC 2018).

N random masks keep each cell of a coarse s x s grid with probability p; each grid is upsampled
bilinearly to (s + 1) C_H x (s + 1) C_W pixels, with cells C = ceil(H / s) x ceil(W / s), and
cropped to H x W at a random shift of less than one cell, as in the paper and its code. The model scores the masked images
x * M_i, and a pixel's value is

    paper (``center`` false):   sum_i f(x * M_i) M_i / (N p)            ~ E[f | pixel kept]
    centred (``center`` true):  sum_i (f(x * M_i) - mean f) M_i / (N p) ~ E[f | pixel kept] - E[f]

The centred form differs from the paper's by (about) the constant mean output, and has a lower
variance (the mean is a control variate); a pixel the model ignores is near 0 rather than near
E[f], so positive values mark pixels whose presence raises the output.

The coarse grids and shifts (N x s x s bits) are drawn at once from a seeded generator, so the
map does not depend on the batch size; the full-size masks are built on the device one batch at
a time and are never all held at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from engine.accel import fast_copy
from engine.core.errors import UserError
from engine.core.explanation import Explanation
from engine.core.params import param
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.methods._base import RunSettingNames, begin, finish
from engine.methods._perturb import draw, generator, perturbed_outputs, reference
from engine.methods._registry import Cost, MethodSpec, register
from engine.models.outputs import OUTPUT_CHOICES


@dataclass(frozen=True)
class RiseParams(RunSettingNames):
    masks: int = param(2000, "number of random masks, one forward pass each (the paper uses 4000 for ResNet-50, 8000 for VGG16)", low=1)
    grid: int = param(7, "cells per side of the coarse random grid (s); a cell is ceil(H / s) x ceil(W / s) pixels", low=1, high=256)
    p: float = param(0.5, "probability that a grid cell is kept", low=0.01, high=0.99)
    center: bool = param(
        True,
        "subtract the mean output over the masks before weighting (0 for pixels the model ignores, lower variance); false gives the paper's sum f(x*M) M / (N p)",
    )
    seed: int = param(-1, "seed of the masks; -1 = the run's seed", low=-1)
    output: str = param("probability", "what is measured: the target's logit, probability or log-probability", choices=OUTPUT_CHOICES)


def _interpolation(cells: int, size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """size x cells matrix of 1-D linear upsampling (align_corners false, edges clamped): the
    factor that bilinear upsampling of a grid applies along one axis."""
    eye = torch.eye(cells, dtype=torch.float32, device=device)[:, None, :]
    return F.interpolate(eye, size=size, mode="linear", align_corners=False)[:, 0, :].T.to(dtype)


@dataclass(frozen=True)
class _Masks:
    """The coarse grids (N x s x s, bool) and shifts (N x 2) of all masks; full masks per batch."""

    grids: torch.Tensor
    shifts: torch.Tensor
    cell: tuple[int, int]
    size: tuple[int, int]

    @classmethod
    def draw(cls, params: RiseParams, size: tuple[int, int], gen: torch.Generator, device: torch.device) -> _Masks:
        s, (height, width) = params.grid, size
        cell = (math.ceil(height / s), math.ceil(width / s))
        grids = draw(gen, (params.masks, s, s), device) < params.p
        # Shifts in [0, cell): floor(u * cell), the paper's uniform offset of the crop.
        shifts = (draw(gen, (params.masks, 2), device) * torch.tensor(cell, device=device)).long()
        return cls(grids, shifts, cell, size)

    @property
    def upsampled_size(self) -> tuple[int, int]:
        s = self.grids.shape[1]
        return (s + 1) * self.cell[0], (s + 1) * self.cell[1]

    def build(self, start: int, stop: int, dtype: torch.dtype) -> torch.Tensor:
        """(stop - start) x H x W masks with values in [0, 1].

        Bilinear upsampling is separable, so each cropped mask is R_i G_i C_i^T, where G_i is the
        s x s grid and R_i, C_i are the rows of the 1-D interpolation matrices that the crop keeps:
        two small batched products instead of an interpolation and a gather at full size.
        """
        height, width = self.size
        device = self.grids.device
        s = self.grids.shape[1]
        rows = _interpolation(s, self.upsampled_size[0], dtype, device)[self.shifts[start:stop, 0, None] + torch.arange(height, device=device)]
        cols = _interpolation(s, self.upsampled_size[1], dtype, device)[self.shifts[start:stop, 1, None] + torch.arange(width, device=device)]
        return rows @ self.grids[start:stop].to(dtype) @ cols.transpose(1, 2)

    def bytes_per_mask(self, element: int) -> int:
        return 2 * self.size[0] * self.size[1] * element


def _check(params: RiseParams) -> None:
    if params.masks < 1:
        raise UserError(f"masks must be at least 1, not {params.masks}")
    if params.grid < 1:
        raise UserError(f"grid must be at least 1, not {params.grid}")
    if not 0.0 < params.p < 1.0:
        raise UserError(f"p must lie strictly between 0 and 1, not {params.p}")


@dataclass
class _Sums:
    """sum_i (f_i - f_x) M_i and sum_i M_i over the masks so far."""

    weighted: torch.Tensor
    coverage: torch.Tensor


def _accumulate(model, x: torch.Tensor, masks: _Masks, f_x: float, target: int, params: RiseParams, per_image: int, progress, cancel):
    """The sums over all masks, every f_i (float64) and the sizer that batched them. The masks of a
    batch are built on the device and dropped after it."""
    device = x.device
    pixels = x.shape[2] * x.shape[3]
    acc_dtype = torch.float32 if device.type == "mps" else torch.float64
    sums = _Sums(torch.zeros(pixels, dtype=acc_dtype, device=device), torch.zeros(pixels, dtype=acc_dtype, device=device))
    mask_dtype = x.dtype if x.dtype in (torch.float16, torch.bfloat16, torch.float64) else torch.float32
    runner = fast_copy(model, x) if isinstance(model, nn.Module) else model  # batch norms folded (exact)
    built = {}

    def perturb(start: int, stop: int) -> torch.Tensor:
        built["masks"] = m = masks.build(start, stop, mask_dtype)
        return x * m[:, None].to(x.dtype)

    def add(start: int, stop: int, f: torch.Tensor) -> None:
        flat = built.pop("masks").reshape(stop - start, pixels).float()
        sums.weighted += ((f.float() - f_x)[None, :] @ flat)[0].to(acc_dtype)
        sums.coverage += flat.sum(0).to(acc_dtype)

    outputs, sizer = perturbed_outputs(runner, params.masks, perturb, target, params.output, per_image=per_image, device=device, progress=progress, cancel=cancel, message="masks", on_scores=add)
    return sums, outputs, sizer


def explain(model: nn.Module, inputs: torch.Tensor, target: int | None, params: RiseParams, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> Explanation:
    """RISE map of one input: the output's mean over random masks that keep each pixel."""
    progress, cancel = resolve(progress, cancel)
    x = begin(inputs, progress, cancel, "forward")
    _check(params)
    height, width = x.shape[2:]
    gen = generator(params.seed, x.device)
    masks = _Masks.draw(params, (height, width), gen, x.device)
    ref = reference(model, x, target, params.output, masks.bytes_per_mask(4))
    setup, f_x = ref.setup, ref.f_x
    with torch.inference_mode():
        sums, outputs, sizer = _accumulate(model, x, masks, f_x, setup.target, params, ref.per_image, progress, cancel)
    cancel.check()
    mean_output = float(outputs.mean())
    shift = (mean_output - f_x) if params.center else -f_x
    saliency = ((sums.weighted - shift * sums.coverage) / (params.masks * params.p)).view(height, width)
    extras = {
        "forward_passes": params.masks + 1,
        "masks": params.masks,
        "cell_size": list(masks.cell),
        "f_x": f_x,
        "mean_output": mean_output,
        "mean_coverage": float(sums.coverage.mean() / params.masks),
        **sizer.extras(),
    }
    return finish(setup, SPEC.name, params, saliency, progress, extras)


def cost(params: RiseParams, height: int, width: int) -> Cost:
    """One forward pass per mask and the unperturbed one."""
    return Cost(params.masks + 1)


SPEC = register(
    MethodSpec(
        name="rise",
        summary="Mean output over random smooth masks that keep each pixel, minus the overall mean (RISE; black-box, forward passes only)",
        params_cls=RiseParams,
        explain=explain,
        kind="perturbation",
        gradients=False,
        cost=cost,
    )
)
