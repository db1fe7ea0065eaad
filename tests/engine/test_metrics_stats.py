"""Known answers for the study's statistics (bootstrap, Holm, Wilcoxon pairs) and for ROAD's
noisy linear imputation and curves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import wilcoxon
from torch import nn

from engine.core.errors import UserError
from engine.metrics.road import linear_impute, noisy_linear_impute, road
from engine.metrics.significance import bootstrap_interval, compare_methods, holm


def test_holm_on_known_p_values():
    # sorted: 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, 0.005]), [0.03, 0.06, 0.06, 0.02])
    np.testing.assert_allclose(holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    assert holm([]).size == 0
    with pytest.raises(UserError):
        holm([0.2, 1.5])


def test_bootstrap_interval_covers_the_true_mean_in_a_seeded_sample():
    sample = np.random.default_rng(3).normal(3.0, 2.0, 200)
    low, high = bootstrap_interval(sample, seed=1)
    assert low < 3.0 < high
    # The width is that of the normal-theory interval, 2 x 1.96 sigma / sqrt(n), within 15%.
    assert abs((high - low) - 2 * 1.96 * sample.std() / np.sqrt(sample.size)) < 0.15 * (high - low)
    assert bootstrap_interval(sample, seed=1) == (low, high)  # seeded: reproducible
    assert bootstrap_interval([1.0]) is None and bootstrap_interval([None, np.nan, 2.0]) is None


def test_bootstrap_coverage_is_near_95_percent():
    rng = np.random.default_rng(0)
    hits = 0
    for trial in range(200):
        low, high = bootstrap_interval(rng.exponential(1.0, 40), resamples=500, seed=trial)
        hits += low <= 1.0 <= high
    assert 0.86 <= hits / 200 <= 0.99  # the percentile bootstrap undercovers a little on skewed data


def test_pairwise_wilcoxon_is_holm_corrected_and_says_which_method_is_better():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, 30)
    values = {"a": base, "b": base + 0.1 + rng.normal(0, 0.01, 30), "c": base + rng.normal(0, 0.05, 30)}
    rows = {(r.a, r.b): r for r in compare_methods(values, "deletion_auc")}
    raw = [wilcoxon(values[a] - values[b]).pvalue for a, b in rows]
    np.testing.assert_allclose([r.p_value for r in rows.values()], raw)
    np.testing.assert_allclose([r.p_holm for r in rows.values()], holm(raw))
    assert rows["a", "b"].holds and rows["a", "b"].better == "a"  # lower deletion AUC is better
    assert rows["b", "c"].holds and rows["b", "c"].better == "c"
    assert not rows["a", "c"].holds and rows["a", "c"].better is None
    flipped = {(r.a, r.b): r for r in compare_methods(values, "insertion_auc")}
    assert flipped["a", "b"].better == "b"  # higher insertion AUC is better


def test_identical_methods_do_not_differ_and_missing_values_are_left_out():
    same = compare_methods({"a": [0.1, 0.2, 0.3], "b": [0.1, 0.2, 0.3]}, "iou")
    assert same[0].p_value == 1.0 and not same[0].holds
    partial = compare_methods({"a": [0.1, None, 0.3, 0.5], "b": [0.2, 0.4, np.nan, 0.6]}, "iou")
    assert partial[0].n == 2
    with pytest.raises(UserError, match="same images"):
        compare_methods({"a": [0.1, 0.2], "b": [0.1]}, "iou")


def ramp(channels: int = 2, size: int = 12) -> np.ndarray:
    rows, cols = np.mgrid[0:size, 0:size].astype(float)
    return np.stack([0.3 * rows - 0.7 * cols + 2.0 + k for k in range(channels)])


def test_linear_imputation_recovers_a_linear_ramp():
    # The 8-neighbour weighted mean of a linear function is its value at the centre, so removing
    # any interior pixels (clusters included) must give the ramp back exactly.
    image = ramp()
    removed = np.zeros((12, 12), dtype=bool)
    removed[1:-1, 1:-1] = np.random.default_rng(0).random((10, 10)) < 0.6
    removed[4:8, 4:8] = True  # a solid block: its centre has no known neighbour
    out = linear_impute(image, removed)
    np.testing.assert_allclose(out, image, atol=1e-10)
    assert not np.shares_memory(out, image)


def test_imputation_is_the_neighbour_mean_and_the_noise_has_its_size():
    image = np.zeros((1, 5, 5))
    image[0, 1:4, 1:4] = [[1, 2, 3], [4, 0, 6], [7, 8, 9]]
    removed = np.zeros((5, 5), dtype=bool)
    removed[2, 2] = True
    expected = (2 + 4 + 6 + 8) / 6 + (1 + 3 + 7 + 9) / 12  # weights 1/6 and 1/12 sum to 1
    assert linear_impute(image, removed)[0, 2, 2] == pytest.approx(expected)
    big = np.zeros((1, 64, 64))
    holes = np.random.default_rng(1).random((64, 64)) < 0.5
    noisy = noisy_linear_impute(big, holes, noise=0.1, rng=np.random.default_rng(2))
    assert noisy[0, holes].std() == pytest.approx(0.1, rel=0.05) and np.all(noisy[0, ~holes] == 0)
    with pytest.raises(UserError, match="every pixel"):
        linear_impute(big, np.ones((64, 64), dtype=bool))


class SpotModel(nn.Module):
    """logit 0 = the sum of the image over a small spot, logit 1 = 0."""

    def __init__(self, size: int = 16) -> None:
        super().__init__()
        self.weight = torch.zeros(1, 1, size, size)
        self.weight[..., 6:9, 6:9] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = (x * self.weight).flatten(1).sum(1)
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def test_road_morf_removes_the_spot_first_and_lerf_keeps_it():
    model, size = SpotModel(), 16
    image = torch.zeros(1, 1, size, size)
    image[..., 7, 7] = 9.0  # a bright pixel inside the spot, on a flat background
    saliency = np.zeros((size, size))
    saliency[7, 7] = 1.0  # the map points at it
    curves = road(model, image, saliency, target=0, fractions=(0.1, 0.3), noise=0.0, output="logit")
    assert curves.original_score == pytest.approx(9.0)
    # MoRF removes the bright pixel first; its neighbours are all 0, so the logit drops to 0.
    np.testing.assert_allclose(curves.morf, [0.0, 0.0], atol=1e-9)
    # LeRF removes the last pixels in the (tied) order, the bottom rows, far from the spot: their
    # imputation from flat neighbours changes nothing.
    np.testing.assert_allclose(curves.lerf, [9.0, 9.0], atol=1e-6)
    assert curves.morf_mean < curves.lerf_mean


def test_road_on_a_ramp_changes_nothing_without_noise():
    image = torch.from_numpy(ramp(1, 16)).float().unsqueeze(0)
    saliency = np.random.default_rng(0).random((16, 16))
    saliency[0, :] = saliency[-1, :] = saliency[:, 0] = saliency[:, -1] = 2.0  # the border is kept out of LeRF's removals ...
    curves = road(SpotModel(), image, saliency, target=0, fractions=(0.2, 0.4), noise=0.0, output="logit")
    np.testing.assert_allclose(curves.lerf, curves.original_score, rtol=1e-5)  # ... so the ramp is recovered
    with pytest.raises(UserError, match="between 0 and 1"):
        road(SpotModel(), image, saliency, fractions=(0.0, 0.5))
