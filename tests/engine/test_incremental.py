"""Incremental inference for local sensitivity (engine/accel/_incremental.py) against the dense path."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from torch import nn

import engine
from engine.accel._incremental import IncrementalExecutor, Untraceable
from engine.accel._regions import Box, crop, materialise, sliding_axis, union
from engine.methods.local import AUTO_MIN_SPEEDUP
from engine.models.architectures import build_architecture


def _maps(model, x, params, target=None):
    dense = engine.explain(model, x, "local", target=target, params={**params, "engine": "dense"})
    fast = engine.explain(model, x, "local", target=target, params={**params, "engine": "incremental"})
    assert dense.extras["engine"] == "dense"
    return dense, fast


def _assert_same_map(dense, fast, tolerance=1e-4):
    assert fast.extras["engine"] == "incremental", fast.extras.get("notes")
    spread = float(dense.map.max() - dense.map.min())
    assert spread > 0
    assert float(np.abs(fast.map - dense.map).max()) < tolerance * spread


def _image(channels, size, seed=0, dtype=torch.float32):
    return torch.randn((1, channels, size, size), generator=torch.Generator().manual_seed(seed)).to(dtype)


ARCHITECTURES = [
    # name, input size, window, stride: tiny inputs, a few windows, cut off at the border
    ("resnet18", 40, 13, 11),
    ("resnet34", 32, 20, 14),
    ("resnet50", 32, 20, 14),
    ("vgg11", 32, 19, 14),
    ("vgg16", 32, 20, 14),
    ("mobilenet_v2", 32, 13, 11),
    ("densenet121", 32, 20, 14),
    ("sonocnn", 44, 7, 5),
]


@pytest.mark.parametrize("name,size,window,stride", ARCHITECTURES)
def test_equals_dense_on_torchvision_and_demo_architectures(name, size, window, stride):
    channels = 1 if name == "sonocnn" else 3
    model = build_architecture(name, seed=0, in_channels=channels)
    x = _image(channels, size)
    dense, fast = _maps(model, x, {"window": window, "stride": stride})
    _assert_same_map(dense, fast)
    assert fast.extras["window_values"].shape == dense.extras["window_values"].shape


def _resnet18():
    return build_architecture("resnet18", seed=0)


def test_equals_dense_for_central_differences_on_a_resnet():
    params = {"mode": "additive", "delta": 0.5, "central": True, "window": 12, "stride": 10}
    dense, fast = _maps(_resnet18(), _image(3, 27, seed=1), params, target=3)
    _assert_same_map(dense, fast)


@pytest.mark.parametrize("central", [False, True])
def test_additive_maps_at_the_default_delta_are_as_accurate_as_the_dense_ones(central):
    """At delta 0.1 the finite differences amplify float32 rounding of f(x +- delta) by 1 / delta.

    The dense float32 map then moves with the batch size alone, by as much as the incremental map
    differs from it; what matters is the distance to the float64 map, which must be of the same
    size for both paths (measured here: 2e-5 - 9e-5 of the range for both, at 64 and 96 px).
    """
    model, x = _resnet18(), _image(3, 64, seed=1)
    params = {"mode": "additive", "delta": 0.1, "central": central, "window": 16, "stride": 8}
    dense, fast = _maps(model, x, params, target=3)
    assert fast.extras["engine"] == "incremental", fast.extras.get("notes")
    single = engine.explain(model, x, "local", target=3, params={**params, "engine": "dense", "batch_size": 1})
    exact = engine.explain(model.double(), x.double(), "local", target=3, params={**params, "engine": "dense"})
    spread = float(exact.map.max() - exact.map.min())
    error = {name: float(np.abs(m.map - exact.map).max()) / spread for name, m in (("dense", dense), ("single", single), ("incremental", fast))}
    # Both float32 paths are close to the exact map, and the incremental one no further than the dense noise.
    assert max(error.values()) < 3e-4, error
    assert error["incremental"] <= 3 * max(error["dense"], error["single"]), error
    # The dense map's own batch-size noise is of the size of the incremental-dense difference.
    noise = float(np.abs(single.map - dense.map).max()) / spread
    assert float(np.abs(fast.map - dense.map).max()) / spread <= 3 * noise, (error, noise)


@pytest.mark.parametrize(
    "params",
    [
        {"mode": "occlusion", "baseline": "zero", "window": 5, "stride": 3},
        {"mode": "occlusion", "baseline": "mean", "window": 8, "stride": 8},
        {"mode": "occlusion", "baseline": "blur", "blur_sigma": 2.0, "window": 7, "stride": 4},
        {"mode": "additive", "delta": 0.5, "window": 6, "stride": 5},
        {"mode": "additive", "delta": 0.5, "central": True, "window": 9, "stride": 6},
        {"mode": "occlusion", "window": 4, "stride": 6},  # stride beyond the window: pixels never covered
        {"mode": "occlusion", "window": 1, "stride": 5},
    ],
)
def test_equals_dense_for_every_mode_and_baseline(params):
    model = build_architecture("sonocnn", seed=0, in_channels=3)
    dense, fast = _maps(model, _image(3, 29, seed=1), params, target=2)
    _assert_same_map(dense, fast)


class _Dilated(nn.Module):
    """Strided and dilated convolutions, padded pooling (max with ceil mode, average counting the
    padding), and a residual whose branches have different halos (3x3 dilated 2 vs 1x1)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 5, stride=2, padding=3)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True)
        self.wide = nn.Sequential(nn.Conv2d(6, 6, 3, padding=2, dilation=2), nn.BatchNorm2d(6), nn.Hardswish(), nn.Conv2d(6, 6, (5, 3), padding=(2, 1)))
        self.narrow = nn.Conv2d(6, 6, 1)
        self.down = nn.Conv2d(6, 8, 3, stride=3, padding=1, dilation=3, groups=2)
        self.avg = nn.AvgPool2d(3, stride=2, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.pool(self.stem(x)))
        x = self.wide(x) + self.narrow(x) * 0.5
        x = torch.cat([self.avg(self.down(x)), torch.sigmoid(self.avg(self.down(x)))], 1)[:, :8]
        return self.head(x.mean((2, 3)))


def _dilated():
    torch.manual_seed(0)
    model = _Dilated().double().eval()
    with torch.no_grad():
        model.wide[1].running_mean.uniform_(-1, 1)
        model.wide[1].running_var.uniform_(0.5, 2)
    return model


@pytest.mark.parametrize("size,window,stride", [(37, 5, 7), (40, 8, 9), (33, 1, 8), (31, 11, 7)])
def test_dilated_strided_and_residual_halos_are_exact_in_float64(size, window, stride):
    dense, fast = _maps(_dilated(), _image(3, size, seed=2, dtype=torch.float64), {"window": window, "stride": stride}, target=1)
    _assert_same_map(dense, fast, tolerance=1e-9)


def test_executor_output_equals_the_model_for_boxes_anywhere():
    model, size = _dilated(), 45
    x = _image(3, size, seed=3, dtype=torch.float64)
    executor = IncrementalExecutor(model, x)
    origins = torch.tensor([[0, 0], [size - 6, size - 6], [17, 3], [0, size - 6], [9, 30]])
    batch = x.repeat(len(origins), 1, 1, 1)
    for i, (r, c) in enumerate(origins.tolist()):
        batch[i, :, r : r + 6, c : c + 6] = torch.randn(3, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        expected = model(batch)
        got = executor.run(batch, origins, (6, 6))
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    assert executor.stats.macs_done < executor.stats.macs_full


@pytest.mark.parametrize("length,kernel,stride,padding,dilation", [(20, 3, 1, 1, 1), (21, 5, 2, 2, 1), (17, 3, 3, 0, 2), (30, 7, 2, 3, 1), (9, 2, 2, 0, 1), (13, 3, 1, 4, 3)])
def test_sliding_axis_covers_every_output_a_change_reaches(length, kernel, stride, padding, dilation):
    length_out = (length + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    for size in (1, 2, 4):
        origins = torch.arange(0, length - size + 1)
        out_origin, out_size, in_origin, in_size = sliding_axis(origins, size, length_out, kernel, stride, padding, dilation)
        assert in_size == (out_size - 1) * stride + dilation * (kernel - 1) + 1
        for r, o, i in zip(origins.tolist(), out_origin.tolist(), in_origin.tolist(), strict=True):
            reached = {q for q in range(length_out) if any(r <= q * stride - padding + dilation * t < r + size for t in range(kernel))}
            assert 0 <= o and o + out_size <= length_out
            assert reached <= set(range(o, o + out_size))
            assert i == o * stride - padding


def test_crop_pads_and_materialise_pastes():
    source = torch.arange(2 * 5 * 6, dtype=torch.float32).view(1, 2, 5, 6)
    region = crop(source, torch.tensor([[-1, 4], [2, 0]]), (3, 3), fill=-7.0)
    assert region[0, :, 0].eq(-7).all() and region[0, :, :, 2].eq(-7).all()
    torch.testing.assert_close(region[0, :, 1:, :2], source[0, :, 0:2, 4:6])
    torch.testing.assert_close(region[1], source[0, :, 2:5, 0:3])
    box = Box(torch.full((2, 2, 2, 2), -1.0), torch.tensor([[0, 0], [3, 4]]))
    full = materialise(source, box)
    expected = source.repeat(2, 1, 1, 1)
    expected[0, :, 0:2, 0:2] = -1
    expected[1, :, 3:5, 4:6] = -1
    torch.testing.assert_close(full, expected)
    origin, size = union([box, Box(torch.zeros(2, 2, 1, 3), torch.tensor([[4, 3], [0, 0]]))], 5, 6)
    assert size == (5, 6) and origin.tolist() == [[0, 0], [0, 0]]


def test_crop_keeps_channels_last_maps_channels_last():
    source = torch.randn(1, 4, 7, 9).contiguous(memory_format=torch.channels_last)
    for origins in ([[0, 0], [3, 5]], [[-2, 1], [5, 7]]):  # inside, and reaching past two borders
        region = crop(source, torch.tensor(origins), (4, 4), fill=0.5)
        assert region.is_contiguous(memory_format=torch.channels_last) and not region.is_contiguous()
        padded = torch.nn.functional.pad(source, (4, 4, 4, 4), value=0.5)
        for i, (r, c) in enumerate(origins):
            torch.testing.assert_close(region[i], padded[0, :, r + 4 : r + 8, c + 4 : c + 8])
    assert crop(source.contiguous(), torch.tensor([[1, 1]]), (2, 2)).is_contiguous()


class _Branchy(nn.Module):
    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace it
            return x.mean((2, 3))
        return -x.mean((2, 3))


def test_untraceable_models_run_densely_with_a_note():
    x = _image(3, 12)
    with pytest.raises(Untraceable):
        IncrementalExecutor(_Branchy(), x)
    result = engine.explain(_Branchy(), x, "local", target=0, params={"window": 4, "engine": "incremental"})
    assert result.extras["engine"] == "dense"
    assert any("not available" in note for note in result.extras["notes"])


class _StandardisedConv(nn.Conv2d):
    """Weight standardisation: reshapes its weight with .view(), which needs the weight's own layout."""

    def forward(self, x):
        flat = self.weight.view(self.weight.shape[0], -1)
        weight = ((flat - flat.mean(1, keepdim=True)) / (flat.std(1, keepdim=True) + 1e-5)).view_as(self.weight)
        return nn.functional.conv2d(x, weight, self.bias, self.stride, self.padding)


def test_traced_custom_layers_that_reshape_their_weights_keep_working():
    torch.manual_seed(0)
    model = nn.Sequential(_StandardisedConv(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).eval()
    dense, fast = _maps(model, _image(3, 32, seed=4), {"window": 4, "stride": 4}, target=0)
    _assert_same_map(dense, fast)


def test_a_traced_copy_that_fails_on_the_input_runs_densely_with_a_note(monkeypatch):
    def broken(self, x):
        raise RuntimeError("view size is not compatible with input tensor's size and stride")

    monkeypatch.setattr(IncrementalExecutor, "_run_cached", broken)
    model = build_architecture("resnet18", seed=0)
    x = _image(3, 32)
    result = engine.explain(model, x, "local", target=0, params={"window": 16, "stride": 8})
    assert result.extras["engine"] == "dense"
    assert any("traced copy failed" in note for note in result.extras["notes"])
    reference = engine.explain(model, x, "local", target=0, params={"window": 16, "stride": 8, "engine": "dense"})
    np.testing.assert_array_equal(result.map, reference.map)


class _SizeUnpacking(nn.Module):
    """``b, c, h, w = x.shape`` then a reshape that also accepts the wrong b (it folds the batch)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        b, c, h, w = x.shape
        return self.fc(x.reshape(b, c, -1).mean(-1))


@pytest.mark.parametrize("name", ["sizes", "shufflenet_v2_x0_5"])
def test_sizes_computed_from_sizes_take_the_perturbed_batch(name):
    # shufflenet's channel shuffle views x with b, c, h, w = x.size(); both once read b = 1 here.
    torch.manual_seed(0)
    model = _SizeUnpacking().eval() if name == "sizes" else build_architecture(name, seed=0, num_classes=10)
    size = 32 if name == "sizes" else 64
    dense, fast = _maps(model, _image(3, size, seed=1), {"window": size // 3, "stride": size // 6}, target=0)
    assert not fast.extras.get("notes"), fast.extras["notes"]
    _assert_same_map(dense, fast)


def test_an_executor_answer_of_the_wrong_batch_size_is_not_used(monkeypatch):
    original = IncrementalExecutor.run
    monkeypatch.setattr(IncrementalExecutor, "run", lambda self, *a, **k: original(self, *a, **k)[:1])
    model = build_architecture("resnet18", seed=0)
    x = _image(3, 40)
    params = {"window": 8, "stride": 8, "batch_size": 4}
    result = engine.explain(model, x, "local", target=0, params={**params, "engine": "incremental"})
    assert any("gave 1 output row(s) for a batch of 4" in note for note in result.extras["notes"])
    reference = engine.explain(model, x, "local", target=0, params={**params, "engine": "dense"})
    np.testing.assert_array_equal(result.map, reference.map)


def test_timm_batch_norm_with_activation_runs_on_boxes():
    """timm's BatchNormAct2d traces to F.batch_norm (running statistics) and an activation: both run on
    the changed boxes, so the network stays incremental up to its pooling."""
    from timm.layers import BatchNormAct2d

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, bias=False), BatchNormAct2d(8), nn.Conv2d(8, 8, 3, padding=1, bias=False), BatchNormAct2d(8),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )  # fmt: skip
    for module in model.modules():
        if isinstance(module, BatchNormAct2d):  # statistics that are not the identity
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    model.eval()
    dense, fast = _maps(model, _image(3, 48, seed=5), {"window": 6, "stride": 6}, target=1)
    _assert_same_map(dense, fast)
    # Only the pooling and the head run densely: the convolutions do a small part of their work.
    assert fast.extras["incremental_estimated_speedup"] > 5, fast.extras


def test_an_executor_failing_mid_run_hands_the_rest_to_the_dense_path(monkeypatch):
    calls = []
    original = IncrementalExecutor.run

    def fails_second_time(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("an operation the executor mishandles\nmore detail")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(IncrementalExecutor, "run", fails_second_time)
    model = build_architecture("resnet18", seed=0)
    x = _image(3, 40)
    params = {"window": 8, "stride": 8, "batch_size": 4}
    result = engine.explain(model, x, "local", target=0, params={**params, "engine": "incremental"})
    assert len(calls) == 2  # the first batch ran incrementally, the second failed, the rest ran densely
    assert any("executor failed on this model (RuntimeError: an operation the executor mishandles)" in note for note in result.extras["notes"])
    assert result.extras["incremental_estimated_speedup"] is None
    reference = engine.explain(model, x, "local", target=0, params={**params, "engine": "dense"})
    assert float(np.abs(result.map - reference.map).max()) < 1e-4 * float(reference.map.max() - reference.map.min())


def test_out_of_memory_in_the_executor_still_halves_the_batch(monkeypatch):
    original = IncrementalExecutor.run
    sizes = []

    def tight(self, batch, *args, **kwargs):
        sizes.append(batch.shape[0])
        if batch.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, batch, *args, **kwargs)

    monkeypatch.setattr(IncrementalExecutor, "run", tight)
    result = engine.explain(build_architecture("resnet18", seed=0), _image(3, 40), "local", target=0, params={"window": 8, "stride": 8, "batch_size": 8, "engine": "incremental"})
    assert sizes[:3] == [8, 4, 2] and result.extras["engine"] == "incremental"


def test_auto_keeps_incremental_only_when_it_saves_work():
    model, x = build_architecture("sonocnn", seed=0, in_channels=1), _image(1, 48, seed=4)
    small = engine.explain(model, x, "local", target=0, params={"window": 6, "stride": 6})
    assert small.extras["engine"] == "incremental" and small.extras["incremental_estimated_speedup"] >= AUTO_MIN_SPEEDUP
    large = engine.explain(model, x, "local", target=0, params={"window": 40, "stride": 8})
    assert large.extras["engine"] == "dense" and large.extras["incremental_estimated_speedup"] < AUTO_MIN_SPEEDUP
    assert any("auto" in note for note in large.extras["notes"])
    forced = engine.explain(model, x, "local", target=0, params={"window": 6, "engine": "dense"})
    assert forced.extras["engine"] == "dense" and forced.extras["incremental_estimated_speedup"] is None
    assert (small.extras["batch_size_used"], forced.extras["batch_size_used"]) == (32, 16)  # CPU: larger incremental batches
    np.testing.assert_allclose(forced.map, small.map, atol=1e-4 * float(np.ptp(forced.map)))


def test_training_mode_models_are_not_run_incrementally():
    model = build_architecture("sonocnn", seed=0).train()
    with pytest.raises(Untraceable, match="training"):
        IncrementalExecutor(model, _image(1, 16))


class _Inplace(nn.Module):
    def __init__(self, aliased: bool):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1)
        self.aliased = aliased

    def forward(self, x):
        y = self.conv(x)
        z = torch.relu_(y * 1.0)
        y += z
        out = nn.functional.relu(y, inplace=True)
        return out + y if self.aliased else out * 2.0  # aliased: y is the relu's output too


def test_inplace_operations_do_not_corrupt_the_cache():
    torch.manual_seed(1)
    model = _Inplace(aliased=False).eval()
    x = _image(2, 10, seed=5)
    executor = IncrementalExecutor(model, x)
    origins = torch.tensor(list(itertools.product([0, 4, 7], [2, 7])))
    batch = x.repeat(len(origins), 1, 1, 1)
    for i, (r, c) in enumerate(origins.tolist()):
        batch[i, :, r : r + 3, c : c + 3] = 0.0
    with torch.no_grad():
        torch.testing.assert_close(executor.run(batch, origins, (3, 3)), model(batch))
    with pytest.raises(Untraceable, match="in-place"):
        IncrementalExecutor(_Inplace(aliased=True).eval(), x)


def test_axis_costs_are_the_work_of_each_windows_own_clipped_box():
    # Two 3 x 3 convolutions with padding 1 on a 10-pixel axis: a window [o, o + 2] changes
    # [o - 1, o + 3] after the first and [o - 2, o + 4] after the second, clipped to [0, 9].
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 3, 3, padding=1)).eval()
    executor = IncrementalExecutor(model, _image(1, 10))
    origins = torch.tensor([0, 3, 7])
    macs_first, macs_second = 2 * 1 * 9 * 100, 3 * 2 * 9 * 100  # per image, whole maps
    expected = []
    for o in origins.tolist():
        first = min(o + 3, 9) - max(o - 1, 0) + 1
        second = min(o + 4, 9) - max(o - 2, 0) + 1
        expected.append(macs_first * first / 10 + macs_second * second / 10)
    for axis in (0, 1):
        np.testing.assert_allclose(executor.axis_costs(origins, 3, axis).numpy(), expected)


def test_windows_run_in_batches_of_like_boxes_which_saves_work_and_changes_nothing(monkeypatch):
    import engine.methods.local as local

    model, x = _resnet18(), _image(3, 64, seed=5)
    params = {"window": 8, "stride": 4, "engine": "incremental", "batch_size": 16}
    ordered = engine.explain(model, x, "local", target=0, params=params)
    monkeypatch.setattr(local._Forwards, "_order", lambda self, windows, batch_size: torch.arange(windows.perturbations))
    numbered = engine.explain(model, x, "local", target=0, params=params)
    dense = engine.explain(model, x, "local", target=0, params={**params, "engine": "dense"})
    _assert_same_map(dense, ordered)
    _assert_same_map(dense, numbered)
    assert ordered.extras["incremental_estimated_speedup"] > numbered.extras["incremental_estimated_speedup"]


def test_the_order_is_a_permutation_keeping_central_pairs_together():
    import engine.methods.local as local

    model, x = _resnet18(), _image(3, 40, seed=2)
    params = local.LocalParams(window=6, stride=5, mode="additive", central=True)
    windows = local._Windows.build(40, 40, 6, 5, 2, x.device)
    with torch.inference_mode():
        forwards = local._Forwards(model, x, model(x), windows, params)
    assert torch.equal(forwards.order, torch.arange(windows.perturbations))
    forwards.arrange(windows, 16)
    order = forwards.order
    assert not torch.equal(order, torch.arange(windows.perturbations))
    assert sorted(order.tolist()) == list(range(windows.perturbations))
    assert torch.equal(order[1::2], order[0::2] + 1) and bool((order[0::2] % 2 == 0).all())


def test_auto_is_measured_on_cpus_and_keeps_the_first_versions_threshold_elsewhere():
    from engine.methods.local import auto_threshold

    assert auto_threshold(torch.device("cpu")) == AUTO_MIN_SPEEDUP == 1.35
    assert auto_threshold(torch.device("cuda")) == auto_threshold(torch.device("mps")) == 3.0
