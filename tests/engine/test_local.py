"""Local sensitivity (occlusion and additive finite differences) against known answers and Captum."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from captum.attr import Occlusion
from torch import nn

import engine
from engine import Cancelled, CancelToken, UserError
from engine.io.blur import gaussian_blur
from engine.methods.local import window_starts
from tests.models import LinearModel, region_model, tiny_cnn


def _linear64(seed: int = 3) -> LinearModel:
    return LinearModel(channels=3, size=8, classes=4, seed=seed).double()


def _x(shape=(3, 8, 8), seed=0, dtype=torch.float64) -> torch.Tensor:
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _windows(size: int, k: int, s: int) -> list[tuple[int, int]]:
    """Window extents along one axis, by hand: origins 0, s, 2s, ... while the previous one ended before the border."""
    spans, origin = [], 0
    while origin < size:
        spans.append((origin, min(origin + k, size)))
        if origin + k >= size:
            break
        origin += s
    return spans


def _average_over_windows(value_of, height: int, width: int, k: int, s: int) -> np.ndarray:
    """Numpy loops: each pixel gets the mean of value_of(r0, r1, c0, c1) over the windows covering it."""
    total, count = np.zeros((height, width)), np.zeros((height, width))
    for r0, r1 in _windows(height, k, s):
        for c0, c1 in _windows(width, k, s):
            total[r0:r1, c0:c1] += value_of(r0, r1, c0, c1)
            count[r0:r1, c0:c1] += 1
    return total / count


@pytest.mark.parametrize("size,k,s", [(8, 3, 2), (16, 5, 3), (16, 6, 4), (10, 4, 4), (8, 1, 1), (8, 8, 1)])
def test_window_placement_matches_the_hand_rule(size, k, s):
    assert window_starts(size, k, s) == [a for a, _ in _windows(size, k, s)]


@pytest.mark.parametrize("central", [False, True])
def test_additive_per_pixel_equals_channel_sum_of_weights(central):
    model = _linear64()
    result = engine.explain(model, _x(), "local", target=1, params={"mode": "additive", "window": 1, "central": central, "delta": 0.1})
    np.testing.assert_allclose(result.map, model.weight_image(1).sum(0).numpy(), rtol=1e-5, atol=1e-5)
    assert result.signed


@pytest.mark.parametrize("k", [4, 3])
def test_additive_window_equals_mean_of_weight_sums_over_the_window(k):
    # k = 3 on an 8-pixel side: the last window is cut off at the border to 2 pixels.
    model = _linear64()
    weights = model.weight_image(2).sum(0).numpy().astype(np.float64)
    expected = _average_over_windows(lambda r0, r1, c0, c1: weights[r0:r1, c0:c1].mean(), 8, 8, k, k)
    for central in (False, True):
        result = engine.explain(model, _x(), "local", target=2, params={"mode": "additive", "window": k, "central": central})
        np.testing.assert_allclose(result.map, expected, rtol=1e-5, atol=1e-6)


def test_central_and_forward_differences_agree_on_a_linear_model():
    model, x = _linear64(), _x(seed=1)
    forward = engine.explain(model, x, "local", target=0, params={"mode": "additive", "window": 2, "stride": 1})
    central = engine.explain(model, x, "local", target=0, params={"mode": "additive", "window": 2, "stride": 1, "central": True})
    np.testing.assert_allclose(forward.extras["window_values"], central.extras["window_values"], rtol=1e-6, atol=1e-7)


def test_additive_in_single_precision_is_close_to_the_weights():
    model = LinearModel(channels=3, size=8, classes=4, seed=3)
    result = engine.explain(model, _x(dtype=torch.float32), "local", target=1, params={"mode": "additive", "window": 1, "delta": 0.5})
    np.testing.assert_allclose(result.map, model.weight_image(1).sum(0).numpy(), atol=1e-4)


@pytest.mark.parametrize("k,s", [(3, 2), (4, 4), (2, 1)])
def test_occlusion_with_zero_baseline_removes_the_window_contribution(k, s):
    model, x = _linear64(), _x(seed=2)
    contribution = (model.weight_image(3) * x).sum(0).numpy()  # f(x) - f(x with a window zeroed) = sum over it of W x
    expected = _average_over_windows(lambda r0, r1, c0, c1: contribution[r0:r1, c0:c1].sum(), 8, 8, k, s)
    result = engine.explain(model, x, "local", target=3, params={"window": k, "stride": s, "baseline": "zero"})
    np.testing.assert_allclose(result.map, expected, rtol=1e-5, atol=1e-6)


def test_probability_output_matches_a_hand_softmax():
    model, x = _linear64(), _x(seed=4)
    weights, bias = model.linear.weight.detach().numpy(), model.linear.bias.detach().numpy()
    flat = x.numpy()

    def probability(image):
        z = weights @ image.reshape(-1) + bias
        return np.exp(z - z.max())[0] / np.exp(z - z.max()).sum()

    def drop(r0, r1, c0, c1):
        occluded = flat.copy()
        occluded[:, r0:r1, c0:c1] = 0.0
        return probability(flat) - probability(occluded)

    expected = _average_over_windows(drop, 8, 8, 4, 2)
    result = engine.explain(model, x, "local", target=0, params={"window": 4, "stride": 2, "output": "probability"})
    np.testing.assert_allclose(result.map, expected, rtol=1e-5, atol=1e-8)
    assert result.extras["f_x"] == pytest.approx(probability(flat), rel=1e-9)


def _captum_baseline(x: torch.Tensor, baseline: str, sigma: float):
    if baseline == "zero":
        return 0.0
    if baseline == "mean":
        return x.mean(dim=(2, 3), keepdim=True)
    return gaussian_blur(x, sigma)


CAPTUM_MODELS = {"tiny_cnn": (lambda: tiny_cnn(seed=2).double(), (3, 16, 16)), "linear": (lambda: _linear64(), (3, 8, 8))}


@pytest.mark.parametrize("baseline", ["zero", "mean", "blur"])
@pytest.mark.parametrize("k,s", [(4, 4), (5, 3), (3, 2)])
@pytest.mark.parametrize("name", list(CAPTUM_MODELS))
def test_occlusion_agrees_with_captum(name, k, s, baseline):
    factory, shape = CAPTUM_MODELS[name]
    model, x = factory(), _x(shape, seed=5)
    params = {"window": k, "stride": s, "baseline": baseline, "blur_sigma": 1.5}
    result = engine.explain(model, x, "local", target=1, params=params)
    reference = Occlusion(model).attribute(
        x[None], sliding_window_shapes=(3, k, k), strides=(3, s, s), baselines=_captum_baseline(x[None], baseline, 1.5), target=1, perturbations_per_eval=8
    )
    scale = float(np.abs(result.map).max())
    assert scale > 0
    for channel in range(3):
        np.testing.assert_allclose(result.map, reference[0, channel].numpy(), rtol=0, atol=1e-9 * scale)


def test_occlusion_agrees_with_captum_in_single_precision():
    model, x = tiny_cnn(seed=1), _x((3, 16, 16), seed=6, dtype=torch.float32)
    result = engine.explain(model, x, "local", target=2, params={"window": 6, "stride": 4, "baseline": "mean"})
    reference = Occlusion(model).attribute(x[None], sliding_window_shapes=(3, 6, 6), strides=(3, 4, 4), baselines=x[None].mean((2, 3), keepdim=True), target=2)
    scale = float(np.abs(result.map).max())
    np.testing.assert_allclose(result.map, reference[0, 0].numpy(), rtol=0, atol=1e-4 * scale)


def _uncovered_by_windows_touching(mask: np.ndarray, k: int, s: int) -> np.ndarray:
    """Pixels none of whose covering windows intersect the mask."""
    height, width = mask.shape
    touched = np.zeros_like(mask, dtype=bool)
    for r0, r1 in _windows(height, k, s):
        for c0, c1 in _windows(width, k, s):
            if mask[r0:r1, c0:c1].any():
                touched[r0:r1, c0:c1] = True
    return ~touched


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    out = np.zeros_like(mask)
    for dr in range(-radius, radius + 1):
        for dc in range(-radius, radius + 1):
            out |= np.roll(np.roll(mask, dr, 0), dc, 1)  # the region lies away from the border, so no wrap-around
    return out


REGION_PARAMS = [
    {"window": 4, "stride": 2},
    {"window": 4, "stride": 2, "baseline": "blur", "blur_sigma": 2.0},
    {"mode": "additive", "window": 3, "stride": 2},
    {"mode": "additive", "window": 1, "central": True},
]


@pytest.mark.parametrize("params", REGION_PARAMS)
def test_region_model_map_is_zero_where_no_window_touches_the_region(params):
    model = region_model(seed=1)
    region = model.region_mask().numpy()
    result = engine.explain(model, _x((3, 16, 16), seed=7, dtype=torch.float32), "local", target=0, params=params)
    stride = params.get("stride", params["window"])
    far = _uncovered_by_windows_touching(_dilate(region, 2), params["window"], stride)  # 2 = receptive-field radius of two 3x3 convs
    assert far.any()
    assert np.all(result.map[far] == 0.0)
    assert np.abs(result.map).sum() > 0


@pytest.mark.parametrize("params", [{"window": 1}, {"window": 3, "stride": 1}, {"mode": "additive", "window": 1}, {"mode": "additive", "window": 2, "stride": 1}])
def test_region_model_mass_stays_near_the_region(params):
    model = region_model(seed=2)
    region = model.region_mask().numpy()
    result = engine.explain(model, _x((3, 16, 16), seed=8, dtype=torch.float32), "local", target=1, params=params)
    mass = np.abs(result.map)
    assert mass[_dilate(region, 2)].sum() >= 0.99 * mass.sum() > 0


class Counting(nn.Module):
    """Counts the images it evaluates; optionally fails like a full GPU above a batch size."""

    def __init__(self, inner: nn.Module, fail_above: int | None = None) -> None:
        super().__init__()
        self.inner, self.fail_above, self.images, self.batches = inner, fail_above, 0, []

    def forward(self, x):
        if self.fail_above is not None and x.shape[0] > self.fail_above:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        self.images += x.shape[0]
        self.batches.append(x.shape[0])
        return self.inner(x)


@pytest.mark.parametrize(
    "params,windows,per_window",
    [({"window": 5, "stride": 3}, 25, 1), ({"mode": "additive", "window": 4}, 16, 1), ({"mode": "additive", "window": 4, "central": True}, 16, 2)],
)
def test_forward_passes_count_every_image_evaluated(params, windows, per_window):
    model = Counting(tiny_cnn())
    result = engine.explain(model, _x((3, 16, 16), dtype=torch.float32), "local", params=params)
    assert result.extras["windows"] == windows
    assert result.extras["forward_passes"] == per_window * windows + 1 == model.images
    side = math.isqrt(windows)
    assert result.extras["window_values"].shape == (side, side)


def test_batch_size_does_not_change_the_map():
    model, x = tiny_cnn(seed=3), _x((3, 16, 16), seed=9, dtype=torch.float32)
    maps = [engine.explain(model, x, "local", target=0, params={"window": 3, "stride": 2, "batch_size": b}).map for b in (1, 7, 64)]
    scale = np.abs(maps[0]).max()
    for other in maps[1:]:
        np.testing.assert_allclose(other, maps[0], rtol=0, atol=1e-5 * scale)


def test_out_of_memory_halves_the_batch_and_keeps_the_map():
    x = _x((3, 16, 16), seed=10, dtype=torch.float32)
    params = {"window": 4, "stride": 2, "batch_size": 64}
    plain = engine.explain(tiny_cnn(), x, "local", target=1, params=params)
    wrapped = Counting(tiny_cnn(), fail_above=5)
    result = engine.explain(wrapped, x, "local", target=1, params=params)
    assert result.extras["batch_size_used"] <= 5
    assert max(wrapped.batches) <= 5
    np.testing.assert_allclose(result.map, plain.map, rtol=0, atol=1e-5 * np.abs(plain.map).max())


def test_cancel_between_batches():
    token, calls = CancelToken(), []

    def progress(fraction, message):
        calls.append(fraction)
        if len(calls) == 2:
            token.cancel()

    model = Counting(tiny_cnn())
    with pytest.raises(Cancelled):
        engine.explain(model, _x((3, 16, 16), dtype=torch.float32), "local", params={"window": 2, "batch_size": 4}, progress=progress, cancel=token)
    assert len(calls) == 2 and calls[-1] < 1.0
    assert model.images == 1 + 4  # the unperturbed image and one batch; 64 windows were due


def test_gaussian_blur_keeps_constants_and_spreads_an_impulse_as_a_gaussian():
    constant = torch.full((1, 3, 9, 9), 0.7, dtype=torch.float64)
    torch.testing.assert_close(gaussian_blur(constant, 2.0), constant)
    impulse = torch.zeros(1, 1, 21, 21, dtype=torch.float64)
    impulse[0, 0, 10, 10] = 1.0
    blurred = gaussian_blur(impulse, 1.5)[0, 0].numpy()
    offsets = np.arange(-5, 6)
    g = np.exp(-0.5 * (offsets / 1.5) ** 2)
    g /= g.sum()
    np.testing.assert_allclose(blurred[5:16, 5:16], np.outer(g, g), rtol=1e-12, atol=1e-15)


def test_wrong_parameters_are_user_errors():
    model, x = _linear64(), _x()
    with pytest.raises(UserError, match="larger than the image"):
        engine.explain(model, x, "local", params={"window": 9})
    with pytest.raises(UserError, match="delta"):
        engine.explain(model, x, "local", params={"mode": "additive", "delta": 0})
    with pytest.raises(UserError, match="must be one of"):
        engine.explain(model, x, "local", params={"baseline": "noise"})


def test_stride_larger_than_window_leaves_uncovered_pixels_at_zero():
    model, x = _linear64(), _x(seed=11)
    result = engine.explain(model, x, "local", target=0, params={"window": 1, "stride": 3})
    covered = np.zeros((8, 8), dtype=bool)
    covered[np.ix_([0, 3, 6], [0, 3, 6])] = True
    contribution = (model.weight_image(0) * x).sum(0).numpy()
    np.testing.assert_allclose(result.map[covered], contribution[covered], rtol=1e-6)
    assert np.all(result.map[~covered] == 0.0)
    assert result.extras["windows"] == 9


def test_automatic_batch_size_is_sized_for_the_device():
    from engine.methods.local import automatic_batch_size

    model = LinearModel(3, 8, 4)
    result = engine.explain(model, torch.rand(3, 8, 8), "local", target=0, params={"window": 1})
    assert result.params.batch_size == 0 and result.extras["batch_size_used"] == automatic_batch_size(torch.device("cpu")) == 16
    assert automatic_batch_size(torch.device("cuda", 0)) == 64


def test_memory_budget_caps_the_batch():
    from engine.runtime.batching import batch_for_budget, forward_with_memory_estimate

    model = tiny_cnn()
    x = torch.rand(1, 3, 16, 16)
    _, per_image = forward_with_memory_estimate(model, x)
    # The largest module input plus output: a 3-channel image into an 8-channel map, or 8 into 8.
    largest = max(3 + 8, 8 + 8) * 16 * 16 * 4
    assert per_image == int(1.5 * largest) + 3 * 16 * 16 * 4
    assert batch_for_budget(64, per_image, 10 * per_image) == 10
    assert batch_for_budget(64, per_image, None) == 64 and batch_for_budget(4, per_image, 10**12) == 4
    budget_mb = 1
    result = engine.explain(model, x[0], "local", target=0, params={"window": 2, "memory_budget_mb": budget_mb, "batch_size": 64})
    assert result.extras["batch_size_used"] == min(64, budget_mb * 2**20 // per_image)
    assert result.extras["memory_per_image_mb"] == pytest.approx(per_image / 2**20)
    unlimited = engine.explain(model, x[0], "local", target=0, params={"window": 2, "batch_size": 64})
    np.testing.assert_allclose(result.map, unlimited.map, rtol=1e-5, atol=1e-7)
