"""Image regions for the methods that perturb regions (kernelshap's players, the Sobol map's
inputs): a g x g grid, or SLIC superpixels with the same fallbacks for both.

On noise-like images SLIC's connectivity step merges almost everything; its superpixels before
that step still group like pixels, only not always in one piece, so they are taken instead. If
SLIC still finds a single superpixel (a flat image), the method's grid is used: one region would
make the map one constant. Each fallback says so in a note.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from engine.core.errors import UserError


def grid_labels(height: int, width: int, cells: int, device: torch.device) -> torch.Tensor:
    """H x W labels of a cells x cells grid (row-major), cells as equal as the size allows."""
    if cells > min(height, width):
        raise UserError(f"a grid of {cells} x {cells} does not fit a {height} x {width} image; choose at most {min(height, width)}")
    rows = torch.div(torch.arange(height, device=device) * cells, height, rounding_mode="floor")
    cols = torch.div(torch.arange(width, device=device) * cells, width, rounding_mode="floor")
    return rows[:, None] * cells + cols[None, :]


def slic_labels(x: torch.Tensor, n_segments: int, compactness: float, connected: bool = True) -> torch.Tensor:
    """H x W labels 0..M-1 of SLIC superpixels (Achanta et al. 2012) of the 1 x C x H x W input.

    The image is stretched to [0, 1] as a whole (an approximation of the display image that keeps
    the channels' relative contrasts); three channels are converted to CIELAB as SLIC expects,
    other counts are scaled to Lab's 0-100 range so that the same compactness suits them. Without
    ``connected`` SLIC skips its connectivity step: a superpixel may then be in pieces.
    """
    try:
        from skimage.segmentation import slic
    except ImportError:  # pragma: no cover - scikit-image is a dependency
        raise UserError("SLIC superpixels need scikit-image (pip install scikit-image); or use the grid") from None
    image = x[0].detach().float().cpu().numpy().transpose(1, 2, 0)
    low, high = float(image.min()), float(image.max())
    image = (image - low) / (high - low if high > low else 1.0)
    lab = image.shape[2] == 3
    labels = slic(image if lab else image * 100.0, n_segments=n_segments, compactness=compactness, start_label=0, channel_axis=-1, convert2lab=lab, enforce_connectivity=connected)
    _, contiguous = np.unique(labels, return_inverse=True)
    return torch.from_numpy(contiguous.reshape(labels.shape).astype(np.int64)).to(x.device)


@dataclass(frozen=True)
class Segmentation:
    """Region labels (H x W, 0..count-1), how many, the grid's g when a grid was used, and notes."""

    labels: torch.Tensor
    count: int
    grid: int | None
    notes: tuple[str, ...] = ()


def superpixels(x: torch.Tensor, n_segments: int, compactness: float, fallback_grid: int, slic: Callable[..., torch.Tensor] | None = None) -> Segmentation:
    """SLIC superpixels of the 1 x C x H x W input with the fallbacks of the module docstring; the
    grid of ``fallback_grid`` x ``fallback_grid`` cells where SLIC finds a single superpixel.
    ``slic(x, n_segments, compactness, connected=...)`` is the segmenter (default
    :func:`slic_labels`; tests replace it)."""
    slic = slic or slic_labels
    labels, notes = slic(x, n_segments, compactness), []
    if int(labels.max()) + 1 < max(2, n_segments // 4):
        labels = slic(x, n_segments, compactness, connected=False)
        notes.append("SLIC's connected superpixels merged on this image; its superpixels were taken without the connectivity step, so a region may be in pieces")
    count = int(labels.max()) + 1
    if count == 1 and n_segments > 1:
        height, width = x.shape[2:]
        note = f"SLIC found a single superpixel in this image (a flat image?); a {fallback_grid} x {fallback_grid} grid was used instead (the grid parameter)"
        return Segmentation(grid_labels(height, width, fallback_grid, x.device), fallback_grid**2, fallback_grid, (note,))
    if count < n_segments / 2:
        notes.append(f"SLIC returned {count} superpixels of the {n_segments} asked for (a noisy or flat image?); raise compactness or use the grid")
    return Segmentation(labels, count, None, tuple(notes))
