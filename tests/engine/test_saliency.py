"""Saliency against analytic gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import engine
from engine import UserError
from tests.models import LinearModel


@pytest.fixture
def linear():
    return LinearModel(channels=3, size=8, classes=4, seed=3)


def test_maxabs_equals_largest_absolute_weight_over_channels(linear):
    x = torch.rand(3, 8, 8)
    result = engine.explain(linear, x, "saliency", target=1, params={"reduce": "maxabs"})
    expected = linear.weight_image(1).abs().amax(0).numpy()
    np.testing.assert_allclose(result.map, expected, rtol=1e-6, atol=1e-7)
    assert result.target == 1


def test_signed_sum_equals_channel_sum_of_weights(linear):
    result = engine.explain(linear, torch.rand(3, 8, 8), "saliency", target=2, params={"reduce": "sum"})
    np.testing.assert_allclose(result.map, linear.weight_image(2).sum(0).numpy(), rtol=1e-6, atol=1e-6)
    assert result.map.min() < 0 < result.map.max()
    assert result.signed


def test_probability_gradient_matches_softmax_formula(linear):
    # d p_c / d x = p_c (W_c - sum_k p_k W_k) for p = softmax(W x + b).
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(5))
    target = 0
    result = engine.explain(linear, x, "saliency", target=target, params={"reduce": "sum", "output": "probability"})
    with torch.no_grad():
        p = torch.softmax(linear(x.unsqueeze(0))[0], 0).double()
        weights = linear.linear.weight.double()
        gradient = p[target] * (weights[target] - (p[:, None] * weights).sum(0))
    np.testing.assert_allclose(result.map, gradient.view(3, 8, 8).sum(0).numpy(), rtol=1e-4, atol=1e-7)
    assert result.target_probability == pytest.approx(float(p[target]), rel=1e-5)


def test_log_probability_gradient_matches_formula(linear):
    # d log p_c / d x = W_c - sum_k p_k W_k.
    x = torch.rand(3, 8, 8)
    result = engine.explain(linear, x, "saliency", target=3, params={"reduce": "sum", "output": "log_probability"})
    with torch.no_grad():
        p = torch.softmax(linear(x.unsqueeze(0))[0], 0)
        gradient = linear.linear.weight[3] - (p[:, None] * linear.linear.weight).sum(0)
    np.testing.assert_allclose(result.map, gradient.view(3, 8, 8).sum(0).numpy(), rtol=1e-4, atol=1e-6)


def test_predicted_class_is_the_default_target(linear):
    x = torch.rand(3, 8, 8)
    predicted = int(linear(x.unsqueeze(0)).argmax())
    result = engine.explain(linear, x, "saliency")
    np.testing.assert_allclose(result.map, linear.weight_image(predicted).abs().amax(0).numpy(), rtol=1e-6)


def test_parameters_given_as_strings_are_parsed_and_checked(linear):
    assert engine.explain(linear, torch.rand(3, 8, 8), params={"reduce": "sum"}).params.reduce == "sum"
    with pytest.raises(UserError, match="must be one of maxabs, sum"):
        engine.explain(linear, torch.rand(3, 8, 8), params={"reduce": "median"})
    with pytest.raises(UserError, match="unknown parameter"):
        engine.explain(linear, torch.rand(3, 8, 8), params={"smoothing": "3"})


def test_the_model_is_not_changed_and_needs_no_grad_setup(linear):
    for p in linear.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in linear.state_dict().items()}
    engine.explain(linear, torch.rand(3, 8, 8))
    assert all(torch.equal(before[k], v) for k, v in linear.state_dict().items())
    assert all(p.grad is None for p in linear.parameters())
