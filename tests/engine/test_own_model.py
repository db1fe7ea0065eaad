"""Your own model class from your file: loading, constructor arguments, weights that do or do not
fit, the sidecar (schema, validation, writer), sizes and channels found or refused in one line."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch

import engine
from engine.core.errors import UserError, WeightsMismatch
from engine.core.requests import ModelSpec, PreprocessOptions, TargetSpec, parse_model_args

NET_SOURCE = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Block(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.conv = nn.Conv2d(cin, cout, 3, padding=1)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.conv(x))


    class DigitNet(nn.Module):
        def __init__(self, classes=10):
            super().__init__()
            self.body = nn.Sequential(Block(1, 8), nn.MaxPool2d(2), Block(8, 16), nn.MaxPool2d(2))
            self.head = nn.Linear(16 * 8 * 8, classes)

        def forward(self, x):
            return self.head(self.body(x).flatten(1))
    """
)


def write_net(folder, classes: int = 4, seed: int = 0):
    """net.py with DigitNet, and its state dict as the user's torch.save writes it."""
    path = folder / "net.py"
    path.write_text(NET_SOURCE)
    namespace: dict = {}
    exec(compile(NET_SOURCE, str(path), "exec"), namespace)
    torch.manual_seed(seed)
    net = namespace["DigitNet"](classes).eval()
    torch.save(net.state_dict(), folder / "net.pth")
    return path, folder / "net.pth", net


def test_a_class_from_a_file_with_its_state_dict_predicts_as_the_original(tmp_path):
    net_py, weights, original = write_net(tmp_path)
    loaded = engine.load_model(f"{net_py}:DigitNet", str(weights), model_args={"classes": 4})
    x = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), original(x), atol=1e-6)
    assert loaded.num_classes == 4 and "DigitNet(classes=4) from net.py with weights from net.pth" == loaded.source
    # Nothing states the input: the loader finds that the network takes 1 x 32 x 32 and says so.
    assert (loaded.preprocess.channels, loaded.preprocess.crop) == (1, 32)
    assert any("1 channel(s) at 32 x 32" in note for note in loaded.notes)


def test_grad_cam_on_an_inner_layer_by_name_equals_the_hand_computation(tmp_path):
    net_py, weights, original = write_net(tmp_path)
    loaded = engine.load_model(f"{net_py}:DigitNet", str(weights), model_args={"classes": 4})
    x = torch.rand(1, 32, 32)
    result = engine.explain(loaded, x, "gradcam", target=2, params={"layer": "body.2.conv"})
    # By hand: activations A and gradients G of the class-2 logit at body.2.conv; weights are the
    # spatial means of G; the map is ReLU(sum_k w_k A_k), upsampled to the input.
    captured = {}
    layer = original.body[2].conv
    handle = layer.register_forward_hook(lambda m, i, o: captured.update(a=o))
    inputs = x[None].clone().requires_grad_(True)
    logits = original(inputs)
    handle.remove()
    grads = torch.autograd.grad(logits[0, 2], captured["a"])[0][0]
    cam = torch.relu((grads.mean(dim=(1, 2))[:, None, None] * captured["a"][0]).sum(0)).detach()
    up = torch.nn.functional.interpolate(cam[None, None], size=(32, 32), mode="bilinear", align_corners=False)[0, 0].numpy()
    r = np.corrcoef(result.map.ravel(), up.ravel())[0, 1]
    assert result.target == 2 and r > 0.999


def test_misspelt_class_names_the_classes_the_file_defines(tmp_path):
    net_py, weights, _ = write_net(tmp_path)
    with pytest.raises(UserError) as caught:
        engine.load_model(f"{net_py}:DigitNett", str(weights))
    assert str(caught.value) == "net.py defines no 'DigitNett'; its model classes: Block, DigitNet"


def test_weights_that_do_not_fit_name_the_keys_and_the_argument_to_give(tmp_path):
    net_py, weights, _ = write_net(tmp_path, classes=4)
    with pytest.raises(WeightsMismatch) as caught:
        engine.load_model(f"{net_py}:DigitNet", str(weights))  # built with the default 10 classes
    message = str(caught.value)
    assert "\n" not in message and "head.weight expects (10, 1024) but the file has (4, 1024)" in message
    assert "the file has 4 outputs" in message and "--model-args '{\"classes\": 4}'" in message
    torch.save({"other.weight": torch.zeros(2)}, tmp_path / "foreign.pth")
    with pytest.raises(WeightsMismatch, match=r"missing keys \(6\): body.0.conv.weight.*unexpected keys \(1\): other.weight"):
        engine.load_model(f"{net_py}:DigitNet", str(tmp_path / "foreign.pth"), model_args={"classes": 4})


def test_constructor_arguments_are_checked_against_the_signature(tmp_path):
    net_py, weights, _ = write_net(tmp_path)
    with pytest.raises(UserError, match=r"DigitNet takes \(classes=10\) \(defaults shown\): got an unexpected keyword argument 'clases'"):
        engine.load_model(f"{net_py}:DigitNet", str(weights), model_args={"clases": 4})
    with pytest.raises(UserError, match="not valid JSON"):
        parse_model_args("{classes: 4}")
    with pytest.raises(UserError, match="a JSON object"):
        parse_model_args("[4]")
    with pytest.raises(UserError, match="go with a model class"):
        engine.load_model("resnet18", model_args={"num_classes": 3})


def test_a_class_of_an_installed_module_and_errors_of_the_users_code(tmp_path, monkeypatch):
    package = tmp_path / "mylab"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(NET_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    loaded = engine.load_model("mylab.models:DigitNet", model_args={"classes": 3})
    assert loaded.num_classes == 3 and "random" in loaded.source
    broken = tmp_path / "broken.py"
    broken.write_text("import torch\nraise RuntimeError('no GPU here')\n")
    with pytest.raises(UserError, match=r"broken.py: running the file failed with RuntimeError: no GPU here \(line 2"):
        engine.load_model(f"{broken}:Net")
    (tmp_path / "syntax.py").write_text("class Net(:\n")
    with pytest.raises(UserError, match="line 1: syntax error"):
        engine.load_model(f"{tmp_path / 'syntax.py'}:Net")
    with pytest.raises(UserError, match="name the model class too"):
        engine.load_model(str(broken))


def test_only_the_named_file_is_run(tmp_path):
    """Loading net.py:DigitNet with a sidecar beside the weights never imports another file."""
    net_py, weights, _ = write_net(tmp_path)
    marker = tmp_path / "ran.txt"
    (tmp_path / "other.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    (tmp_path / "net.json").write_text(json.dumps({"model": "other.py:Net", "model_args": {"classes": 4}}))
    engine.load_model(f"{net_py}:DigitNet", str(weights))
    assert not marker.exists()


def test_the_sidecar_gives_arguments_and_preprocessing_and_is_validated_field_by_field(tmp_path):
    net_py, weights, _ = write_net(tmp_path)
    sidecar = tmp_path / "net.json"
    sidecar.write_text(json.dumps({"sidecar_version": 1, "model_args": {"classes": 4}, "labels": ["a", "b", "c", "d"],
                                   "preprocess": {"resize": 36, "crop": 32, "mean": [0.5], "std": [0.25], "channels": 1}}))
    loaded = engine.load_model(f"{net_py}:DigitNet", str(weights))
    assert loaded.labels == ["a", "b", "c", "d"] and (loaded.preprocess.resize, loaded.preprocess.mean) == (36, (0.5,))
    assert not any("no preprocessing" in n for n in loaded.notes)
    for content, message in (
        ({"sidecar_version": 2}, "written by a newer Sensiscope"),
        ({"model_args": [4]}, "field 'model_args' must be an object"),
        ({"input_size": [32]}, "field 'input_size' must be \\[height, width\\]"),
        ({"in_channels": 2}, "field 'in_channels' must be 1 or 3"),
        ({"preprocess": {"crop": 32, "colour": "x"}}, "field 'preprocess.colour' is not a preprocessing setting"),
        ({"labels": ["a"], "num_classes": 4}, "1 labels for num_classes 4"),
    ):
        sidecar.write_text(json.dumps(content))
        with pytest.raises(UserError, match=message):
            engine.load_model(f"{net_py}:DigitNet", str(weights))


def test_written_sidecar_reads_back_to_the_same_model(tmp_path):
    from engine.app.models import load, sidecar_for, write_sidecar

    net_py, weights, original = write_net(tmp_path)
    spec = ModelSpec(f"{net_py}:DigitNet", str(weights), model_args={"classes": 4})
    loaded = load(spec)
    path = write_sidecar(loaded, spec)
    assert path == tmp_path / "net.json"
    data = json.loads(path.read_text())
    assert data == json.loads(json.dumps(sidecar_for(loaded, spec))) and data["model_args"] == {"classes": 4} and data["input_size"] == [32, 32]
    again = engine.load_model(f"{net_py}:DigitNet", str(weights))  # arguments and size from the sidecar alone
    x = torch.rand(2, 1, 32, 32)
    assert torch.allclose(again.module(x), original(x), atol=1e-6) and again.preprocess == loaded.preprocess


def test_preprocessing_options_and_sizes_the_model_cannot_take(tmp_path):
    from engine.app.models import load

    net_py, weights, _ = write_net(tmp_path)
    spec = ModelSpec(f"{net_py}:DigitNet", str(weights), model_args={"classes": 4}, preprocess=PreprocessOptions(resize=40, crop=32, mean=(0.1,), std=(0.3,)))
    pre = load(spec).preprocess
    assert (pre.resize, pre.crop, pre.mean, pre.std, pre.channels) == (40, 32, (0.1,), (0.3,), 1)
    with pytest.raises(UserError, match=r"does not take 1-channel 64 x 64 inputs .*--resize/--crop"):
        load(ModelSpec(spec.spec, spec.weights, model_args={"classes": 4}, preprocess=PreprocessOptions(resize=64, crop=64)))
    with pytest.raises(UserError, match="does not take 3-channel 32 x 32 inputs.*--channels"):
        load(ModelSpec(spec.spec, spec.weights, model_args={"classes": 4}, preprocess=PreprocessOptions(channels=3)))
    with pytest.raises(UserError, match="--crop must be a size"):
        PreprocessOptions(crop=-3)
    with pytest.raises(UserError, match="no model given"):
        ModelSpec("  ")


def test_targets_by_index_and_by_class_name():
    labels = ["benign", "malignant", "normal"]
    assert TargetSpec.parse("pred").resolve(labels, 3) is None
    assert TargetSpec.parse("1").resolve(labels, 3) == 1
    assert TargetSpec.parse("Normal").resolve(labels, 3) == 2
    with pytest.raises(UserError, match="target 5 is not a class of this model"):
        TargetSpec.parse("5").resolve(labels, 3)
    with pytest.raises(UserError, match="none of the model's classes"):
        TargetSpec.parse("cyst").resolve(labels, 3)
    with pytest.raises(UserError, match="has no class names"):
        TargetSpec.parse("cyst").resolve(None, 3)


def test_sidecar_typos_and_wrong_types_name_the_field(tmp_path):
    net_py, weights, _ = write_net(tmp_path)
    sidecar = tmp_path / "net.json"
    for content, message in (
        ({"label": ["a", "b", "c", "d"], "model_args": {"classes": 4}}, "'label' is not a sidecar field; did you mean 'labels'\\?"),
        ({"preprocess": {"resize": "32"}}, "field 'preprocess': 'resize' must be a size in pixels"),
        ({"preprocess": {"mean": "x"}}, "field 'preprocess': 'mean' must be a list of numbers"),
    ):
        sidecar.write_text(json.dumps(content))
        with pytest.raises(UserError, match=message):
            engine.load_model(f"{net_py}:DigitNet", str(weights))
    sidecar.write_text(json.dumps({"model_args": {"classes": 4}, "my_note": "trained on fold 3"}))  # the user's own notes are kept and ignored
    assert engine.load_model(f"{net_py}:DigitNet", str(weights)).num_classes == 4


def test_a_trusted_pickled_checkpoint_gives_its_weights(tmp_path):
    net_py, weights, original = write_net(tmp_path)
    pickled = tmp_path / "whole.pt"
    import argparse

    # A training checkpoint as many scripts write it: the weights beside the run's arguments object.
    torch.save({"model": original.state_dict(), "epoch": 3, "args": argparse.Namespace(lr=0.1, classes=4)}, pickled)
    with pytest.raises(UserError, match="--trust"):
        engine.load_model(f"{net_py}:DigitNet", str(pickled), model_args={"classes": 4})
    trusted = engine.load_model(f"{net_py}:DigitNet", str(pickled), model_args={"classes": 4}, trust=True)
    x = torch.rand(1, 1, 32, 32)
    assert torch.allclose(trusted.module(x), original(x), atol=1e-6)
    with pytest.raises(UserError, match="name the model class too, e.g. --model .*net.py:Block .*it defines Block, DigitNet"):
        engine.load_model(str(net_py))


def test_the_python_api_takes_a_class_name_as_target_and_refuses_nonsense_in_one_line(tmp_path):
    net_py, weights, _ = write_net(tmp_path)
    (tmp_path / "labels.txt").write_text("zero\none\ntwo\nthree\n")
    loaded = engine.load_model(f"{net_py}:DigitNet", str(weights), str(tmp_path / "labels.txt"), model_args={"classes": 4})
    x = torch.rand(1, 32, 32)
    by_name = engine.explain(loaded, x, "saliency", target="two")
    assert by_name.target == 2 and np.array_equal(by_name.map, engine.explain(loaded, x, "saliency", target=2).map)
    for bad, message in (("seven", "none of the model's classes"), (-1, "0 or more"), (2.5, "not 2.5"), ([1], "not \\[1\\]")):
        with pytest.raises(UserError, match=message):
            engine.explain(loaded, x, "saliency", target=bad)
