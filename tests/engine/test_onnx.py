"""ONNX models run by onnxruntime: the same black-box maps and metrics as the torch originals, the
input size and layout read from the graph, and clear refusals (gradient methods, corrupt files)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import engine
from engine.core.errors import UserError
from engine.metrics.faithfulness import deletion_insertion
from tests.models import LinearModel, region_model, tiny_cnn


def export(model: nn.Module, path, shape, dynamic: bool = True):
    """torch.onnx.export with the TorchScript exporter (dynamo=False), batch axis dynamic or fixed."""
    axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), torch.zeros(1, *shape), str(path), input_names=["input"], output_names=["logits"], dynamic_axes=axes, dynamo=False)
    return path


class ChannelsLast(nn.Module):
    """A model that takes N x H x W x C (as TensorFlow exports do)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x.permute(0, 3, 1, 2))


def _input(shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


CASES = {
    "tiny_cnn": (lambda: tiny_cnn(seed=1), (3, 12, 12)),
    "linear": (lambda: LinearModel(3, 8, 4, seed=2).eval(), (3, 8, 8)),
    "region": (lambda: region_model(seed=3), (3, 16, 16)),
}


@pytest.mark.parametrize("dynamic", [True, False])
@pytest.mark.parametrize("case", sorted(CASES))
def test_local_sensitivity_of_the_export_equals_the_torch_original(case, dynamic, tmp_path):
    build, shape = CASES[case]
    model = build()
    path = export(model, tmp_path / f"{case}.onnx", shape, dynamic)
    loaded = engine.load_model(str(path))
    x = _input(shape)
    params = {"window": 2, "stride": 2, "batch_size": 5}  # 5 does not divide the windows: a padded last slice
    ours = engine.explain(loaded, x, "local", params=params)
    reference = engine.explain(model, x, "local", params=params)
    assert ours.predicted == reference.predicted
    np.testing.assert_allclose(ours.map, reference.map, rtol=1e-4, atol=2e-7)  # float32 probabilities: spacing 3e-8


def test_rise_with_the_same_seed_gives_the_same_map(tmp_path):
    model = tiny_cnn(seed=4)
    loaded = engine.load_model(str(export(model, tmp_path / "m.onnx", (3, 12, 12))))
    x = _input((3, 12, 12), seed=1)
    params = {"masks": 64, "batch_size": 16}
    ours = engine.explain(loaded, x, "rise", params=params, seed=3)
    reference = engine.explain(model, x, "rise", params=params, seed=3)
    np.testing.assert_allclose(ours.map, reference.map, rtol=1e-4, atol=1e-6)


def test_deletion_curve_on_the_export_equals_the_torch_original(tmp_path):
    model = tiny_cnn(seed=5)
    loaded = engine.load_model(str(export(model, tmp_path / "m.onnx", (3, 12, 12))))
    x = _input((3, 12, 12), seed=2)
    saliency = _input((12, 12), seed=3).numpy()
    ours = deletion_insertion(loaded, x, saliency, steps=8, baseline="zero")
    reference = deletion_insertion(model, x, saliency, steps=8, baseline="zero")
    for name in ("deletion", "insertion"):
        np.testing.assert_allclose(getattr(ours, name).scores, getattr(reference, name).scores, rtol=1e-4, atol=1e-6)
    assert ours.original_score == pytest.approx(reference.original_score, rel=1e-5)


def test_input_size_and_layout_come_from_the_graph(tmp_path):
    model = tiny_cnn(seed=6, channels=1)
    fixed = engine.load_model(str(export(ChannelsLast(model), tmp_path / "nhwc.onnx", (28, 28, 1), dynamic=False)))
    assert fixed.module.layout == "nhwc" and fixed.module.batch == 1
    assert (fixed.preprocess.crop, fixed.preprocess.channels) == (28, 1)
    assert fixed.num_classes == 3 and fixed.to_dict()["parameters"] == 0
    x = _input((1, 28, 28))
    np.testing.assert_allclose(fixed.module(x[None].repeat(3, 1, 1, 1)).numpy(), model(x[None].repeat(3, 1, 1, 1)).detach().numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["saliency", "gradcam", "scorecam"])
def test_a_gradient_or_layer_method_names_the_methods_that_work(method, tmp_path):
    loaded = engine.load_model(str(export(tiny_cnn(), tmp_path / "m.onnx", (3, 12, 12))))
    with pytest.raises(UserError, match=r"methods that work on it: .*local.*rise") as info:
        engine.explain(loaded, _input((3, 12, 12)), method)
    assert "\n" not in str(info.value)


def test_corrupt_onnx_file_is_one_clear_line(tmp_path):
    path = tmp_path / "broken.onnx"
    good = export(tiny_cnn(), tmp_path / "good.onnx", (3, 12, 12)).read_bytes()
    path.write_bytes(good[: len(good) // 3])
    with pytest.raises(UserError, match="not a loadable ONNX model") as info:
        engine.load_model(str(path))
    assert "\n" not in str(info.value)


def test_the_sanity_check_says_it_cannot_randomise_an_onnx_graph(tmp_path):
    """The cascade needs the model's weights; an onnxruntime session has none to randomise, so the
    report says so instead of failing (it used to raise a TypeError while copying the session)."""
    from engine.metrics.sanity import cascading_randomisation

    loaded = engine.load_model(str(export(tiny_cnn(seed=5), tmp_path / "m.onnx", (3, 12, 12))))
    x = _input((3, 12, 12), seed=2)
    report = cascading_randomisation(loaded, x, lambda model: engine.explain(model, x, "local", params={"window": 4}).map)
    assert report.passed is None and report.steps == [] and report.verdict.startswith("NOT RUN")
