"""The pieces of kernelshap: image segments, coalitions, and the Shapley-value solvers."""

from __future__ import annotations

import math

import numpy as np
import torch

from engine.core.errors import UserError

EXACT_MAX_SEGMENTS = 12  # up to here all 2^M coalitions are evaluated and the values are exact


def grid_segments(height: int, width: int, cells: int, device: torch.device) -> torch.Tensor:
    """H x W labels of a cells x cells grid (row-major), cells as equal as the size allows."""
    if cells > min(height, width):
        raise UserError(f"a grid of {cells} x {cells} does not fit a {height} x {width} image; choose at most {min(height, width)}")
    rows = torch.arange(height, device=device) * cells // height
    cols = torch.arange(width, device=device) * cells // width
    return rows[:, None] * cells + cols[None, :]


def slic_segments(x: torch.Tensor, n_segments: int, compactness: float, connected: bool = True) -> torch.Tensor:
    """H x W labels 0..M-1 of SLIC superpixels (Achanta et al. 2012) of the 1 x C x H x W input.

    The image is stretched to [0, 1] as a whole (an approximation of the display image that keeps
    the channels' relative contrasts); three channels
    are converted to CIELAB as SLIC expects, other counts are scaled to Lab's 0-100 range so that
    the same compactness suits them. Without ``connected`` SLIC skips its connectivity step (which
    on noise-like images merges almost everything): a superpixel may then be in pieces.
    """
    try:
        from skimage.segmentation import slic
    except ImportError:  # pragma: no cover - scikit-image is a dependency
        raise UserError("SLIC superpixels need scikit-image (pip install scikit-image); or use segmentation=grid") from None
    image = x[0].detach().float().cpu().numpy().transpose(1, 2, 0)
    low, high = float(image.min()), float(image.max())
    image = (image - low) / (high - low if high > low else 1.0)
    lab = image.shape[2] == 3
    labels = slic(image if lab else image * 100.0, n_segments=n_segments, compactness=compactness, start_label=0, channel_axis=-1, convert2lab=lab, enforce_connectivity=connected)
    _, contiguous = np.unique(labels, return_inverse=True)
    return torch.from_numpy(contiguous.reshape(labels.shape).astype(np.int64)).to(x.device)


def bits(indices: torch.Tensor, count: int) -> torch.Tensor:
    """B x count booleans: bit j of each index (coalition j-th member present)."""
    return ((indices[:, None] >> torch.arange(count, device=indices.device)) & 1).bool()


def exact_shapley(values: torch.Tensor, count: int) -> torch.Tensor:
    """Shapley values from the outputs of all 2^M coalitions (``values[s]``, s a bit set).

    phi_i = sum over S without i of |S|! (M - |S| - 1)! / M! (v(S + i) - v(S)).
    """
    values = values.double().cpu()
    subsets = torch.arange(2**count)
    sizes = bits(subsets, count).sum(1)
    weights = torch.tensor([math.factorial(s) * math.factorial(count - s - 1) / math.factorial(count) if s < count else 0.0 for s in range(count + 1)], dtype=torch.float64)
    phi = torch.empty(count, dtype=torch.float64)
    for i in range(count):
        without = subsets[(subsets >> i) & 1 == 0]
        phi[i] = (weights[sizes[without]] * (values[without | (1 << i)] - values[without])).sum()
    return phi


def sample_coalitions(count: int, samples: int, gen: torch.Generator) -> torch.Tensor:
    """``samples`` x M coalitions drawn from the Shapley kernel, in complementary pairs.

    A coalition's size k (1..M-1) has probability proportional to (M - 1) / (k (M - k)), the total
    kernel weight of its size, and its members are uniform given k; so the kernel's weights are
    already in the sampling and the regression weights are equal. Each draw comes with its
    complement (antithetic pairs, which halve the variance for nearly additive models).
    """
    sizes = torch.arange(1, count, dtype=torch.float64)
    probabilities = (count - 1) / (sizes * (count - sizes))
    pairs = (samples + 1) // 2
    k = torch.multinomial(probabilities, pairs, replacement=True, generator=gen) + 1
    ranks = torch.rand(pairs, count, generator=gen).argsort(1).argsort(1)
    drawn = ranks < k[:, None]
    return torch.stack([drawn, ~drawn], dim=1).reshape(2 * pairs, count)[:samples]


def kernel_shap(coalitions: torch.Tensor, values: torch.Tensor, empty: float, full: float) -> torch.Tensor:
    """Shapley values by the Kernel SHAP regression (Lundberg and Lee 2017) on sampled coalitions.

    Least squares of v(z) - v(empty) on z with the constraint sum(phi) = v(full) - v(empty),
    imposed by eliminating the last value: phi_M = delta - sum of the others.
    """
    z = coalitions.double().cpu()
    count = z.shape[1]
    delta = full - empty
    if count == 1:
        return torch.tensor([delta], dtype=torch.float64)
    target = values.double().cpu() - empty - z[:, -1] * delta
    design = z[:, :-1] - z[:, -1:]
    solution = torch.linalg.lstsq(design, target[:, None], driver="gelsd").solution[:, 0]
    return torch.cat([solution, (delta - solution.sum())[None]])
