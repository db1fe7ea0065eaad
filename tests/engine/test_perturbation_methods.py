"""Known answers of the black-box perturbation methods: rise, extremal and kernelshap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import engine
from engine import Cancelled, CancelToken, UserError
from engine.core.params import build_params
from engine.io.blur import baseline_image
from engine.methods._kernelshap import exact_shapley, grid_segments
from engine.methods._perturb import generator
from engine.methods.extremal import parse_areas
from engine.methods.rise import RiseParams, _Masks
from tests.models import LinearModel, rectangle_model, tiny_cnn


def _inside_fraction(saliency: np.ndarray, region: torch.Tensor) -> float:
    positive = np.clip(saliency, 0.0, None)
    return float(positive[region.numpy()].sum() / positive.sum())


def _image(size: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))


# --- rise ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_rise_puts_its_mass_inside_the_rectangle_the_model_reads(seed):
    # A mask cell blurs the map by about a cell; the tapered model keeps that blur inside.
    model = rectangle_model(size=48, region=(8, 40, 8, 40), taper=True)
    result = engine.explain(model, _image(48, seed), "rise", params={"masks": 3000, "grid": 8, "output": "logit", "batch_size": 250}, seed=seed)
    assert _inside_fraction(result.map, model.region_mask()) >= 0.9


def test_rise_masks_are_the_papers_upsampled_shifted_grids():
    params = RiseParams(masks=64, grid=5, p=0.3)
    masks = _Masks.draw(params, (20, 23), generator(0, torch.device("cpu")), torch.device("cpu"))
    built = masks.build(0, 64, torch.float32)
    up = torch.nn.functional.interpolate(masks.grids.float()[:, None], size=masks.upsampled_size, mode="bilinear", align_corners=False)[:, 0]
    for i in range(64):
        dy, dx = masks.shifts[i].tolist()
        assert 0 <= dy < masks.cell[0] and 0 <= dx < masks.cell[1]
        torch.testing.assert_close(built[i], up[i, dy : dy + 20, dx : dx + 23], atol=1e-6, rtol=0)
    assert masks.cell == (4, 5) and float(built.min()) >= 0.0 and float(built.max()) <= 1.0


def test_rise_map_does_not_depend_on_the_batch_size():
    model, x = tiny_cnn(), _image(16)
    maps = [engine.explain(model, x, "rise", params={"masks": 50, "grid": 4, "batch_size": b}, seed=2).map for b in (1, 7, 64)]
    np.testing.assert_allclose(maps[0], maps[1], atol=1e-5)
    np.testing.assert_allclose(maps[0], maps[2], atol=1e-5)


def test_rise_centring_changes_the_map_by_the_mean_output_only():
    model, x = LinearModel(3, 8, 4), _image(8)
    centred = engine.explain(model, x, "rise", params={"masks": 400, "grid": 2, "output": "logit"}, seed=1)
    paper = engine.explain(model, x, "rise", params={"masks": 400, "grid": 2, "output": "logit", "center": False}, seed=1)
    coverage = paper.extras["mean_coverage"]  # the paper's map minus the centred one is mean f x coverage / p
    difference = paper.map - centred.map
    assert difference.mean() == pytest.approx(paper.extras["mean_output"] * coverage / 0.5, rel=1e-3)


def test_rise_seed_parameter_fixes_the_masks_whatever_the_run_seed():
    model, x = tiny_cnn(), _image(16)
    first = engine.explain(model, x, "rise", params={"masks": 20, "grid": 4, "seed": 9}, seed=1)
    second = engine.explain(model, x, "rise", params={"masks": 20, "grid": 4, "seed": 9}, seed=2)
    other = engine.explain(model, x, "rise", params={"masks": 20, "grid": 4}, seed=2)
    np.testing.assert_array_equal(first.map, second.map)
    assert not np.array_equal(first.map, other.map)


# --- extremal -----------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["preserve", "delete"])
def test_extremal_mask_lies_inside_the_rectangle_the_model_reads(variant):
    model = rectangle_model(size=48, region=(12, 36, 12, 36))
    params = {"areas": "0.05,0.1", "steps": 100, "step": 4, "blur_sigma": 3.0, "variant": variant}
    result = engine.explain(model, _image(48), "extremal", params=params)
    assert _inside_fraction(result.map, model.region_mask()) >= 0.9
    assert result.extras["masks"].shape == (2, 48, 48)
    np.testing.assert_allclose(result.map, result.extras["masks"].mean(0), atol=1e-6)  # the map is the mean of the masks
    for area, achieved in zip((0.05, 0.1), result.extras["mask_areas"], strict=True):
        assert area - 0.02 <= achieved <= area + 0.08  # the mean of a smooth mask, its soft edges included
    # preserving the mask keeps the output above the blurred image's; deleting it lowers it below f(x)
    extras = result.extras
    if variant == "preserve":
        assert all(out > extras["f_blurred"] for out in extras["final_outputs"])
    else:
        assert all(out < extras["f_x"] for out in extras["final_outputs"])


@pytest.mark.parametrize("text", ["", "0", "1.0", "0.1,abc", "-0.2", "nan"])
def test_extremal_rejects_bad_areas(text):
    with pytest.raises(UserError, match="areas"):
        parse_areas(text)


def test_extremal_reads_several_areas():
    assert parse_areas("0.05, 0.1;0.2") == [0.05, 0.1, 0.2]


# --- kernelshap ---------------------------------------------------------------------------------


def _linear_shapley(model: LinearModel, x: torch.Tensor, target: int, baseline: str, segments: torch.Tensor, count: int) -> np.ndarray:
    b = baseline_image(x[None], baseline, 5.0)[0]
    contribution = (model.weight_image(target) * (x - b)).sum(0).double()
    return torch.zeros(count, dtype=torch.float64).index_add_(0, segments.flatten(), contribution.flatten()).numpy()


@pytest.mark.parametrize("grid,baseline", [(3, "zero"), (2, "mean"), (3, "blur")])
def test_kernelshap_is_exact_on_a_linear_model_with_few_segments(grid, baseline):
    model, x = LinearModel(3, 12, 4), _image(12)
    result = engine.explain(model, x, "kernelshap", params={"segmentation": "grid", "grid": grid, "baseline": baseline})
    segments = grid_segments(12, 12, grid, torch.device("cpu"))
    expected = _linear_shapley(model, x, result.target, baseline, segments, grid * grid)
    assert result.extras["exact"]
    np.testing.assert_allclose(result.extras["segment_values"], expected, atol=1e-4)
    # the map spreads each value evenly over the segment's pixels
    sizes = np.bincount(segments.flatten().numpy())
    np.testing.assert_allclose(result.map, (expected / sizes)[segments.numpy()], atol=1e-5)


@pytest.mark.parametrize("grid,samples", [(4, 60), (6, 200)])
def test_kernelshap_sampling_recovers_a_linear_models_values(grid, samples):
    model, x = LinearModel(3, 12, 4), _image(12, 1)
    result = engine.explain(model, x, "kernelshap", params={"segmentation": "grid", "grid": grid, "samples": samples, "baseline": "zero"})
    segments = grid_segments(12, 12, grid, torch.device("cpu"))
    expected = _linear_shapley(model, x, result.target, "zero", segments, grid * grid)
    assert not result.extras["exact"]
    np.testing.assert_allclose(result.extras["segment_values"], expected, atol=1e-3 * np.abs(expected).max())
    assert abs(result.extras["completeness_gap"]) < 1e-6


def test_exact_shapley_of_a_known_game():
    # v(S) = 1 when players 0 and 1 are both in S (the glove game on 3 players, player 2 a dummy)
    values = torch.tensor([1.0 if (s & 3) == 3 else 0.0 for s in range(8)])
    np.testing.assert_allclose(exact_shapley(values, 3).numpy(), [0.5, 0.5, 0.0])


def test_kernelshap_sampled_values_approach_the_exact_ones_on_a_nonlinear_model():
    model, x = tiny_cnn(), _image(16)
    params = {"segmentation": "grid", "grid": 3, "baseline": "zero"}
    exact = engine.explain(model, x, "kernelshap", params=params).extras["segment_values"]
    # 9 segments are exact by default; sample the same game through the regression instead
    from engine.methods import _kernelshap as ks

    limit = ks.EXACT_MAX_SEGMENTS
    ks.EXACT_MAX_SEGMENTS = 4
    try:
        import engine.methods.kernelshap as kernelshap

        kernelshap.EXACT_MAX_SEGMENTS = 4
        sampled = engine.explain(model, x, "kernelshap", params={**params, "samples": 4000}).extras["segment_values"]
    finally:
        ks.EXACT_MAX_SEGMENTS = limit
        kernelshap.EXACT_MAX_SEGMENTS = limit
    assert np.corrcoef(exact, sampled)[0, 1] > 0.99
    np.testing.assert_allclose(sampled.sum(), exact.sum(), rtol=1e-5)


def test_kernelshap_slic_segments_follow_the_image():
    # two flat halves of different colours: no superpixel straddles the border
    x = torch.zeros(3, 32, 32)
    x[0, :, 16:] = 1.0
    x += 0.01 * _image(32)
    result = engine.explain(tiny_cnn(), x, "kernelshap", params={"n_segments": 8, "samples": 20})
    labels = result.extras["segment_labels"]
    left, right = set(np.unique(labels[:, :16])), set(np.unique(labels[:, 16:]))
    assert not left & right
    assert result.extras["segments"] == len(left | right) >= 2


def test_kernelshap_takes_slics_unconnected_superpixels_when_the_connected_ones_merge():
    # white noise: SLIC's connectivity step merges everything into one superpixel, whose Shapley
    # value would be spread as one constant; without that step the superpixels still split it
    x = torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(0))
    from engine.methods._kernelshap import slic_segments

    assert int(slic_segments(x[None], 20, 10.0).max()) == 0  # the premise: one connected superpixel
    result = engine.explain(tiny_cnn(), x, "kernelshap", params={"n_segments": 20, "samples": 30})
    assert result.extras["segments"] >= 10
    assert any("without the connectivity step" in note for note in result.extras["notes"])
    assert float(result.map.max() - result.map.min()) > 0


def test_kernelshap_uses_the_grid_when_slic_still_finds_a_single_superpixel(monkeypatch):
    import engine.methods.kernelshap as kernelshap

    monkeypatch.setattr(kernelshap, "slic_segments", lambda x, *a, **k: torch.zeros(x.shape[2:], dtype=torch.int64))
    result = engine.explain(tiny_cnn(), _image(16), "kernelshap", params={"n_segments": 20, "grid": 3})
    assert result.extras["segments"] == 9
    assert any("single superpixel" in note and "3 x 3 grid" in note for note in result.extras["notes"])


# --- all three ----------------------------------------------------------------------------------

COST_CASES = [
    ("rise", tiny_cnn, 16, {"masks": 37, "grid": 4}),
    ("extremal", tiny_cnn, 16, {"steps": 5, "areas": "0.1,0.2", "step": 4}),
    ("kernelshap", tiny_cnn, 16, {"segmentation": "grid", "grid": 3}),
    ("kernelshap", tiny_cnn, 16, {"segmentation": "grid", "grid": 4, "samples": 33}),
]


@pytest.mark.parametrize("method,factory,size,params", COST_CASES)
def test_cost_estimate_equals_the_passes_made(method, factory, size, params):
    model = factory()
    calls = []
    model.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape[0]))
    spec = engine.get_method(method)
    result = engine.explain(model, _image(size), method, params=params)
    estimate = spec.estimate(build_params(spec.params_cls, params), size, size)
    assert estimate.forward == result.extras["forward_passes"] == sum(calls)
    assert estimate.backward == result.extras.get("backward_passes", 0)


CANCEL_CASES = [
    ("rise", {"masks": 200, "grid": 4, "batch_size": 10}),
    ("kernelshap", {"segmentation": "grid", "grid": 3, "batch_size": 10}),
    ("extremal", {"steps": 50, "step": 4}),
]


@pytest.mark.parametrize("method,params", CANCEL_CASES)
def test_cancel_during_the_run_stops_it_at_the_next_batch(method, params):
    model, token, reports = tiny_cnn(), CancelToken(), []
    calls = []
    model.register_forward_hook(lambda module, inputs, output: calls.append(1))

    def progress(fraction, message, data=None):
        reports.append(fraction)
        if len(reports) == 3:  # the run has started, then the second batch or step is done
            token.cancel()

    with pytest.raises(Cancelled):
        engine.explain(model, _image(16), method, params=params, progress=progress, cancel=token)
    assert len(calls) <= 4  # the unperturbed forward and at most three batches or steps


def test_methods_are_registered_as_perturbation_methods():
    for name in ("rise", "extremal", "kernelshap"):
        spec = engine.get_method(name)
        assert spec.kind == "perturbation" and not spec.needs_layer
    assert "gradient" in engine.get_method("extremal").summary
