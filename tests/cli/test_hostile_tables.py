"""Odd tables and options of the tabular commands: one clear line, exit status 2, and no user file
replaced."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli.main import main as cli
from engine.core.errors import UserError
from engine.stats.sobol import check_design_memory, sobol_indices
from engine.tabular import TrainConfig


def run_cli(capsys, *args):
    code = cli([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_clear_line(code, err):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err


def test_train_never_replaces_a_file_it_did_not_write(capsys, tmp_path):
    precious = tmp_path / "precious.json"
    precious.write_text('{"my": "notes"}')
    code, _, err = run_cli(capsys, "train", "--data", "demo:pima", "--target", "type", "--out", precious, "--epochs", "2")
    assert_one_clear_line(code, err)
    assert "not written by Sensiscope" in err
    assert precious.read_text() == '{"my": "notes"}'
    assert not (tmp_path / "precious.safetensors").exists()


def test_train_replaces_its_own_model_and_with_overwrite_a_foreign_file(capsys, tmp_path):
    out = tmp_path / "model"
    for _ in range(2):
        code, _, err = run_cli(capsys, "train", "--data", "demo:pima", "--target", "type", "--out", out, "--epochs", "2")
        assert code == 0, err
    (tmp_path / "model.json").write_text("{}")  # someone edited it: ours no more
    code, _, err = run_cli(capsys, "train", "--data", "demo:pima", "--target", "type", "--out", out, "--epochs", "2")
    assert_one_clear_line(code, err)
    code, _, err = run_cli(capsys, "train", "--data", "demo:pima", "--target", "type", "--out", out, "--epochs", "2", "--overwrite")
    assert code == 0, err
    assert json.loads((tmp_path / "model.json").read_text())["format"] == "sensiscope-tabular"


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--out", "."],
        ["train", "--out", "m", "--hidden", "1000000000,1000000000"],
        ["train", "--out", "m", "--lr", "nan"],
        ["train", "--out", "m", "--lr", "inf"],
        ["train", "--out", "m", "--weight-decay", "nan"],
        ["train", "--out", "m", "--seed", "-1"],
        ["sobol", "--train", "--n", str(2**40)],
        ["reduce", "--tolerance", "nan"],
    ],
)
def test_out_of_range_options_are_one_line(capsys, tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, argv[0], "--data", "demo:pima", "--target", "type", *argv[1:])
    assert_one_clear_line(code, err)


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("a;b;y\n1,5;2,25;0\n2,5;3,75;1\n3,5;1,0;0\n4,25;2,0;1\n", "decimal comma"),
        ("a,b,y\n1,inf,0\n2,3,1\n3,1,0\n4,2,1\n", "infinite"),
        ("a,b,y\n1,1e308,0\n2,3,1\n3,1,0\n4,2,1\n", "overflow"),
    ],
)
def test_tables_that_would_train_on_nonsense_are_refused(capsys, tmp_path, content, words):
    table = tmp_path / "t.csv"
    table.write_text(content)
    code, _, err = run_cli(capsys, "train", "--data", table, "--target", "y", "--out", tmp_path / "m")
    assert_one_clear_line(code, err)
    assert words in err


def test_a_folder_as_data_says_it_is_a_folder(capsys, tmp_path):
    code, _, err = run_cli(capsys, "train", "--data", tmp_path, "--target", "y", "--out", tmp_path / "m")
    assert_one_clear_line(code, err)
    assert "is a folder" in err


def test_a_sobol_design_beyond_memory_is_refused_before_sampling():
    names = [f"x{i}" for i in range(10_000)]
    problem = {"names": names, "bounds": [[0.0, 1.0]] * len(names), "num_vars": len(names)}
    with pytest.raises(UserError, match="GiB"):
        sobol_indices(lambda x: x.sum(axis=1), problem, n=1024, second_order=True)
    # The same check with a known amount of memory: 1 GiB free takes N = 1024 for 3 inputs, not N = 2**20.
    check_design_memory(1024, 3, True, available=2**30)
    with pytest.raises(UserError, match="smaller N"):
        check_design_memory(2**20, 3, True, available=2**30)


@pytest.mark.parametrize("field", [{"lr": float("inf")}, {"dropout": float("nan")}, {"hidden": (10**9,)}, {"seed": -1}])
def test_the_training_settings_refuse_the_same_values_from_python(field):
    with pytest.raises(UserError):
        TrainConfig(**field)


def test_nan_free_json_even_when_a_metric_is_undefined(capsys, tmp_path):
    table = tmp_path / "t.csv"
    rng = np.random.default_rng(0)
    rows = ["a,b,y"] + [f"{rng.normal():.3f},{rng.normal():.3f},{i % 2}" for i in range(40)]
    table.write_text("\n".join(rows) + "\n")
    code, out, err = run_cli(capsys, "train", "--data", table, "--target", "y", "--out", tmp_path / "m", "--epochs", "2", "--json")
    assert code == 0, err
    assert "NaN" not in out and "Infinity" not in out
    json.loads(out)
