"""Model loading: architectures, weight files, the hub cache, TorchScript, pickles and labels."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import engine
from engine import UserError, load_model
from engine.models.architectures import build_architecture, classification_models
from engine.models.labels import read_labels
from engine.models.summary import conv_layers, summarize
from engine.models.weights import find_cached_weights, hub_checkpoint_dir, read_state_dict
from tests.models import TinyCNN, tiny_cnn

SMALL_ARCH = "resnet18"


@pytest.fixture(scope="module")
def resnet_state():
    model = build_architecture(SMALL_ARCH, num_classes=3, seed=7)
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_same_state(model, state):
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        assert torch.equal(loaded[key], value), key


# ------------------------------------------------------------------ architectures


def test_classification_names_include_the_papers_models_and_exclude_other_tasks():
    names = classification_models()
    assert {"resnet18", "vgg16", "vit_b_16", "mobilenet_v3_small"} <= set(names)
    assert not {"fasterrcnn_resnet50_fpn", "fcn_resnet50", "r3d_18"} & set(names)


def test_every_listed_architecture_has_a_builder():
    import torchvision

    from engine.models.architectures import OWN_ARCHITECTURES

    for name in classification_models():
        builder = OWN_ARCHITECTURES.get(name) or torchvision.models.get_model_builder(name)
        assert callable(builder)
    assert build_architecture("sonocnn", num_classes=3, in_channels=1)(torch.rand(2, 1, 32, 32)).shape == (2, 3)


def test_seeded_initialisation_is_repeatable_and_seed_dependent():
    a = build_architecture("squeezenet1_1", seed=1).state_dict()
    b = build_architecture("squeezenet1_1", seed=1).state_dict()
    c = build_architecture("squeezenet1_1", seed=2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["features.0.weight"], c["features.0.weight"])


@pytest.mark.parametrize("name", ["squeezenet1_1", "mobilenet_v3_small", "shufflenet_v2_x0_5", "googlenet"])
def test_small_architectures_load_and_explain(name):
    loaded = load_model(name, num_classes=5)
    with torch.no_grad():
        assert loaded.module(torch.rand(1, 3, 64, 64)).shape == (1, 5)
    result = engine.explain(loaded, torch.rand(3, 64, 64), params={"reduce": "sum"})
    assert result.map.shape == (64, 64) and np.isfinite(result.map).all()
    assert not any(p.requires_grad for p in loaded.module.parameters())


def test_unknown_architecture_suggests_close_names():
    with pytest.raises(UserError, match="did you mean resnet18"):
        load_model("resnet81")


# ------------------------------------------------------------------ weight files


def test_state_dict_round_trip(tmp_path, resnet_state):
    path = tmp_path / "w.pth"
    torch.save(resnet_state, path)
    loaded = load_model(SMALL_ARCH, weights=str(path))
    assert_same_state(loaded.module, resnet_state)
    assert loaded.num_classes == 3
    assert any("3 output classes" in note for note in loaded.notes)


@pytest.mark.parametrize("wrap", ["state_dict", "model", "model_state_dict"])
def test_checkpoint_dicts_are_unwrapped(tmp_path, resnet_state, wrap):
    path = tmp_path / "ckpt.pt"
    torch.save({wrap: resnet_state, "epoch": 12, "best_accuracy": 0.9}, path)
    assert_same_state(load_model(SMALL_ARCH, weights=str(path), num_classes=3).module, resnet_state)


def test_dataparallel_prefix_is_removed(tmp_path, resnet_state):
    path = tmp_path / "dp.pt"
    torch.save({"module." + k: v for k, v in resnet_state.items()}, path)
    assert_same_state(load_model(SMALL_ARCH, weights=str(path)).module, resnet_state)


def test_safetensors_round_trip(tmp_path, resnet_state):
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in resnet_state.items()}, str(path))
    assert_same_state(load_model(SMALL_ARCH, weights=str(path)).module, resnet_state)


def test_mismatch_names_missing_unexpected_and_shape_conflicts(tmp_path, resnet_state):
    state = dict(resnet_state)
    del state["layer4.1.bn2.running_var"]
    state["projection.weight"] = torch.zeros(2, 2)
    state["conv1.weight"] = torch.zeros(64, 1, 7, 7)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(UserError) as info:
        load_model(SMALL_ARCH, weights=str(path), num_classes=3)
    message = str(info.value)
    assert "missing keys (1): layer4.1.bn2.running_var" in message
    assert "unexpected keys (1): projection.weight" in message
    assert "conv1.weight expects (64, 3, 7, 7) but the file has (64, 1, 7, 7)" in message
    assert "\n" not in message


def test_weights_of_another_architecture_are_refused_clearly(tmp_path, resnet_state):
    path = tmp_path / "r18.pt"
    torch.save(resnet_state, path)
    with pytest.raises(UserError, match=r"do not fit resnet34: missing keys \(\d+\): layer1.2"):
        load_model("resnet34", weights=str(path))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_truncated_and_empty_weight_files_are_user_errors(tmp_path, resnet_state, suffix):
    full = tmp_path / ("full" + suffix)
    if suffix == ".pt":
        torch.save(resnet_state, full)
    else:
        save_file({k: v.contiguous() for k, v in resnet_state.items()}, str(full))
    data = full.read_bytes()
    truncated = tmp_path / ("truncated" + suffix)
    truncated.write_bytes(data[: len(data) // 2])
    empty = tmp_path / ("empty" + suffix)
    empty.write_bytes(b"")
    for path in (truncated, empty):
        with pytest.raises(UserError, match="truncated or corrupt"):
            read_state_dict(path)


def test_a_file_that_is_not_a_state_dict_is_explained(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(UserError, match="not a state dict"):
        read_state_dict(path)


# ------------------------------------------------------------------ pickles and TorchScript


class _Payload:
    """Unpickling this writes a marker file: the proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("as_weights", [False, True])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, as_weights):
    marker = tmp_path / "pwned.txt"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": _Payload(marker)}, path)
    with pytest.raises(UserError, match="refused to load.*--trust"):
        if as_weights:
            load_model(SMALL_ARCH, weights=str(path))
        else:
            load_model(str(path))
    assert not marker.exists()


def test_pickled_model_needs_trust(tmp_path):
    model = tiny_cnn(seed=4)
    path = tmp_path / "whole.pt"
    torch.save(model, path)
    with pytest.raises(UserError, match="--trust"):
        load_model(str(path))
    loaded = load_model(str(path), trust=True)
    assert isinstance(loaded.module, TinyCNN)
    assert "trusted" in loaded.source
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(loaded.module(x), model(x))


def test_torchscript_loads_without_trust_and_predicts_like_the_original(scripted_tiny):
    path, model = scripted_tiny
    loaded = load_model(str(path))
    x = torch.rand(1, 3, 20, 20)
    torch.testing.assert_close(loaded.module(x), model(x))
    result = engine.explain(loaded, x[0], params={"reduce": "sum"})
    assert result.map.shape == (20, 20)


def test_torchscript_given_as_weights_is_redirected(scripted_tiny):
    path, _ = scripted_tiny
    with pytest.raises(UserError, match="TorchScript model, not a weights file"):
        load_model(SMALL_ARCH, weights=str(path))


def test_weights_only_file_given_as_model_asks_for_the_architecture(tmp_path, resnet_state):
    path = tmp_path / "w.pt"
    torch.save(resnet_state, path)
    with pytest.raises(UserError, match="name the architecture too"):
        load_model(str(path))


def test_missing_model_file(tmp_path):
    with pytest.raises(UserError, match="no such model file"):
        load_model(str(tmp_path / "absent.pt"))


# ------------------------------------------------------------------ hub cache


def _cache_resnet18(seed=0):
    folder = hub_checkpoint_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "resnet18-f37072fd.pth"  # the file name torchvision's IMAGENET1K_V1 URL ends in
    torch.save(build_architecture("resnet18", seed=seed).state_dict(), path)
    return path


def test_cached_imagenet_weights_are_found_and_loaded_with_their_metadata(monkeypatch):
    def no_downloads(*args, **kwargs):
        raise AssertionError("nothing may be downloaded")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_downloads)
    assert find_cached_weights() == []
    path = _cache_resnet18(seed=9)
    assert [c.spec for c in find_cached_weights()] == ["resnet18:IMAGENET1K_V1"]
    for loaded in (load_model("resnet18:IMAGENET1K_V1"), load_model("resnet18", weights="DEFAULT")):
        assert_same_state(loaded.module, torch.load(path, weights_only=True))
        assert loaded.num_classes == 1000 and loaded.labels[0] == "tench"
        assert (loaded.preprocess.resize, loaded.preprocess.crop) == (256, 224)
        assert loaded.preprocess.mean == pytest.approx((0.485, 0.456, 0.406))


def test_weights_not_in_the_cache_are_not_downloaded(monkeypatch):
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("download attempted"))
    with pytest.raises(UserError, match="not in the local cache.*--allow-download"):
        load_model("resnet34", weights="IMAGENET1K_V1")
    with pytest.raises(UserError, match="no weights named"):
        load_model("resnet18", weights="IMAGENET9K")


def test_torch_home_decides_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "elsewhere"))
    assert hub_checkpoint_dir() == tmp_path / "elsewhere" / "hub" / "checkpoints"
    assert os.fspath(hub_checkpoint_dir()).startswith(str(tmp_path))


# ------------------------------------------------------------------ labels and sidecar metadata


def test_labels_from_text_json_list_and_json_mapping(tmp_path):
    (tmp_path / "a.txt").write_text("cat\n\ndog\nbird\n")
    (tmp_path / "b.json").write_text(json.dumps(["cat", "dog", "bird"]))
    (tmp_path / "c.json").write_text(json.dumps({"2": "bird", "0": "cat", "1": "dog"}))
    for name in ("a.txt", "b.json", "c.json"):
        assert read_labels(tmp_path / name) == ["cat", "dog", "bird"]
    (tmp_path / "gap.json").write_text(json.dumps({"0": "cat", "2": "bird"}))
    with pytest.raises(UserError, match="without gaps"):
        read_labels(tmp_path / "gap.json")


def test_label_count_must_match_the_model(tmp_path, scripted_tiny):
    path, _ = scripted_tiny
    (tmp_path / "labels.txt").write_text("a\nb\nc\n")
    (tmp_path / "two.txt").write_text("a\nb\n")
    loaded = load_model(SMALL_ARCH, labels=str(tmp_path / "labels.txt"), num_classes=3)
    assert loaded.label(2) == "c" and loaded.label(7) == "class 7"
    with pytest.raises(UserError, match="2 class names were given but the model has 3 outputs"):
        load_model(SMALL_ARCH, labels=str(tmp_path / "two.txt"), num_classes=3)


def test_sidecar_metadata_gives_labels_and_preprocessing(tmp_path, resnet_state):
    path = tmp_path / "trained.safetensors"
    save_file({k: v.contiguous() for k, v in resnet_state.items()}, str(path))
    meta = {"num_classes": 3, "labels": ["normal", "benign", "malignant"], "preprocess": {"resize": 128, "crop": 128, "mean": [0.5], "std": [0.25], "channels": 3}}
    path.with_suffix(".json").write_text(json.dumps(meta))
    loaded = load_model(SMALL_ARCH, weights=str(path))
    assert loaded.labels == ["normal", "benign", "malignant"]
    assert loaded.preprocess.crop == 128 and loaded.preprocess.std == (0.25,)


# ------------------------------------------------------------------ summary


def test_summary_of_a_small_cnn_has_shapes_and_parameter_counts():
    layers = {layer.name: layer for layer in summarize(tiny_cnn(), (3, 12, 12))}
    assert layers["features.0"].output_shape == (1, 8, 12, 12)
    assert layers["features.0"].parameters == 3 * 8 * 9 + 8
    assert layers["classifier"].output_shape == (1, 3)
    assert layers[""].output_shape == (1, 3) and layers[""].parameters == 0
    assert conv_layers(list(layers.values()))[:2] == ["features", "features.0"]


def test_summary_of_resnet18_finds_layer4():
    layers = {layer.name: layer for layer in summarize(build_architecture("resnet18"), (3, 224, 224))}
    assert layers["layer4"].output_shape == (1, 512, 7, 7)
    assert sum(layer.parameters for layer in layers.values()) == 11_689_512


def test_summary_of_torchscript_reports_the_output(scripted_tiny):
    path, _ = scripted_tiny
    layers = summarize(load_model(str(path)).module, (3, 16, 16))
    assert layers[0].name == "" and layers[0].output_shape == (1, 3)
