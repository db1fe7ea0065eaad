"""The CLI on timm:NAME, hf:DIR and ONNX files: info lists layers (token layers with their grid),
explain writes maps, and bad input gives exit status 2 and one line."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from cli.main import main as cli
from tests.models import tiny_cnn


def run_cli(capsys, *args):
    code = cli([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    root = tmp_path_factory.mktemp("models")
    image = root / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)).save(image)
    onnx_path = root / "cnn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(tiny_cnn(seed=1), torch.zeros(1, 3, 24, 24), str(onnx_path), input_names=["input"], dynamic_axes={"input": {0: "batch"}}, dynamo=False)
    torch.manual_seed(0)
    labels = {0: "cat", 1: "dog", 2: "bird"}
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, id2label=labels, label2id={v: k for k, v in labels.items()})
    hf = root / "tiny-vit"
    ViTForImageClassification(config).save_pretrained(hf, safe_serialization=True)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(hf)
    return {"image": image, "onnx": onnx_path, "hf": hf, "root": root}


def test_info_lists_the_layers_of_a_timm_vit_with_their_grid(capsys):
    code, out, err = run_cli(capsys, "info", "--model", "timm:test_vit")
    assert code == 0, err
    assert "model timm:test_vit: timm test_vit, random initialisation (seed 0)" in out
    assert "blocks.5.norm1  LayerNorm  1x101x64  128 params  [tokens on a 10 x 10 grid, 1 prefix token dropped]" in out


def test_info_on_an_onnx_file_and_a_hugging_face_folder(capsys, files):
    code, out, err = run_cli(capsys, "info", "--model", files["onnx"], "--json")
    assert code == 0, err
    model = json.loads(out)["model"]
    assert model["source"].startswith("ONNX cnn.onnx") and model["preprocess"]["crop"] == 24 and model["num_classes"] == 3
    code, out, err = run_cli(capsys, "info", "--model", f"hf:{files['hf']}")
    assert code == 0, err
    assert "vit.layers.1.layernorm_before" in out or "encoder.layer.1.layernorm_before" in out


@pytest.mark.parametrize(
    ("spec", "method", "labels"),
    [("timm:test_vit", "gradcam", None), ("hf", "gradcam", {"cat", "dog", "bird"}), ("onnx", "local", None)],
)
def test_explain_on_each_kind_of_model(capsys, files, spec, method, labels):
    model = {"hf": f"hf:{files['hf']}", "onnx": files["onnx"]}.get(spec, spec)
    out_dir = files["root"] / f"out-{spec.replace(':', '-')}"
    code, out, err = run_cli(capsys, "explain", "--model", model, "--input", files["image"], "--out", out_dir, "--method", method, "--json")
    assert code == 0, err
    record = json.loads(out)[0]
    saved = np.load(record["files"]["npy"])
    assert saved.ndim == 2 and np.isfinite(saved).all() and saved.max() > 0
    if labels:  # the folder's id2label names the classes
        assert record["predicted_label"] in labels
    else:
        assert record["predicted_label"] == f"class {record['predicted']}"


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("corrupt_onnx", "not a loadable ONNX model"),
        ("no_weights", "holds no model weights"),
        ("unknown_timm", "timm has no model 'resnet5O'"),
        ("gradient_on_onnx", "methods that work on it: kernelshap, local, rise, sobol"),
        ("pretrained_not_cached", "not in the local cache"),
    ],
)
def test_bad_models_exit_2_with_one_line(capsys, files, tmp_path, case, message):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(files["onnx"].read_bytes()[:200])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((files["hf"] / "config.json").read_text())
    model, method = {
        "corrupt_onnx": (corrupt, "local"),
        "no_weights": (f"hf:{empty}", "local"),
        "unknown_timm": ("timm:resnet5O", "local"),
        "gradient_on_onnx": (files["onnx"], "saliency"),
        "pretrained_not_cached": ("timm:test_vit:pretrained", "local"),
    }[case]
    code, out, err = run_cli(capsys, "explain", "--model", model, "--input", files["image"], "--out", tmp_path / "out", "--method", method)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
