"""Hostile and odd inputs to the command line: each gets one clear line and exit status 2, never a
traceback or a hang, and no file the user owns is replaced."""

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
from safetensors.torch import save_file

from cli.main import main as cli
from engine.io.images import read_image, scan_inputs
from tests.models import tiny_cnn

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--resize", "24", "--crop", "24"]


def run_cli(capsys, *args):
    code = cli([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def run_process(*args, timeout=120):
    """The CLI as a user starts it, in its own process (a hang becomes a test failure, not a stuck suite)."""
    return subprocess.run([sys.executable, str(ROOT / "main.py"), *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def assert_one_clear_line(code, err):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a POSIX feature")
def test_a_fifo_as_input_or_labels_is_refused_without_hanging(tmp_path, rgb_png, scripted_tiny):
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    labels = tmp_path / "labels.txt"
    os.mkfifo(labels)
    model, _ = scripted_tiny
    run = run_process("explain", "--model", model, "--input", fifo, "--out", tmp_path / "o", *SMALL)
    assert_one_clear_line(run.returncode, run.stderr)
    assert "not a regular file" in run.stderr
    run = run_process("explain", "--model", model, "--input", rgb_png, "--labels", labels, "--out", tmp_path / "o", *SMALL)
    assert_one_clear_line(run.returncode, run.stderr)
    assert "not a regular file" in run.stderr


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
@pytest.mark.parametrize("option", ["--weights", "--labels"])
def test_dev_zero_as_weights_or_labels_is_refused_at_once(capsys, tmp_path, rgb_png, option):
    code, _, err = run_cli(capsys, "explain", "--model", "resnet18", option, "/dev/zero", "--input", rgb_png, "--out", tmp_path / "o")
    assert_one_clear_line(code, err)
    assert "/dev/zero: is not a regular file" in err


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_dev_zero_as_the_model_is_refused(capsys, tmp_path, rgb_png):
    code, _, err = run_cli(capsys, "explain", "--model", "/dev/zero", "--input", rgb_png, "--out", tmp_path / "o")
    assert_one_clear_line(code, err)
    assert "not a regular file" in err


def test_an_extreme_aspect_ratio_is_refused_before_allocating(capsys, tmp_path, scripted_tiny):
    strip = tmp_path / "strip.png"
    Image.fromarray(np.zeros((1, 60000), np.uint8)).save(strip)
    code, _, err = run_cli(capsys, "explain", "--model", "resnet18", "--input", strip, "--out", tmp_path / "o")
    assert_one_clear_line(code, err)
    assert "1 x 60000" in err and "megapixel" in err


def test_in_a_folder_the_extreme_image_is_skipped_and_the_others_explained(capsys, tmp_path, scripted_tiny):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.zeros((1, 60000), np.uint8)).save(folder / "strip.png")
    Image.fromarray(np.full((30, 30, 3), 120, np.uint8)).save(folder / "fine.png")
    model, _ = scripted_tiny
    code, out, err = run_cli(capsys, "explain", "--model", model, "--input", folder, "--out", tmp_path / "o", "--json", "--resize", "24", "--crop", "none")
    assert code == 0, err
    assert [Path(r["input"]).name for r in json.loads(out)] == ["fine.png"]
    assert "skipped" in err and "strip.png" in err and "1 explained, 1 skipped" in err


def test_inputs_sharing_a_stem_get_distinct_result_files(capsys, tmp_path, scripted_tiny):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(np.full((30, 30, 3), 10, np.uint8)).save(folder / "good.png")
    Image.fromarray(np.full((30, 30, 3), 200, np.uint8)).save(folder / "good.jpg")
    model, _ = scripted_tiny
    code, out, err = run_cli(capsys, "explain", "--model", model, "--input", folder, "--out", tmp_path / "o", "--json", *SMALL)
    assert code == 0, err
    files = sorted(Path(r["files"]["npy"]).name for r in json.loads(out))
    assert files == ["good_jpg.saliency.npy", "good_png.saliency.npy"]
    assert not np.array_equal(np.load(tmp_path / "o" / files[0]), np.load(tmp_path / "o" / files[1]))
    assert [item.output_stem.name for item in scan_inputs(folder).items] == ["good_jpg", "good_png"]


def test_a_result_never_replaces_a_file_sensiscope_did_not_write(capsys, tmp_path, rgb_png, scripted_tiny):
    model, _ = scripted_tiny
    out_dir = tmp_path / "o"
    out_dir.mkdir()
    precious = out_dir / "photo.saliency.png"
    precious.write_bytes(b"my holiday picture")
    code, _, err = run_cli(capsys, "explain", "--model", model, "--input", rgb_png, "--out", out_dir, *SMALL)
    assert_one_clear_line(code, err)
    assert "not written by Sensiscope" in err and "--overwrite" in err
    assert precious.read_bytes() == b"my holiday picture"
    assert not (out_dir / "photo.saliency.npy").exists()  # refused before any work, not half-way
    code, _, err = run_cli(capsys, "explain", "--model", model, "--input", rgb_png, "--out", out_dir, "--overwrite", *SMALL)
    assert code == 0, err
    assert precious.read_bytes().startswith(b"\x89PNG")


def test_rerunning_into_its_own_results_replaces_them(capsys, tmp_path, rgb_png, scripted_tiny):
    model, _ = scripted_tiny
    for _ in range(2):
        code, _, err = run_cli(capsys, "explain", "--model", model, "--input", rgb_png, "--out", tmp_path / "o", *SMALL)
        assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "o").iterdir() if not p.name.startswith(".")) == ["photo.saliency.json", "photo.saliency.npy", "photo.saliency.png"]
    assert not [p for p in (tmp_path / "o").iterdir() if ".part" in p.name]  # no temporary file left behind


def test_a_result_file_someone_edited_after_sensiscope_wrote_it_is_protected(capsys, tmp_path, rgb_png, scripted_tiny):
    model, _ = scripted_tiny
    code, _, _ = run_cli(capsys, "explain", "--model", model, "--input", rgb_png, "--out", tmp_path / "o", *SMALL)
    assert code == 0
    edited = tmp_path / "o" / "photo.saliency.json"
    edited.write_text('{"my notes": true}')
    code, _, err = run_cli(capsys, "explain", "--model", model, "--input", rgb_png, "--out", tmp_path / "o", *SMALL)
    assert_one_clear_line(code, err)
    assert edited.read_text() == '{"my notes": true}'


@pytest.mark.parametrize(
    ("meta", "field"),
    [
        ({"num_classes": "abc"}, "num_classes"),
        ({"preprocess": {"resize": "abc"}}, "preprocess"),
        ({"in_channels": 7}, "in_channels"),
        ({"labels": "cat"}, "labels"),
        ({"num_classes": 10**9}, "num_classes"),
    ],
)
def test_malformed_metadata_beside_weights_names_the_field(capsys, tmp_path, rgb_png, meta, field):
    weights = tmp_path / "net.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_cnn(seed=0).state_dict().items()}, str(weights))
    weights.with_suffix(".json").write_text(json.dumps(meta))
    code, _, err = run_cli(capsys, "explain", "--model", "resnet18", "--weights", weights, "--input", rgb_png, "--out", tmp_path / "o")
    assert_one_clear_line(code, err)
    assert f"'{field}'" in err


def test_an_onnx_file_gets_a_clear_line_and_no_torch_warning(tmp_path, rgb_png):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07\x12\x07pytorch")
    run = run_process("explain", "--model", onnx, "--input", rgb_png, "--out", tmp_path / "o")
    assert_one_clear_line(run.returncode, run.stderr)
    assert "ONNX" in run.stderr and "weights_only" not in run.stderr


def test_a_corrupt_torchscript_file_message_has_a_reason(capsys, tmp_path, rgb_png, scripted_tiny):
    model, _ = scripted_tiny
    broken = tmp_path / "broken.pt"
    data = Path(model).read_bytes()
    broken.write_bytes(data[: len(data) // 2])
    code, _, err = run_cli(capsys, "explain", "--model", broken, "--input", rgb_png, "--out", tmp_path / "o")
    assert_one_clear_line(code, err)
    assert "()" not in err


def test_labels_are_checked_against_a_torchscript_models_outputs(capsys, tmp_path, rgb_png, scripted_tiny):
    model, _ = scripted_tiny  # three outputs
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    code, _, err = run_cli(capsys, "explain", "--model", model, "--labels", labels, "--input", rgb_png, "--out", tmp_path / "o", *SMALL)
    assert_one_clear_line(code, err)
    assert "2 class names" in err and "3 outputs" in err


def test_an_absurd_class_count_is_refused(capsys, tmp_path, rgb_png):
    code, _, err = run_cli(capsys, "explain", "--model", "resnet18", "--num-classes", "1000000000", "--input", rgb_png, "--out", tmp_path / "o")
    assert_one_clear_line(code, err)
    assert "--num-classes" in err and "100000" in err


def test_exif_orientation_is_honoured(tmp_path):
    pixels = np.zeros((40, 60, 3), np.uint8)
    pixels[:, :10] = 255  # a bright left edge
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "portrait.jpg", exif=exif, quality=95)
    shown = read_image(tmp_path / "portrait.jpg")
    assert shown.shape == (60, 40, 3)
    assert shown[:10].mean() > 0.9 and shown[-10:].mean() < 0.1  # the bright edge is now at the top


def test_a_folder_given_as_weights_says_so(capsys, tmp_path, rgb_png):
    code, _, err = run_cli(capsys, "explain", "--model", "resnet18", "--weights", tmp_path, "--input", rgb_png, "--out", tmp_path / "o")
    assert_one_clear_line(code, err)
    assert "is a folder" in err


def test_weights_that_do_not_fit_raise_the_typed_error():
    from engine.core.errors import WeightsMismatch
    from engine.models.weights import load_weights_into

    with pytest.raises(WeightsMismatch) as caught:
        load_weights_into(tiny_cnn(seed=0), {"nothing": torch.zeros(1)}, "file.pt", "tiny")
    assert caught.value.unexpected == ["nothing"] and caught.value.missing


def test_phantom_never_writes_over_a_users_images(capsys, tmp_path):
    (tmp_path / "normal").mkdir()
    mine = tmp_path / "normal" / "0000.png"
    mine.write_bytes(b"my scan")
    code, _, err = run_cli(capsys, "phantom", "--out", tmp_path, "--n", "3", "--size", "32")
    assert_one_clear_line(code, err)
    assert mine.read_bytes() == b"my scan"
    code, _, err = run_cli(capsys, "phantom", "--out", tmp_path / "new", "--n", "3", "--size", "32")
    assert code == 0, err
    code, _, err = run_cli(capsys, "phantom", "--out", tmp_path / "new", "--n", "3", "--size", "32")  # its own set: rewritten
    assert code == 0, err
    assert not list((tmp_path / "new").rglob("*.part*"))
