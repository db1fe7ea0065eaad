"""The regions of the image Sobol method and how a row of region values becomes a pixel mask.

A grid of g x g cells is upsampled smoothly: a cell's value fills the cell and fades into its
neighbours across the cell's edges, as a Gaussian-blurred (engine.io.blur) indicator of the cell
with sigma = ``softness`` cell widths. The mask is then R^T M C for the g x g values M and the
g x H and g x W profiles R and C (products of a row and a column profile, like local's windows);
the profiles of each axis sum to 1 at every pixel, so a constant M gives a constant mask. At the
default softness of 1/8 a cell's value reaches into its neighbour over about a quarter of a cell,
so a perturbed image has no hard step at cell edges while each cell keeps its own pixels (with
bilinear upsampling a cell would move half of its neighbours' pixels). Softness 0 is
nearest-neighbour upsampling, the masks of Fel et al.'s code. SLIC superpixels are painted as
they are (nearest: every pixel takes its superpixel's value). The same operator paints the indices
back onto the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.core.errors import UserError
from engine.io.blur import gaussian_blur


@dataclass(frozen=True)
class Regions:
    """D regions of an H x W image: the label of every pixel and, for a grid, its axis profiles."""

    labels: torch.Tensor  # H x W, long, 0..D-1
    count: int
    grid: int | None = None  # g for a grid of g x g cells, None for superpixels
    row_profiles_t: torch.Tensor | None = None  # H x g: how much each cell row moves each pixel row
    col_profiles: torch.Tensor | None = None  # g x W
    note: str | None = None

    def masks(self, rows: torch.Tensor) -> torch.Tensor:
        """B x 1 x H x W masks from a B x D batch of region values (smooth for a grid, nearest else)."""
        if self.grid is not None:
            cells = rows.view(-1, self.grid, self.grid)
            # R^T (M C), with R^T stored contiguous: about 10x faster than (R^T M) C on a CPU.
            return (self.row_profiles_t @ (cells @ self.col_profiles)).unsqueeze(1)
        return rows[:, self.labels.to(rows.device)].unsqueeze(1)

    def paint(self, values: np.ndarray) -> torch.Tensor:
        """The H x W map of one value per region, through the same operator as the masks."""
        dtype = self.col_profiles.dtype if self.col_profiles is not None else torch.float32
        rows = torch.as_tensor(np.asarray(values), dtype=dtype, device=self.labels.device)
        return self.masks(rows.view(1, -1))[0, 0]


def grid_labels(height: int, width: int, grid: int, device: torch.device) -> torch.Tensor:
    """Cell index (row-major) of every pixel of a g x g grid; cells differ by at most one pixel."""
    rows = torch.div(torch.arange(height, device=device) * grid, height, rounding_mode="floor")
    cols = torch.div(torch.arange(width, device=device) * grid, width, rounding_mode="floor")
    return rows[:, None] * grid + cols[None, :]


def _profiles(size: int, grid: int, softness: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """g x size: the indicator of each cell along one axis, blurred across the cell edges."""
    cells = torch.div(torch.arange(size) * grid, size, rounding_mode="floor")
    indicators = (cells[None, :] == torch.arange(grid)[:, None]).double()
    # One row of pixels per cell: the 2-D blur with replicated edges then blurs along the axis only.
    profiles = gaussian_blur(indicators.view(1, grid, 1, size), softness * size / grid)[0, :, 0, :]
    return profiles.to(device=device, dtype=dtype)


def grid_regions(height: int, width: int, grid: int, device: torch.device, softness: float = 0.125, dtype: torch.dtype = torch.float32) -> Regions:
    """A g x g grid whose masks are made in ``dtype`` (the input's) on ``device``."""
    if grid < 2:
        raise UserError(f"grid must be at least 2 (a 1 x 1 grid has one region and nothing to compare), not {grid}")
    if grid > min(height, width):
        raise UserError(f"grid {grid} is finer than the image ({height} x {width}); choose at most {min(height, width)}")
    if softness < 0:
        raise UserError(f"softness must be at least 0, not {softness}")
    return Regions(grid_labels(height, width, grid, device), grid * grid, grid, _profiles(height, grid, softness, device, dtype).T.contiguous(), _profiles(width, grid, softness, device, dtype))


def segment_regions(image: torch.Tensor, segments: int, compactness: float) -> Regions:
    """SLIC superpixels of a C x H x W image (scikit-image), relabelled 0..D-1."""
    try:
        from skimage.segmentation import slic
    except ImportError:
        raise UserError("regions=segments needs scikit-image (pip install scikit-image); regions=grid works without it") from None
    pixels = image.detach().float().cpu().permute(1, 2, 0).numpy().astype(np.float64)
    low, high = float(pixels.min()), float(pixels.max())
    pixels = (pixels - low) / (high - low) if high > low else np.zeros_like(pixels)
    options = {"n_segments": int(segments), "compactness": float(compactness), "channel_axis": -1, "start_label": 0, "convert2lab": pixels.shape[2] == 3}
    labels, note = slic(pixels, **options), None
    if np.unique(labels).size < max(2, segments // 4):
        # On noise-like images SLIC's connectivity step merges almost everything; its superpixels
        # before that step are still valid regions (groups of pixels), only not connected.
        labels = slic(pixels, enforce_connectivity=False, **options)
        note = "SLIC's connected superpixels merged on this image; its superpixels were taken without the connectivity step, so a region may be in pieces"
    _, labels = np.unique(labels, return_inverse=True)  # 0..D-1 with no gaps
    labels = labels.reshape(pixels.shape[:2])
    count = int(labels.max()) + 1
    if count < 2:
        raise UserError("SLIC found a single superpixel in this image; ask for more segments or lower the compactness, or use regions=grid")
    return Regions(torch.as_tensor(labels.astype(np.int64), device=image.device), count, None, note=note)
