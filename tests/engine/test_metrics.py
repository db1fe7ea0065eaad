"""Explanation quality metrics: localisation, deletion and insertion, the randomisation sanity check.

Known answers first: a map equal to the mask, a perfect map of a model that only sees one region,
a map that ignores the model (an edge detector).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from engine import Cancelled, CancelToken, UserError, explain
from engine.metrics import (
    cascading_randomisation,
    deletion_insertion,
    energy_in_mask,
    evaluate_map,
    explain_fn_for,
    localisation_scores,
    make_baseline,
    parameter_layers,
    pointing_game,
    step_counts,
    summarise_localisation,
    top_iou_with_mask,
    trapezoid_auc,
)
from tests.models import region_model, tiny_cnn


def box_mask(shape=(20, 20), rows=(4, 10), cols=(6, 14)) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    return mask


def dumps(result) -> str:
    """The result must survive strict JSON (no NaN)."""
    return json.dumps(result.to_dict(), allow_nan=False)


# ---------------------------------------------------------------- localisation


def test_a_map_equal_to_the_mask_scores_perfectly():
    mask = box_mask()
    scores = localisation_scores(mask.astype(np.float32), mask)
    assert scores.pointing_hit is True
    assert scores.energy == pytest.approx(1.0)
    assert scores.iou == pytest.approx(1.0)  # q defaults to the mask's share of the image
    assert scores.top_percent == pytest.approx(100 * mask.mean())
    assert top_iou_with_mask(mask.astype(float), mask, top_percent=100 * mask.mean()) == pytest.approx(1.0)
    dumps(scores)


def test_a_map_whose_maximum_is_outside_the_mask_misses():
    mask = box_mask()
    values = mask.astype(float)
    values[0, 0] = 2.0
    assert pointing_game(values, mask) is False
    assert localisation_scores(values, mask).pointing_hit is False


def test_pointing_game_tolerance_at_the_boundary():
    mask = box_mask(cols=(10, 14))  # rows 4..9, columns 10..13
    values = np.zeros((20, 20))
    values[5, 7] = 1.0  # three pixels left of the mask
    assert pointing_game(values, mask, tolerance=0) is False
    assert pointing_game(values, mask, tolerance=2.99) is False
    assert pointing_game(values, mask, tolerance=3.0) is True
    values = np.zeros((20, 20))
    values[1, 6] = 1.0  # nearest mask pixel (4, 10): Euclidean distance 5
    assert pointing_game(values, mask, tolerance=4.9) is False
    assert pointing_game(values, mask, tolerance=5.0) is True


def test_pointing_game_ties():
    mask = box_mask()
    flat = np.ones((20, 20))
    assert pointing_game(flat, mask, ties="all") is False  # a flat map cannot win by luck
    assert pointing_game(flat, mask, ties="any") is True
    assert pointing_game(flat, mask, ties="first") is False  # pixel (0, 0) is outside
    scores = localisation_scores(flat, mask)
    assert scores.n_maxima == 400 and scores.pointing_fraction == pytest.approx(mask.mean())
    with pytest.raises(UserError):
        pointing_game(flat, mask, ties="sometimes")


def test_energy_ignores_negative_values():
    mask = box_mask()
    values = np.where(mask, 1.0, -5.0)
    assert energy_in_mask(values, mask) == pytest.approx(1.0)
    values[0, 0] = 1.0
    assert energy_in_mask(values, mask) == pytest.approx(mask.sum() / (mask.sum() + 1))
    assert np.isnan(energy_in_mask(-np.ones((20, 20)), mask))  # no positive mass at all


def test_random_maps_score_near_chance():
    mask = box_mask((32, 32), (3, 17), (5, 20))
    rng = np.random.default_rng(0)
    scores = [localisation_scores(rng.random((32, 32)), mask) for _ in range(200)]
    summary = summarise_localisation(scores)
    assert summary["mean_energy"] == pytest.approx(mask.mean(), abs=0.01)
    assert summary["mean_iou"] == pytest.approx(scores[0].iou_chance, abs=0.02)
    assert summary["pointing_accuracy"] == pytest.approx(mask.mean(), abs=0.1)


def test_empty_masks_are_not_scored():
    empty = np.zeros((20, 20), dtype=bool)
    values = np.random.default_rng(0).random((20, 20))
    scores = localisation_scores(values, empty)
    assert scores.pointing_hit is None and scores.energy is None and scores.iou is None
    assert "not scored" in scores.note and not scores.scored
    assert pointing_game(values, empty) is None and energy_in_mask(values, empty) is None and top_iou_with_mask(values, empty) is None
    summary = summarise_localisation([scores, localisation_scores(box_mask().astype(float), box_mask())])
    assert summary["n_scored"] == 1 and summary["n_skipped"] == 1 and summary["pointing_accuracy"] == 1.0
    dumps(scores)


def test_localisation_rejects_bad_input():
    with pytest.raises(UserError):
        localisation_scores(np.zeros((4, 4)), np.zeros((5, 5), dtype=bool))
    with pytest.raises(UserError):
        localisation_scores(np.zeros((4, 4)), np.full((4, 4), 2))
    with pytest.raises(UserError):
        localisation_scores(np.full((4, 4), np.nan), np.ones((4, 4), dtype=bool))


# ---------------------------------------------------------------- deletion and insertion


def confident_region_model():
    """RegionModel with a sharpened classifier, so that deleting the region moves the probability a lot."""
    model = region_model()
    with torch.no_grad():
        model.classifier.weight.mul_(20.0)
    return model


@pytest.fixture(scope="module")
def region_setup():
    model = confident_region_model()
    x = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(3)) * 2
    return model, x, model.region_mask().numpy().astype(np.float32)


def probability(model, image, target):
    with torch.no_grad():
        return float(torch.softmax(model(image[None] if image.ndim == 3 else image), 1)[0, target])


def test_trapezoid_auc_by_hand():
    assert trapezoid_auc([0, 0.5, 1], [1, 0.5, 0]) == pytest.approx(0.5)
    assert trapezoid_auc([0, 0.5, 1], [1, 1, 0]) == pytest.approx(0.75)
    assert trapezoid_auc([0, 0.25, 1], [0, 1, 1]) == pytest.approx(0.125 + 0.75)
    with pytest.raises(UserError):
        trapezoid_auc([1, 0], [0, 1])


def test_step_counts_cover_zero_to_all_pixels():
    assert step_counts(256, 32).tolist() == list(range(0, 257, 8))
    counts = step_counts(10, 3)
    assert counts[0] == 0 and counts[-1] == 10 and len(counts) == 4 and np.all(np.diff(counts) > 0)


@pytest.mark.parametrize("baseline", ["zero", "blur"])
def test_a_perfect_map_beats_random_maps(region_setup, baseline):
    model, x, region = region_setup
    perfect = deletion_insertion(model, x, region, steps=32, baseline=baseline)
    rng = np.random.default_rng(0)
    random = [deletion_insertion(model, x, rng.random((16, 16)), target=perfect.target, steps=32, baseline=baseline) for _ in range(4)]
    gap = perfect.original_score - perfect.baseline_score
    assert gap > 0.2  # the setup deletes real evidence
    # A random map spreads the 36 region pixels over the whole curve, the perfect map changes them first.
    assert perfect.deletion.auc < np.mean([r.deletion.auc for r in random]) - 0.2 * gap
    assert perfect.insertion.auc > np.mean([r.insertion.auc for r in random]) + 0.2 * gap
    # The region is 36 of 256 pixels: after deleting 40 of them nothing the model sees is left.
    assert perfect.deletion.scores[5:] == pytest.approx(np.full(28, perfect.baseline_score), abs=1e-5)


@pytest.mark.parametrize("baseline", ["zero", "blur"])
def test_curves_run_between_the_image_and_the_baseline(region_setup, baseline):
    model, x, region = region_setup
    result = deletion_insertion(model, x, region, steps=16, baseline=baseline)
    base = make_baseline(x[None], baseline)
    p_image, p_base = probability(model, x, result.target), probability(model, base, result.target)
    assert result.target == int(model(x[None]).argmax())
    for curve in (result.deletion, result.insertion):
        assert len(curve.fractions) == len(curve.scores) == 17
        assert curve.fractions[0] == 0 and curve.fractions[-1] == 1
        assert curve.auc == pytest.approx(trapezoid_auc(curve.fractions, curve.scores))
    assert result.deletion.scores[0] == pytest.approx(p_image, abs=1e-6)
    assert result.deletion.scores[-1] == pytest.approx(p_base, abs=1e-6)
    assert result.insertion.scores[0] == pytest.approx(p_base, abs=1e-6)
    assert result.insertion.scores[-1] == pytest.approx(p_image, abs=1e-6)
    dumps(result)


def test_curves_do_not_depend_on_the_batch_size(region_setup):
    model, x, _ = region_setup
    values = np.random.default_rng(1).normal(size=(16, 16))
    reference = deletion_insertion(model, x, values, steps=20, batch_size=64)
    for batch_size in (1, 7):
        other = deletion_insertion(model, x, values, steps=20, batch_size=batch_size)
        np.testing.assert_allclose(other.deletion.scores, reference.deletion.scores, atol=1e-6)
        np.testing.assert_allclose(other.insertion.scores, reference.insertion.scores, atol=1e-6)


class OutOfMemoryAbove(nn.Module):
    """Raises CUDA's out-of-memory error for batches larger than ``limit``."""

    def __init__(self, inner: nn.Module, limit: int = 4) -> None:
        super().__init__()
        self.inner, self.limit = inner, limit

    def forward(self, x):
        if x.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return self.inner(x)


def test_out_of_memory_halves_the_batch_and_gives_the_same_curve(region_setup):
    model, x, region = region_setup
    reference = deletion_insertion(model, x, region, steps=20, batch_size=4)
    result = deletion_insertion(OutOfMemoryAbove(model), x, region, steps=20, batch_size=32)
    assert result.batch_size_used == 4
    np.testing.assert_allclose(result.deletion.scores, reference.deletion.scores, atol=1e-6)
    np.testing.assert_allclose(result.insertion.scores, reference.insertion.scores, atol=1e-6)


def test_progress_rises_to_one_and_cancel_stops_within_a_batch(region_setup):
    model, x, region = region_setup
    seen = []
    deletion_insertion(model, x, region, steps=16, batch_size=8, progress=lambda f, m: seen.append(f))
    assert seen[-1] == 1.0 and seen == sorted(seen)

    token = CancelToken()
    calls = []

    def cancel_after_first_batch(fraction, message):
        if message.startswith("perturbed"):
            calls.append(fraction)
            token.cancel()

    with pytest.raises(Cancelled):
        deletion_insertion(model, x, region, steps=16, batch_size=8, progress=cancel_after_first_batch, cancel=token)
    assert len(calls) == 1


def test_one_curve_only_and_input_errors(region_setup):
    model, x, region = region_setup
    result = deletion_insertion(model, x, region, steps=8, curves=("insertion",), baseline="zero")
    assert result.deletion is None and len(result.insertion.scores) == 9 and result.forward_passes == 9 + 2
    for kwargs in ({"steps": 0}, {"steps": 257}, {"baseline": "noise"}, {"curves": ("sideways",)}, {"output": "energy"}):
        with pytest.raises(UserError):
            deletion_insertion(model, x, region, **kwargs)
    with pytest.raises(UserError):
        deletion_insertion(model, x, region[:8])


def test_evaluate_map_scores_an_explanation_both_ways(region_setup):
    model, x, region = region_setup
    explanation = explain(model, x, "saliency", target=1)
    evaluation = evaluate_map(explanation, mask=region.astype(bool), model=model, inputs=x, steps=8)
    assert evaluation.faithfulness.target == 1  # the explanation's target
    assert evaluation.localisation.energy > 0.9  # saliency of a model that sees only the region
    data = json.loads(dumps(evaluation))
    assert set(data) == {"localisation", "faithfulness"} and len(data["faithfulness"]["deletion"]["scores"]) == 9
    assert evaluate_map(region, mask=region.astype(bool)).faithfulness is None
    with pytest.raises(UserError):
        evaluate_map(region)
    with pytest.raises(UserError):
        evaluate_map(region, model=model)


# ---------------------------------------------------------------- sanity check


@pytest.fixture(scope="module")
def cnn_setup():
    return tiny_cnn(seed=0), torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(0))


def test_layers_are_listed_from_the_output_down(cnn_setup):
    model, x = cnn_setup
    assert parameter_layers(model, x) == [["classifier"], ["features.2"], ["features.0"]]
    assert parameter_layers(model, x, group="block") == [["classifier"], ["features.2", "features.0"]]
    assert parameter_layers(model, x, max_layers=2) == [["classifier", "features.2"], ["features.0"]]
    with pytest.raises(UserError):
        parameter_layers(model, x, group="everything")


def test_saliency_depends_on_the_weights_and_passes(cnn_setup):
    model, x = cnn_setup
    seen = []
    report = cascading_randomisation(model, x, explain_fn_for(x, "saliency"), progress=lambda f, m: seen.append(f), keep_maps=True)
    assert [step.layers for step in report.steps] == [["classifier"], ["features.2"], ["features.0"]]
    assert report.steps[-1].fraction_randomised == 1.0
    assert report.steps[-1].spearman < 0.5 and report.final_correlation < 0.5
    assert report.passed is True and report.verdict.startswith("PASSED")
    assert len(report.maps) == 3 and report.original_map.shape == (16, 16)
    assert seen[-1] == 1.0 and seen == sorted(seen)
    json.loads(dumps(report))


def test_a_map_that_ignores_the_model_fails(cnn_setup):
    model, x = cnn_setup
    edges = np.hypot(*np.gradient(x.mean(0).numpy()))
    report = cascading_randomisation(model, x, lambda model: edges)
    assert all(step.spearman == pytest.approx(1.0) and step.spearman_abs == pytest.approx(1.0) for step in report.steps)
    assert report.passed is False and report.verdict.startswith("FAILED")
    assert cascading_randomisation(model, x, lambda model: edges, threshold=1.0).passed is True  # the threshold is configurable


def test_the_original_model_and_the_global_random_state_are_untouched(cnn_setup):
    model, x = cnn_setup
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng_before = torch.get_rng_state()
    cascading_randomisation(model, x, explain_fn_for(x, "saliency"))
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert torch.equal(torch.get_rng_state(), rng_before)


def test_randomisation_is_seeded(cnn_setup):
    model, x = cnn_setup

    def correlations(seed):
        report = cascading_randomisation(model, x, explain_fn_for(x, "saliency", params={"reduce": "sum"}), seed=seed)
        return [(s.spearman, s.spearman_abs) for s in report.steps]

    assert correlations(3) == correlations(3)
    assert correlations(3) != correlations(4)


def test_sanity_check_options_and_errors(cnn_setup):
    model, x = cnn_setup
    fn = explain_fn_for(x, "saliency")
    report = cascading_randomisation(model, x, fn, layers=[["features.0"]])
    assert len(report.steps) == 1 and report.group == "custom" and report.steps[0].fraction_randomised == pytest.approx(1 / 3)
    assert fn.target == int(model(x[None]).argmax())  # pinned by the original model's prediction
    report = cascading_randomisation(model, x, fn, group="block", max_layers=1)
    assert report.steps[0].layers == ["classifier", "features.2", "features.0"]
    with pytest.raises(UserError):
        cascading_randomisation(model, x, fn, layers=[["nowhere"]])
    with pytest.raises(UserError):
        cascading_randomisation(model, x, fn, threshold=2.0)
    constant = cascading_randomisation(model, x, lambda m: np.ones((16, 16)))
    assert constant.passed is None and "NOT JUDGED" in constant.verdict
    json.loads(dumps(constant))
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        cascading_randomisation(model, x, fn, cancel=token)
