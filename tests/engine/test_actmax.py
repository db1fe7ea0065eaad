"""Activation maximisation against answers known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import engine
from engine import Cancelled, CancelToken, UserError
from engine.core.progress import ObjectiveValue
from engine.io.blur import gaussian_blur
from engine.methods._actmax_image import FourierImage, random_rescale, total_variation
from engine.models.layers import default_cam_layer
from tests.models import LinearModel, tiny_cnn

# Display space [0, 1] with the model seeing x - 0.5: the flat start (the mean colour) is the centre.
CENTRED = {"mean": "0.5", "std": "1"}


@pytest.fixture
def linear():
    return LinearModel(channels=3, size=8, classes=4, seed=3)


def _display(x, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)):
    return x * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)


def test_l2_logit_ascent_reaches_the_analytic_optimum(linear):
    # Maximise w.z - lam * mean(z^2) over z = x - 0.5: the optimum is z = n w / (2 lam), inside [0, 1]
    # for this lam; plain gradient ascent contracts towards it by (1 - lr * 2 lam / n) per step.
    lam, n = 2000.0, 3 * 8 * 8
    params = {**CENTRED, "init": "flat", "l2": lam, "optimizer": "sgd", "lr": 0.02, "steps": 60}
    result = engine.explain(linear, torch.zeros(3, 8, 8), "actmax", target=2, params=params)
    change = torch.from_numpy(result.extras["image"]).permute(2, 0, 1) - 0.5
    expected = linear.weight_image(2) * n / (2 * lam)
    np.testing.assert_allclose(change.numpy(), expected.numpy(), atol=1e-5)
    cosine = torch.nn.functional.cosine_similarity(change.flatten(), linear.weight_image(2).flatten(), dim=0)
    assert cosine > 0.999
    np.testing.assert_allclose(result.map, expected.abs().sum(0).numpy(), atol=1e-4)
    curve = result.extras["objective"]
    assert curve.shape == (60, 1) and curve[-1, 0] > curve[0, 0]
    assert result.target == 2


def test_predicted_class_is_the_default_target_and_its_logit_rises():
    model = tiny_cnn(seed=2)
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(1))
    result = engine.explain(model, x, "actmax", params={"steps": 25, "lr": 0.05})
    predicted = int(model(x.unsqueeze(0)).argmax())
    assert result.target == predicted == result.extras["targets"][0]
    curve = result.extras["objective"][:, 0]
    assert curve[-1] > curve[0] + 0.1
    images = result.extras["images"]
    assert images.shape == (1, 16, 16, 3) and images.min() >= 0.0 and images.max() <= 1.0


def test_channel_objective_raises_that_channels_mean_activation():
    model = tiny_cnn(seed=0)
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2))
    params = {"objective": "channel", "layer": "features.2", "channel": 5, "init": "input", "steps": 20, "lr": 0.05}
    result = engine.explain(model, x, "actmax", params=params)
    layer = model.features[:3]
    mean, std = torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1), torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1)
    optimised = (torch.from_numpy(result.extras["image"]).permute(2, 0, 1)[None] - mean) / std
    with torch.no_grad():
        before = float(layer(x[None])[0, 5].mean())
        after = float(layer(optimised)[0, 5].mean())
    assert after > before + 0.2
    assert result.extras["layer"] == "features.2"
    assert result.extras["final_scores"][0, 0] == pytest.approx(after, rel=1e-4, abs=1e-5)
    automatic = engine.explain(model, x, "actmax", params={"objective": "channel", "steps": 1})
    assert automatic.extras["layer"] == default_cam_layer(model, (3, 16, 16))


@pytest.mark.parametrize("row,col", [(-1, -1), (2, 5)])
def test_neuron_objective_changes_only_its_receptive_field(row, col):
    # features.0 is a 3 x 3 convolution with padding 1: neuron (r, c) sees pixels r-1..r+1, c-1..c+1.
    model = tiny_cnn(seed=1)
    x = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(3))
    params = {"objective": "neuron", "layer": "features.0", "channel": 4, "row": row, "col": col, "init": "input", "steps": 5}
    result = engine.explain(model, x, "actmax", params=params)
    r, c = (8, 8) if row < 0 else (row, col)
    inside = np.zeros((16, 16), dtype=bool)
    inside[r - 1 : r + 2, c - 1 : c + 2] = True
    assert result.map[inside].sum() > 0.05
    assert np.all(result.map[~inside] == 0.0)
    with pytest.raises(UserError, match="outside"):
        engine.explain(model, x, "actmax", params={**params, "row": 16, "col": 0})


def test_several_targets_give_one_image_each_and_each_scores_its_own_target_highest(linear):
    params = {**CENTRED, "init": "flat", "targets": "0,2,3", "steps": 30, "lr": 0.05}
    result = engine.explain(linear, torch.rand(3, 8, 8), "actmax", params=params)
    assert result.extras["targets"] == [0, 2, 3] and result.target == 0
    images = torch.from_numpy(result.extras["images"]).permute(0, 3, 1, 2)
    assert images.shape == (3, 3, 8, 8) and result.extras["objective"].shape == (30, 3)
    with torch.no_grad():
        scores = linear(images - 0.5)[:, [0, 2, 3]]
    assert torch.equal(scores.argmax(1), torch.arange(3))
    np.testing.assert_allclose(result.extras["final_scores"], scores.numpy(), rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(result.map, result.extras["change_maps"][0])
    # An explicit target goes first, so the map is for it.
    second = engine.explain(linear, torch.rand(3, 8, 8), "actmax", target=2, params={**params, "steps": 2})
    assert second.extras["targets"] == [2, 0, 3] and second.target == 2
    with pytest.raises(UserError, match="does not exist"):
        engine.explain(linear, torch.rand(3, 8, 8), "actmax", params={**params, "targets": "1,7"})


def test_init_input_change_map_is_the_absolute_change_summed_over_channels(linear):
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(4))
    start = _display(x).permute(1, 2, 0).numpy()
    still = engine.explain(linear, x, "actmax", params={"init": "input", "steps": 1, "lr": 0.0})
    np.testing.assert_allclose(still.extras["image"], start, atol=1e-6)
    assert np.all(still.map == 0.0)
    moved = engine.explain(linear, x, "actmax", params={"init": "input", "steps": 3, "lr": 0.05})
    expected = np.abs(moved.extras["image"] - start).sum(-1)
    np.testing.assert_allclose(moved.map, expected, atol=1e-5)
    np.testing.assert_allclose(moved.extras["change_map"], moved.map)
    assert moved.map.max() > 0.1


def test_fourier_image_is_valid_and_raises_the_objective():
    model = tiny_cnn(seed=0)
    x = torch.rand(3, 16, 16)
    result = engine.explain(model, x, "actmax", target=1, params={"fourier": True, "steps": 30, "lr": 0.5})
    image = result.extras["image"]
    assert image.min() >= 0.0 and image.max() <= 1.0
    curve = result.extras["objective"][:, 0]
    assert curve[-1] > curve[0] + 0.1


def test_fourier_parametrisation_inverts_exactly_and_starts_flat_at_the_mean_colour():
    mean = torch.tensor([0.485, 0.456, 0.406])
    start = torch.rand(2, 3, 11, 9, generator=torch.Generator().manual_seed(5)) * 0.9 + 0.05
    fourier = FourierImage(start, mean)
    with torch.no_grad():
        np.testing.assert_allclose(fourier.image().numpy(), start.numpy(), atol=2e-5)
        fourier.coefficients.zero_()
        flat = fourier.image()
    np.testing.assert_allclose(flat.numpy(), mean.view(1, 3, 1, 1).expand_as(flat).numpy(), atol=1e-6)
    gray = FourierImage(torch.rand(1, 1, 8, 8), torch.tensor([0.5]), noise_std=0.01)
    assert gray.image().shape == (1, 1, 8, 8) and gray.coefficients.requires_grad


def test_same_seed_same_image_different_seed_different_image():
    model = tiny_cnn()
    x = torch.rand(3, 16, 16)
    params = {"init": "noise", "steps": 3, "jitter": 2, "scale": 0.2}
    first = engine.explain(model, x, "actmax", params=params, seed=7)
    again = engine.explain(model, x, "actmax", params=params, seed=7)
    other = engine.explain(model, x, "actmax", params=params, seed=8)
    np.testing.assert_array_equal(first.extras["image"], again.extras["image"])
    np.testing.assert_array_equal(first.map, again.map)
    assert not np.allclose(first.extras["image"], other.extras["image"])


def test_cancel_stops_within_one_step(linear):
    token = CancelToken()
    calls = []

    def progress(fraction, message):
        calls.append(fraction)
        if len(calls) == 3:  # the report after the second step
            token.cancel()

    with pytest.raises(Cancelled):
        engine.explain(linear, torch.rand(3, 8, 8), "actmax", params={"steps": 50}, progress=progress, cancel=token)
    assert len(calls) == 3


def test_every_step_reports_the_explained_units_objective_as_a_typed_payload(linear):
    reports = []

    def progress(fraction, message, data=None):
        if data is not None:
            reports.append((message, data))

    params = {**CENTRED, "targets": "3,1", "steps": 6}
    result = engine.explain(linear, torch.rand(3, 8, 8), "actmax", params=params, progress=progress)
    payloads = [data for _, data in reports]
    assert all(isinstance(data, ObjectiveValue) for data in payloads)
    assert [data.step for data in payloads] == [1, 2, 3, 4, 5, 6]
    # The first unit is the explained one: column 0 of the recorded curve.
    assert [data.value for data in payloads] == result.extras["objective"][:, 0].tolist()
    assert all(data.steps == 6 and data.name == "logit" for data in payloads)
    assert [message for message, _ in reports] == [f"step {k}/6" for k in range(1, 7)]


def test_size_optimises_a_square_image_and_upsamples_the_map():
    model = tiny_cnn()
    result = engine.explain(model, torch.rand(3, 16, 20), "actmax", params={"size": 12, "steps": 3, "init": "input"})
    assert result.map.shape == (16, 20)
    assert result.extras["image"].shape == (12, 12, 3)
    with pytest.raises(UserError, match="does not accept"):
        engine.explain(LinearModel(3, 8, 4), torch.rand(3, 8, 8), "actmax", params={"size": 6, "steps": 2})


def test_mean_and_std_are_checked_and_one_value_serves_a_grayscale_model():
    gray = tiny_cnn(channels=1)
    result = engine.explain(gray, torch.rand(1, 16, 16), "actmax", params={"mean": "0.5", "std": "0.25", "steps": 2, "fourier": True})
    assert result.extras["image"].shape == (16, 16, 1)
    with pytest.raises(UserError, match="3 values but the input has 1 channel"):
        engine.explain(gray, torch.rand(1, 16, 16), "actmax", params={"steps": 1, "mean": "0.4,0.4,0.4"})
    # Left empty, the statistics default to ImageNet's averages for one channel ...
    default = engine.explain(gray, torch.rand(1, 16, 16), "actmax", params={"steps": 1, "lr": 0.0, "init": "flat"})
    np.testing.assert_allclose(default.extras["image"], 0.449, atol=1e-6)
    # ... and to the loaded model's own preprocessing when the model comes from load_model.
    loaded = engine.LoadedModel(gray, "gray", "test", engine.Preprocess(resize=None, crop=None, mean=(0.3,), std=(0.2,), channels=1))
    own = engine.explain(loaded, torch.rand(1, 16, 16), "actmax", params={"steps": 1, "lr": 0.0, "init": "flat"})
    np.testing.assert_allclose(own.extras["image"], 0.3, atol=1e-6)
    assert own.params.mean == "0.3" and own.params.std == "0.2"
    with pytest.raises(UserError, match="std"):
        engine.explain(tiny_cnn(), torch.rand(3, 16, 16), "actmax", params={"std": "0.2,0,0.2", "steps": 1})
    with pytest.raises(UserError, match="comma-separated"):
        engine.explain(tiny_cnn(), torch.rand(3, 16, 16), "actmax", params={"mean": "a,b,c", "steps": 1})


def test_regularisers_run_and_blur_smooths_the_image():
    model = tiny_cnn()
    x = torch.rand(3, 16, 16)
    params = {"steps": 4, "l2": 0.5, "tv": 0.5, "jitter": 3, "scale": 0.3, "blur_every": 2, "blur_sigma": 1.0}
    result = engine.explain(model, x, "actmax", params=params)
    assert np.isfinite(result.map).all() and np.isfinite(result.extras["objective"]).all()
    blurred = engine.explain(model, x, "actmax", params={"steps": 1, "lr": 0.0, "blur_every": 1, "blur_sigma": 1.0})
    start = torch.from_numpy(blurred.extras["start_image"]).permute(2, 0, 1)[None]
    image = torch.from_numpy(blurred.extras["image"]).permute(2, 0, 1)[None]
    assert float(total_variation(image)) < 0.5 * float(total_variation(start))


def test_transform_helpers_keep_the_size_and_constants():
    constant = torch.full((1, 3, 9, 11), 0.3)
    np.testing.assert_allclose(gaussian_blur(constant, 1.5).numpy(), constant.numpy(), atol=1e-6)
    torch.manual_seed(0)
    for _ in range(10):
        assert random_rescale(torch.rand(2, 3, 9, 11), 0.5).shape == (2, 3, 9, 11)


def test_the_model_is_not_changed_and_needs_no_grad_setup(linear):
    for p in linear.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in linear.state_dict().items()}
    engine.explain(linear, torch.rand(3, 8, 8), "actmax", params={"steps": 3})
    assert all(torch.equal(before[k], v) for k, v in linear.state_dict().items())
    model = tiny_cnn()
    engine.explain(model, torch.rand(3, 16, 16), "actmax", params={"steps": 2, "objective": "channel"})
    assert all(p.grad is None for p in model.parameters())
