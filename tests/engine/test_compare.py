"""Agreement measures between maps, against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from engine import UserError
from engine.metrics.agreement import agreement, pairwise_agreement, spearman, top_iou, top_mask


def test_spearman_of_monotone_transforms_is_one_and_of_reversal_minus_one():
    a = np.arange(16, dtype=np.float32).reshape(4, 4)
    assert spearman(a, np.exp(a)) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)


def test_spearman_matches_the_textbook_formula_without_ties():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    rank_a = np.argsort(np.argsort(a.ravel()))
    rank_b = np.argsort(np.argsort(b.ravel()))
    n = a.size
    expected = 1 - 6 * np.sum((rank_a - rank_b) ** 2) / (n * (n**2 - 1))
    assert spearman(a, b) == pytest.approx(expected)


def test_constant_map_has_no_rank_correlation():
    assert math.isnan(spearman(np.ones((3, 3)), np.arange(9.0).reshape(3, 3)))


def test_top_iou_by_hand():
    a = np.array([[9, 8, 0, 0], [0, 0, 0, 0]], dtype=float)  # top 25% = 2 pixels: (0,0), (0,1)
    b = np.array([[9, 0, 8, 0], [0, 0, 0, 0]], dtype=float)  # top 2: (0,0), (0,2)
    assert top_iou(a, b, 25) == pytest.approx(1 / 3)
    assert top_iou(a, a, 25) == 1.0


@given(arrays(np.float64, (6, 7), elements=st.floats(-10, 10)), st.floats(1, 100))
def test_top_mask_always_holds_the_ceiling_count(values, percent):
    assert top_mask(values, percent).sum() == math.ceil(42 * percent / 100)


def test_agreement_on_signed_maps_and_magnitudes():
    a = np.array([[1.0, -5.0], [2.0, 0.5]])
    result = agreement(a, -a, 25)
    assert result["spearman"] == pytest.approx(-1.0)
    assert result["spearman_abs"] == pytest.approx(1.0)
    assert result["iou_top25_abs"] == 1.0 and result["iou_top25"] == 0.0


def test_pairwise_lists_every_pair_once():
    maps = {"x": np.random.rand(4, 4), "y": np.random.rand(4, 4), "z": np.random.rand(4, 4)}
    assert [(p["a"], p["b"]) for p in pairwise_agreement(maps)] == [("x", "y"), ("x", "z"), ("y", "z")]


def test_mismatched_shapes_are_refused():
    with pytest.raises(UserError, match="different shapes"):
        spearman(np.zeros((2, 2)), np.zeros((3, 3)))
