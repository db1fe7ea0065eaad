"""explain's run settings (--batch-size, --memory-budget), the former spelling --param batch_size=N,
and one line where a command has no such setting."""

from __future__ import annotations

import json

from cli.main import main as cli

SMALL = ["--resize", "24", "--crop", "24"]


def run_cli(capsys, *args):
    code = cli([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def _explain(capsys, tmp_path, model, image, *extra):
    return run_cli(capsys, "explain", "--model", model, "--input", image, "--method", "rise", "--param", "masks=20", "--out", tmp_path / "o", "--json", "--overwrite", *SMALL, *extra)


def test_batch_size_and_memory_budget_are_run_settings(capsys, tmp_path, rgb_png, scripted_tiny):
    code, out, err = _explain(capsys, tmp_path, scripted_tiny[0], rgb_png, "--batch-size", "6", "--memory-budget", "64")
    assert code == 0, err
    (record,) = json.loads(out)
    assert record["extras"]["batch_size_used"] == 6 and record["extras"]["memory_budget_mb"] == 64
    assert "batch_size" not in record["params"]


def test_the_former_parameter_still_sets_the_batch(capsys, tmp_path, rgb_png, scripted_tiny):
    code, out, err = _explain(capsys, tmp_path, scripted_tiny[0], rgb_png, "--param", "batch_size=5")
    assert code == 0, err
    assert json.loads(out)[0]["extras"]["batch_size_used"] == 5
    code, _, err = _explain(capsys, tmp_path, scripted_tiny[0], rgb_png, "--param", "batch_size=5", "--batch-size", "4")
    assert code == 2 and "disagree" in err and len(err.strip().splitlines()) == 1


def test_batch_refuses_the_former_parameter_in_one_line(capsys, tmp_path, scripted_tiny):
    code, _, err = run_cli(capsys, "batch", "--model", scripted_tiny[0], "--data", tmp_path, "--methods", "rise", "--param", "batch_size=8", "--store", tmp_path / "s")
    assert code == 2
    assert "batch_size is a setting of the run" in err and len(err.strip().splitlines()) == 1
