"""The headless command line: info, explain end to end, and exit status 2 for user errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import engine
from cli.main import main as cli
from engine.io.images import load_input
from tests.models import tiny_cnn

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--resize", "24", "--crop", "24"]


def run_cli(capsys, *args):
    code = cli([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_info_json_lists_versions_devices_methods_and_models(capsys):
    code, out, _ = run_cli(capsys, "info", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["versions"]["torch"] == torch.__version__
    assert data["devices"][0]["kind"] == "cpu"
    saliency = next(m for m in data["methods"] if m["name"] == "saliency")
    assert {p["name"] for p in saliency["params"]} == {"reduce", "output"}
    assert "resnet18" in data["models"]["architectures"] and "vgg16" in data["models"]["architectures"]


def test_info_summarises_a_model(capsys, scripted_tiny):
    code, out, _ = run_cli(capsys, "info", "--model", "resnet18")
    assert code == 0
    assert "layer4  Sequential  1x512x7x7" in out


def test_explain_end_to_end_writes_npy_png_json(capsys, tmp_path, rgb_png, scripted_tiny):
    model_path, eager = scripted_tiny
    out_dir = tmp_path / "out"
    code, out, err = run_cli(capsys, "explain", "--model", model_path, "--input", rgb_png, "--out", out_dir, "--json", "--param", "reduce=sum", *SMALL)
    assert code == 0, err
    records = json.loads(out)
    assert len(records) == 1
    record = records[0]
    files = {k: Path(v) for k, v in record["files"].items()}
    assert files["npy"] == out_dir / "photo.saliency.npy"
    saved = np.load(files["npy"])
    assert saved.dtype == np.float32 and saved.shape == (24, 24)
    # The saved map is exactly the engine's map for the same preprocessed input.
    tensor, _ = load_input(rgb_png, engine.Preprocess(resize=24, crop=24))
    expected = engine.explain(eager, tensor, params={"reduce": "sum"})
    np.testing.assert_allclose(saved, expected.map, rtol=1e-5, atol=1e-7)
    assert record["predicted"] == expected.predicted
    with Image.open(files["png"]) as png:
        assert png.size == (24, 24) and png.mode == "RGB"
    on_disk = json.loads(files["json"].read_text())
    assert on_disk["method"] == "saliency" and on_disk["params"] == {"reduce": "sum", "output": "logit"}
    assert on_disk["device"] == "cpu" and on_disk["elapsed_s"] > 0
    assert on_disk["versions"]["sensiscope"]
    assert on_disk["preprocess"]["crop"] == 24


def test_explain_a_folder_skips_unreadable_files_and_mirrors_classes(capsys, tmp_path, scripted_tiny):
    model_path, _ = scripted_tiny
    data = tmp_path / "data"
    for label in ("benign", "malignant"):
        (data / label).mkdir(parents=True)
        Image.fromarray(np.full((30, 30), 90, np.uint8)).save(data / label / "case1.png")
    (data / "benign" / "broken.png").write_bytes(b"not an image")
    (data / "benign" / "notes.txt").write_text("hello")
    code, out, err = run_cli(capsys, "explain", "--model", model_path, "--input", data, "--out", tmp_path / "o", "--json", *SMALL)
    assert code == 0, err
    records = json.loads(out)
    assert sorted(r["label"] for r in records) == ["benign", "malignant"]
    assert (tmp_path / "o" / "benign" / "case1.saliency.npy").is_file()
    assert (tmp_path / "o" / "malignant" / "case1.saliency.npy").is_file()
    assert "broken.png" in err and "notes.txt" in err


def test_explain_preprocessed_npy_is_used_as_is(capsys, tmp_path, scripted_tiny):
    model_path, eager = scripted_tiny
    tensor = torch.randn(3, 18, 18)
    np.save(tmp_path / "x.npy", tensor.numpy())
    code, out, err = run_cli(capsys, "explain", "--model", model_path, "--input", tmp_path / "x.npy", "--out", tmp_path / "o", "--json", "--target", "1")
    assert code == 0, err
    saved = np.load(tmp_path / "o" / "x.saliency.npy")
    np.testing.assert_allclose(saved, engine.explain(eager, tensor, target=1).map, rtol=1e-5, atol=1e-7)
    assert json.loads(out)[0]["target"] == 1
    # The record does not claim a resize or crop that was never applied.
    assert json.loads((tmp_path / "o" / "x.saliency.json").read_text())["preprocess"].startswith("none")


def test_explain_labels_appear_in_the_record(capsys, tmp_path, rgb_png, scripted_tiny):
    model_path, _ = scripted_tiny
    (tmp_path / "labels.txt").write_text("normal\nbenign\nmalignant\n")
    code, out, _ = run_cli(capsys, "explain", "--model", model_path, "--labels", tmp_path / "labels.txt", "--input", rgb_png, "--out", tmp_path / "o", "--json", "--target", "2", *SMALL)
    assert code == 0
    assert json.loads(out)[0]["target_label"] == "malignant"


def _pickled_model(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(tiny_cnn(), path)
    return path


@pytest.mark.parametrize(
    "case,args,message",
    [
        ("missing input", ["--model", "resnet18", "--input", "{tmp}/absent.png"], "no such file"),
        ("unknown method", ["--model", "resnet18", "--input", "{png}", "--method", "telepathy"], "unknown method 'telepathy'"),
        ("malformed param", ["--model", "resnet18", "--input", "{png}", "--param", "reduce"], "key=value"),
        ("bad param value", ["--model", "resnet18", "--input", "{png}", "--param", "reduce=median"], "one of maxabs, sum"),
        ("unknown model", ["--model", "resnet1800", "--input", "{png}"], "unknown model"),
        ("bad weights", ["--model", "resnet18", "--weights", "{tmp}/bad.pt", "--input", "{png}"], "not a readable PyTorch file"),
        ("pickle without trust", ["--model", "{pickle}", "--input", "{png}"], "--trust"),
        ("bad device", ["--model", "resnet18", "--input", "{png}", "--device", "tpu"], "unknown device"),
        ("target out of range", ["--model", "{script}", "--input", "{png}", "--target", "7"], "does not exist"),
        ("negative target", ["--model", "resnet18", "--input", "{png}", "--target", "-1"], "class index"),
        ("layer for a method without one", ["--model", "resnet18", "--input", "{png}", "--layer", "layer4"], "takes no layer"),
        ("missing --model", ["--input", "{png}"], "required: --model"),
    ],
)
def test_user_errors_exit_2_with_one_line(capsys, tmp_path, rgb_png, scripted_tiny, case, args, message):
    (tmp_path / "bad.pt").write_bytes(b"\x80\x02 garbage")
    names = {"tmp": tmp_path, "png": rgb_png, "pickle": _pickled_model(tmp_path), "script": scripted_tiny[0]}
    args = [a.format(**names) for a in args]
    code, out, err = run_cli(capsys, "explain", *args, "--out", tmp_path / "o", *SMALL)
    assert code == 2, err
    assert message in err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "Traceback" not in err and out == ""


def test_cuda_request_without_a_gpu_is_a_user_error(capsys, rgb_png):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code, _, err = run_cli(capsys, "explain", "--model", "resnet18", "--input", rgb_png, "--device", "cuda")
    assert code == 2 and "no CUDA GPU" in err


def _python(*args, **kwargs):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300, **kwargs)


def test_main_py_as_a_process(tmp_path, rgb_png):
    version = _python("--version")
    assert version.returncode == 0 and version.stdout.startswith("Sensiscope ")
    run = _python("explain", "--model", "resnet18", "--input", rgb_png, "--out", tmp_path, "--json", "--resize", "32", "--crop", "32")
    assert run.returncode == 0, run.stderr
    records = json.loads(run.stdout)
    assert records[0]["map_shape"] == [32, 32]
    bad = _python("explain", "--model", "resnet18", "--input", tmp_path / "nothing.png")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and bad.stderr.count("\n") == 1


def test_self_check_passes():
    run = _python("--self-check")
    assert run.returncode == 0, run.stderr
    assert "self-check passed" in run.stdout


def test_parameters_scoped_to_a_method_and_unknown_keys(capsys, tmp_path, rgb_png, scripted_tiny):
    model_path, _ = scripted_tiny
    base = ["explain", "--model", model_path, "--input", rgb_png, "--out", tmp_path, "--json", *SMALL]
    code, out, err = run_cli(capsys, *base, "--param", "saliency.reduce=sum")
    assert code == 0, err
    assert json.loads(out)[0]["params"]["reduce"] == "sum"
    code, _, err = run_cli(capsys, *base, "--param", "gradient.reduce=sum")
    assert code == 2 and "scoped to method 'gradient'" in err
    code, _, err = run_cli(capsys, *base, "--param", "window=3")
    assert code == 2 and "unknown parameter 'window'" in err


def test_compare_needs_two_methods(capsys, tmp_path, rgb_png):
    code, _, err = run_cli(capsys, "explain", "--model", "resnet18", "--input", rgb_png, "--compare", *SMALL)
    assert code == 2 and "at least two methods" in err


def test_the_sidecar_json_keeps_the_methods_scalar_extras(capsys, tmp_path, rgb_png, scripted_tiny):
    model_path, _ = scripted_tiny
    code, _, err = run_cli(capsys, "explain", "--model", model_path, "--input", rgb_png, "--out", tmp_path, "--method", "local", "--param", "window=8", *SMALL)
    assert code == 0, err
    extras = json.loads((tmp_path / "photo.local.json").read_text())["extras"]
    assert extras["forward_passes"] == extras["windows"] + 1 == 10  # 3 x 3 windows of 8 on 24 px, and x
    assert extras["engine"] == "dense" and any("TorchScript" in note for note in extras["notes"])
    assert "window_values" not in extras  # arrays stay out of the JSON
