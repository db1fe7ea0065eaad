"""The one Gaussian blur equals scipy's reference filter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from engine.io.blur import gaussian_blur


@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.5, 7.0])
def test_blur_equals_scipy_gaussian_filter_with_nearest_edges(sigma):
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 17, 23, generator=generator, dtype=torch.float64)
    expected = gaussian_filter(x.numpy(), sigma=(0, 0, sigma, sigma), mode="nearest", truncate=3.0)
    np.testing.assert_allclose(gaussian_blur(x, sigma).numpy(), expected, atol=1e-12)


def test_blur_keeps_constants_and_mass_and_ignores_a_zero_sigma():
    constant = torch.full((1, 1, 9, 9), 0.3)
    torch.testing.assert_close(gaussian_blur(constant, 4.0), constant)
    impulse = torch.zeros(1, 1, 31, 31, dtype=torch.float64)
    impulse[0, 0, 15, 15] = 1.0
    assert float(gaussian_blur(impulse, 2.0).sum()) == pytest.approx(1.0, abs=1e-12)
    assert gaussian_blur(impulse, 0.0) is impulse
