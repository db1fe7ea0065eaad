"""The pieces of kernelshap: coalitions and the Shapley-value solvers (its segments come from
``_image_regions``, shared with the Sobol map)."""

from __future__ import annotations

import math

import torch

from engine.methods._image_regions import grid_labels as grid_segments
from engine.methods._image_regions import slic_labels as slic_segments

__all__ = ["EXACT_MAX_SEGMENTS", "bits", "exact_shapley", "grid_segments", "kernel_shap", "sample_coalitions", "slic_segments"]

EXACT_MAX_SEGMENTS = 12  # up to here all 2^M coalitions are evaluated and the values are exact


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
