"""The command line on a user's own network (a class in their file, grey-scale 32 x 32, saved as a
state dict): every command takes the same model, preprocessing, target and layer options; bad
options are one line and leave no file behind."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from cli.main import main as cli
from tests.engine.test_own_model import write_net

ROOT = Path(__file__).resolve().parents[2]


def one_error(err: str) -> str:
    """The error line of a refused command (notes may come before it); asserts there is one."""
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and err.rstrip().splitlines()[-1] == errors[0], err
    return errors[0]


def run_cli(capsys, *args):
    code = cli([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def own(tmp_path_factory):
    root = tmp_path_factory.mktemp("own")
    net_py, weights, _ = write_net(root)
    rng = np.random.default_rng(0)
    folder = root / "digits"
    for label in ("zero", "one"):
        (folder / label).mkdir(parents=True)
        for i in range(2):
            Image.fromarray((rng.random((40, 40)) * 255).astype(np.uint8)).save(folder / label / f"{label}{i}.png")
    Image.fromarray((rng.random((40, 40, 3)) * 255).astype(np.uint8)).save(root / "colour.png")
    return {"root": root, "net": f"{net_py}:DigitNet", "weights": weights, "folder": folder, "image": folder / "one" / "one0.png", "colour": root / "colour.png"}


MODEL_ARGS = '{"classes": 4}'


def test_explain_grad_cam_on_an_inner_layer_of_a_class_from_a_file(own, tmp_path):
    """As a user types it: a subprocess, the class from their file, constructor arguments as JSON."""
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "main.py", "explain", "--model", own["net"], "--weights", own["weights"], "--model-args", MODEL_ARGS,
         "--input", own["colour"], "--method", "gradcam", "--layer", "body.2.conv", "--target", "3", "--out", out, "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    record = json.loads(done.stdout)[0]
    assert record["target"] == 3 and record["params"]["layer"] == "body.2.conv"
    assert "colour images are converted to grey" in done.stderr and "1 channel(s) at 32 x 32" in done.stderr
    assert np.load(out / "colour.gradcam.npy").shape == (32, 32)


def test_batch_and_evaluate_take_preprocessing_layer_and_target(own, tmp_path, capsys):
    store = tmp_path / "store"
    code, out, err = run_cli(capsys, "batch", "--model", own["net"], "--weights", own["weights"], "--model-args", MODEL_ARGS, "--data", own["folder"],
                             "--methods", "gradcam,saliency", "--layer", "body.0.conv", "--target", "1", "--resize", "36", "--crop", "32", "--mean", "0.5", "--std", "0.25", "--store", store)
    assert code == 0, err
    records = pd.read_parquet(store / "records")
    assert len(records) == 8 and set(records["target"]) == {1}
    settings = json.loads((store / "manifest.json").read_text())["settings"]
    assert settings["model_args"] == {"classes": 4} and settings["preprocess"] == {"resize": 36, "crop": 32, "mean": [0.5], "std": [0.25]}
    assert settings["methods"]["gradcam"]["layer"] == "body.0.conv" and settings["target"] == 1
    # A resume with other preprocessing is refused: the store records what the model saw.
    code, _, err = run_cli(capsys, "batch", "--model", own["net"], "--weights", own["weights"], "--model-args", MODEL_ARGS, "--data", own["folder"],
                           "--methods", "gradcam,saliency", "--layer", "body.0.conv", "--target", "1", "--store", store, "--resume")
    assert code == 2 and "preprocess.crop" in one_error(err)

    code, out, err = run_cli(capsys, "evaluate", "--model", own["net"], "--weights", own["weights"], "--model-args", MODEL_ARGS, "--data", own["folder"],
                             "--methods", "gradcam,local", "--layer", "body.2.conv", "--param", "local.window=8", "--param", "local.stride=8",
                             "--n", "4", "--sanity-images", "0", "--steps", "4", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["n_images"] == 4 and [m["method"] for m in report["methods"]] == ["gradcam", "local"]


def test_bad_options_are_one_line_and_leave_nothing_behind(own, tmp_path, capsys):
    store, out = tmp_path / "store", tmp_path / "out"
    cases = [
        (["batch", "--data", own["folder"], "--methods", "gradcam", "--store", store, "--resize", "64", "--crop", "64"], "does not take 1-channel 64 x 64 inputs"),
        (["batch", "--data", own["folder"], "--methods", "gradcam", "--store", store, "--layer", "body.9"], "body.9"),
        (["batch", "--data", own["folder"], "--methods", "gradcam", "--store", store, "--target", "malignant"], "has no class names"),
        (["explain", "--input", own["image"], "--out", out, "--channels", "3"], "--channels"),
        (["explain", "--input", own["image"], "--out", out, "--target", "7"], "target 7 is not a class"),
    ]
    for extra, message in cases:
        code, _, err = run_cli(capsys, *extra[:1], "--model", own["net"], "--weights", own["weights"], "--model-args", MODEL_ARGS, *extra[1:])
        assert code == 2 and message in one_error(err), (extra, err)
        assert not store.exists() and not out.exists(), extra
    code, _, err = run_cli(capsys, "explain", "--model", f"{own['net']}x", "--weights", own["weights"], "--input", own["image"], "--out", out)
    assert code == 2 and err.strip() == "error: net.py defines no 'DigitNetx'; its model classes: Block, DigitNet"
    code, _, err = run_cli(capsys, "explain", "--model", own["net"], "--model-args", "{classes: 4}", "--input", own["image"], "--out", out)
    assert code == 2 and "--model-args: not valid JSON" in err


def test_info_writes_a_sidecar_that_the_next_command_reads(own, tmp_path, capsys):
    import shutil

    weights = tmp_path / "copy.pth"
    shutil.copy(own["weights"], weights)
    code, out, err = run_cli(capsys, "info", "--model", own["net"], "--weights", weights, "--model-args", MODEL_ARGS, "--write-sidecar")
    assert code == 0, err
    assert "sidecar written" in out and "body.2.conv  Conv2d  1x16x16x16" in out
    sidecar = json.loads((tmp_path / "copy.json").read_text())
    assert sidecar["sidecar_version"] == 1 and sidecar["model_args"] == {"classes": 4} and sidecar["input_size"] == [32, 32]
    # No constructor arguments and no preprocessing on the command line: the sidecar has them.
    code, out, err = run_cli(capsys, "explain", "--model", own["net"], "--weights", weights, "--input", own["image"], "--out", tmp_path / "o", "--method", "gradcam", "--json")
    assert code == 0, err
    assert "no preprocessing is stated" not in err
    # A second write would replace a file Sensiscope wrote: allowed; a foreign file is kept.
    (tmp_path / "copy.json").write_text('{"in_channels": 1}')
    code, _, err = run_cli(capsys, "info", "--model", own["net"], "--weights", weights, "--model-args", MODEL_ARGS, "--write-sidecar")
    assert code == 2 and "refusing to replace" in err


def test_every_model_command_takes_the_same_options(capsys):
    """The shared option groups: explain, batch, evaluate and info accept the model and
    preprocessing options; those that explain accept --target and --layer."""
    from cli.main import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    model_options = {"--model", "--weights", "--model-args", "--labels", "--trust", "--num-classes", "--allow-download", "--resize", "--crop", "--mean", "--std", "--channels"}
    for name in ("info", "explain", "batch", "evaluate"):
        options = {o for action in commands[name]._actions for o in action.option_strings}
        assert model_options <= options, (name, model_options - options)
        if name != "info":
            assert {"--target", "--layer"} <= options, name


def test_a_resume_refuses_another_network_or_preprocessing_at_the_same_paths(own, tmp_path, capsys):
    """The store keeps a fingerprint of the model: the same command after the weights file was
    replaced by another network, or after the sidecar's mean was edited, is refused in one line."""
    import shutil

    net_py = own["net"].rpartition(":")[0]
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(net_py, folder / "net.py")
    shutil.copy(own["weights"], folder / "w.pth")
    store = tmp_path / "store"
    command = ["batch", "--model", f"{folder / 'net.py'}:DigitNet", "--weights", folder / "w.pth", "--model-args", MODEL_ARGS,
               "--data", own["folder"], "--methods", "saliency", "--store", store, "--max-pairs", "2"]
    code, _, err = run_cli(capsys, *command)
    assert code == 0, err
    fingerprint = json.loads((store / "manifest.json").read_text())["settings"]["fingerprint"]
    assert set(fingerprint) == {"sensiscope", "model_file", "weights", "preprocess"} and len(fingerprint["weights"]) == 64

    (tmp_path / "other").mkdir()
    write_net(tmp_path / "other", seed=7)  # another network of the same shape
    shutil.copy(tmp_path / "other" / "net.pth", folder / "w.pth")
    code, _, err = run_cli(capsys, *command, "--resume")
    assert code == 2 and "the weights file's contents" in one_error(err)

    shutil.copy(own["weights"], folder / "w.pth")  # the original weights back: the resume goes on
    code, _, err = run_cli(capsys, *command, "--resume")
    assert code == 0, err
    (folder / "w.json").write_text(json.dumps({"model_args": {"classes": 4}, "preprocess": {"resize": 32, "crop": 32, "mean": [0.3], "std": [0.2], "channels": 1}}))
    code, _, err = run_cli(capsys, *command, "--resume")
    message = one_error(err)
    assert code == 2 and "the sidecar beside the model" in message and "the preprocessing the model gets (mean)" in message
