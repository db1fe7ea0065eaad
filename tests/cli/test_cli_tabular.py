"""The tabular sub-commands in process: train, sobol and reduce on the embedded Pima table, and
user errors as exit status 2 with one line on stderr."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli import tabular
from cli.main import build_parser
from cli.main import main as cli
from cli.tabular import _config
from engine.core.errors import UserError
from engine.core.vocab import ACTIVATIONS, DISTRIBUTIONS, MISSING_POLICIES, TABULAR_TRAINING
from engine.demo.catalogue import resolve_table
from engine.tabular import TrainConfig
from engine.tabular.network import ACTIVATION_LAYERS

PIMA = ["--data", "demo:pima", "--target", "type"]
FEATURES = ["npreg", "glu", "bp", "skin", "bmi", "ped", "age"]
TRAIN = ["--epochs", "150", "--seed", "0"]


def run_cli(capsys, *args):
    code = cli([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """`train` on demo:pima, run once for the module: (exit code, stdout, stderr, model stem)."""
    stem = tmp_path_factory.mktemp("model") / "pima"
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli(["train", *PIMA, *TRAIN, "--out", str(stem), "--json"])
    return code, out.getvalue(), err.getvalue(), stem


def _check_sobol_report(report: dict, n: int) -> None:
    names = [row["name"] for row in report["features"]]
    assert sorted(names) == sorted(FEATURES)
    st = [row["ST"] for row in report["features"]]
    assert st == sorted(st, reverse=True)
    for row in report["features"]:
        assert set(row) == {"name", "S1", "S1_conf", "ST", "ST_conf"}
        assert all(isinstance(row[k], float) for k in ("S1", "S1_conf", "ST", "ST_conf"))
        assert row["ST_conf"] >= 0 and -0.2 < row["S1"] <= row["ST"] + 0.2
    assert report["n"] == n and report["names"] == FEATURES
    assert set(report["timings_s"]) == {"sampling", "evaluation", "analysis", "total", "convergence"}
    assert report["timings_s"]["convergence"] >= 0
    assert report["timings_s"]["total"] > 0
    assert report["output"] == "P(type = Yes)" and report["distribution"] == "empirical"
    assert report["metrics"]["n_test"] == 332 and report["metrics"]["accuracy"] >= 0.72


def test_train_writes_the_model_pair_and_prints_only_json(trained):
    code, out, err, stem = trained
    assert code == 0, err
    summary = json.loads(out)  # stdout is nothing but the JSON document
    assert Path(summary["model"]) == stem.with_suffix(".safetensors") and stem.with_suffix(".safetensors").is_file()
    assert Path(summary["metadata"]) == stem.with_suffix(".json") and stem.with_suffix(".json").is_file()
    assert summary["features"] == FEATURES and summary["classes"] == ["No", "Yes"] and summary["task"] == "classification"
    assert "split" in summary["split"]
    assert summary["metrics"]["accuracy"] >= 0.72 and summary["metrics"]["roc_auc"] >= 0.78
    assert 1 <= summary["epochs_run"] <= 150
    meta = json.loads(stem.with_suffix(".json").read_text())
    assert meta["format"] == "sensiscope-tabular" and meta["classes"] == ["No", "Yes"]
    assert [f["name"] for f in meta["features"]] == FEATURES


def test_train_text_output(capsys, tmp_path):
    code, out, err = run_cli(capsys, "train", *PIMA, "--features", "glu,bmi,age", "--epochs", "20", "--hidden", "8", "--out", tmp_path / "small")
    assert code == 0, err
    assert "trained on 160 rows" in out and "test (332 rows): accuracy" in out
    assert (tmp_path / "small.safetensors").is_file()
    meta = json.loads((tmp_path / "small.json").read_text())
    assert meta["config"]["hidden"] == [8] and [f["name"] for f in meta["features"]] == ["glu", "bmi", "age"]


def test_sobol_with_a_saved_model_and_with_train_agree(capsys, trained):
    stem = trained[3]
    code, out, err = run_cli(capsys, "sobol", *PIMA, "--model", stem, "--n", "512", "--json")
    assert code == 0, err
    saved = json.loads(out)
    _check_sobol_report(saved, 512)
    assert saved["S2"] is None and saved["n_evaluations"] == 512 * (7 + 2)
    # The saved model scores the same test rows as when it was trained.
    assert saved["metrics"]["accuracy"] == json.loads(trained[1])["metrics"]["accuracy"]
    code, out, err = run_cli(capsys, "sobol", *PIMA, "--train", *TRAIN, "--networks", "1", "--n", "512", "--json")
    assert code == 0, err
    fresh = json.loads(out)
    _check_sobol_report(fresh, 512)
    # Same data, seed and settings: the same network, so the same indices.
    assert fresh["metrics"]["accuracy"] == saved["metrics"]["accuracy"]
    assert [r["name"] for r in fresh["features"]] == [r["name"] for r in saved["features"]]
    for a, b in zip(fresh["features"], saved["features"], strict=True):
        assert a["ST"] == pytest.approx(b["ST"], abs=1e-5)


def test_sobol_second_order_and_files(capsys, trained, tmp_path):
    out_dir = tmp_path / "sobol"
    code, out, err = run_cli(capsys, "sobol", *PIMA, "--model", trained[3], "--n", "256", "--second-order", "--class", "No", "--out", out_dir, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["output"] == "P(type = No)"
    assert report["n_evaluations"] == 256 * (2 * 7 + 2)
    s2 = report["S2"]
    assert len(s2) == 7 and all(len(row) == 7 for row in s2)
    for i in range(7):
        for j in range(7):
            assert (s2[i][j] is None) if j <= i else isinstance(s2[i][j], float)
    for name in ("sobol_indices.csv", "sobol_convergence.csv", "sobol_indices.png", "sobol_s2.csv"):
        assert (out_dir / name).is_file(), name
    assert Path(report["files"]["s2_csv"]) == out_dir / "sobol_s2.csv"
    with open(out_dir / "sobol_indices.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["feature"] for r in rows] == [r["name"] for r in report["features"]]
    assert float(rows[0]["ST"]) == pytest.approx(report["features"][0]["ST"], abs=1e-6)
    with Image.open(out_dir / "sobol_indices.png") as png:
        assert png.size[0] >= 400 and png.size[1] >= 300


def test_sobol_text_output(capsys, trained):
    code, out, err = run_cli(capsys, "sobol", *PIMA, "--model", trained[3], "--n", "256", "--dist", "uniform")
    assert code == 0, err
    assert "Sobol indices of P(type = Yes), N = 256" in out and "uniform inputs" in out
    assert sum(line.split()[0] in FEATURES for line in out.splitlines() if line.split()) == 7


def test_reduce_json_and_files(capsys, tmp_path):
    code, out, err = run_cli(capsys, "reduce", *PIMA, "--seeds", "1", "--n", "256", "--epochs", "60", "--networks", "2", "--workers", "1", "--out", tmp_path / "reduce", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["sobol"]["networks"] == 2 and report["workers"] == 1 and 0 <= report["sobol"]["kendall_w"] <= 1
    assert report["metric"] == "accuracy" and report["rank_by"] == "ST"
    ranking = report["ranking"]
    assert sorted(ranking) == sorted(FEATURES)
    st = dict(zip(report["sobol"]["names"], report["sobol"]["ST"], strict=True))
    assert [st[n] for n in ranking] == sorted(st.values(), reverse=True)
    assert 1 <= report["recommended_k"] <= 7
    assert report["recommended_features"] == ranking[: report["recommended_k"]]
    rows = report["rows"]
    assert [(r["k"], r["selection"]) for r in rows] == [(k, "ranked") for k in range(7, 0, -1)] + [(k, "random") for k in range(6, 0, -1)]
    assert report["full_score"] == rows[0]["accuracy_mean"]
    recommended = next(r for r in rows if r["selection"] == "ranked" and r["k"] == report["recommended_k"])
    assert recommended["accuracy_mean"] >= report["full_score"] - report["tolerance"]
    assert all(r["accuracy_mean"] < report["full_score"] - report["tolerance"] for r in rows if r["selection"] == "ranked" and r["k"] < report["recommended_k"])
    assert (tmp_path / "reduce" / "reduction.csv").is_file() and (tmp_path / "reduce" / "reduction.png").is_file()


def test_sobol_ensemble_reports_mean_spread_bootstrap_ranks_and_w(capsys, tmp_path):
    code, out, err = run_cli(capsys, "sobol", *PIMA, "--train", "--epochs", "30", "--networks", "3", "--n", "128", "--out", tmp_path / "o", "--json")
    assert code == 0, err
    report = json.loads(out)
    ensemble = report["ensemble"]
    assert ensemble["networks"] == 3 and ensemble["seeds"] == [0, 1, 2] and 0 <= ensemble["kendall_w"] <= 1
    runs = np.array([r["values"]["ST"] for r in ensemble["runs"]])
    st = {row["name"]: row["ST"] for row in report["features"]}
    for row in ensemble["summary"]:
        i = FEATURES.index(row["name"])
        assert row["mean"] == pytest.approx(runs[:, i].mean()) and st[row["name"]] == pytest.approx(row["mean"])
        assert row["spread"] == pytest.approx(runs[:, i].std(ddof=1)) and row["conf"] > 0 and len(row["ranks"]) == 3
    assert report["metrics"]["accuracy"] == pytest.approx(np.mean([m["accuracy"] for m in report["metrics"]["per_network"]]))
    assert (tmp_path / "o" / "sobol_ensemble.csv").is_file()
    code, out, err = run_cli(capsys, "sobol", *PIMA, "--train", "--epochs", "30", "--networks", "2", "--n", "128")
    assert code == 0, err
    assert "spread   +-boot  ranks per network" in out and "Kendall's W (agreement of the 2 networks' rankings)" in out


def test_sensitivity_methods_and_the_comparison_table(capsys, trained, tmp_path):
    code, out, err = run_cli(capsys, "sensitivity", *PIMA, "--model", trained[3], "--method", "sobol,morris,delta,pawn,dgsm", "--n", "128", "--out", tmp_path / "s", "--json")
    assert code == 0, err
    report = json.loads(out)  # SALib's notices never reach stdout
    assert list(report["methods"]) == ["sobol", "morris", "delta", "pawn", "dgsm"]
    assert report["methods"]["delta"]["runs"][0]["n_evaluations"] == 532  # the observed rows
    comparison = report["comparison"]
    assert comparison["methods"] == list(report["methods"]) and 0 <= comparison["kendall_w"] <= 1
    for method, ranks in comparison["ranks"].items():
        assert sorted(ranks) == list(range(1, 8)), method
        assert FEATURES[ranks.index(1)] == report["methods"][method]["ranking"][0]
    assert (tmp_path / "s" / "method_comparison.csv").is_file() and (tmp_path / "s" / "morris_ensemble.csv").is_file()
    code, out, err = run_cli(capsys, "sensitivity", *PIMA, "--model", trained[3], "--method", "morris,fast", "--n", "128")
    assert code == 0, err
    assert "rank of each input by method" in out and "Kendall's W across the 2 methods" in out
    code, out, err = run_cli(capsys, "sensitivity", *PIMA, "--model", trained[3], "--method", "sobol,magic")
    assert code == 2 and "unknown method(s)" in err and "magic" in err and err.count("\n") == 1


def test_n_auto_stops_within_its_budget(capsys, trained):
    code, out, err = run_cli(capsys, "sobol", *PIMA, "--model", trained[3], "--n", "auto", "--n-tolerance", "0.001", "--n-budget", "10000", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["n_evaluations"] <= 10000 and report["n"] == 1024  # 1024 * 9 fits, 2048 * 9 would not
    assert "would pass the budget of 10,000 evaluations" in err


def test_methods_and_defaults_agree_with_the_engine():
    from engine.stats.screening import MEASURES
    from engine.stats.sobol_auto import AUTO_BUDGET, AUTO_TOLERANCE
    from engine.tabular.ensemble import DEFAULT_NETWORKS
    from gui.panels.tabular_panel import METHODS

    assert tabular.METHOD_NAMES == tuple(MEASURES) == METHODS
    assert (tabular.DEFAULT_NETWORKS, tabular.AUTO_TOLERANCE, tabular.AUTO_BUDGET) == (DEFAULT_NETWORKS, AUTO_TOLERANCE, AUTO_BUDGET)


def test_defaults_and_choices_are_the_shared_vocabulary():
    parser = build_parser()
    args = parser.parse_args(["sobol", *PIMA, "--train"])
    # The CLI's defaults build the engine's default configuration, and both are the vocabulary's.
    assert _config(args) == TrainConfig() and dataclasses.asdict(TrainConfig()) == TABULAR_TRAINING
    assert args.dist == DISTRIBUTIONS[0] and args.missing == MISSING_POLICIES[0]
    assert list(ACTIVATION_LAYERS) == list(ACTIVATIONS)
    for option, values in (("--dist", DISTRIBUTIONS), ("--missing", MISSING_POLICIES), ("--activation", ACTIVATIONS)):
        for value in values:
            assert getattr(parser.parse_args(["sobol", *PIMA, "--train", option, value]), option[2:]) == value
        with pytest.raises(UserError, match="invalid choice"):
            parser.parse_args(["sobol", *PIMA, "--train", option, "other"])


def _pima_lines() -> list[str]:
    return resolve_table("demo:pima").read_text(encoding="utf-8").splitlines()


def _edited(tmp_path, name: str, row: int, column: str, value: str) -> Path:
    lines = _pima_lines()
    header = lines[0].split(",")
    cells = lines[row].split(",")
    cells[header.index(column)] = value
    lines[row] = ",".join(cells)
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _single_class(tmp_path) -> Path:
    lines = _pima_lines()
    path = tmp_path / "one_class.csv"
    path.write_text("\n".join([lines[0]] + [line.replace(",Yes,", ",No,") for line in lines[1:]]) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "case,args,message",
    [
        ("missing file", ["train", "--data", "{tmp}/absent.csv", "--target", "type", "--out", "{tmp}/m"], "absent.csv: no such file"),
        ("unknown target", ["train", "--data", "demo:pima", "--target", "diabetes", "--out", "{tmp}/m"], "no target column 'diabetes'"),
        ("unknown feature", ["train", *PIMA, "--features", "glu,insulin", "--out", "{tmp}/m"], "unknown feature column(s) insulin"),
        ("split as a feature", ["train", *PIMA, "--features", "glu,split", "--out", "{tmp}/m"], "'split' holds the train/test split"),
        ("single class", ["train", "--data", "{one}", "--target", "type", "--out", "{tmp}/m"], "'type' has a single class"),
        ("missing values", ["sobol", "--data", "{missing}", "--target", "type", "--train", "--out", "{tmp}/o"], "missing values in column 'bmi' (1)"),
        ("text value", ["train", "--data", "{text}", "--target", "type", "--out", "{tmp}/m"], "column 'glu' is mostly numeric but holds non-numeric value(s) such as 'high'"),
        ("other features", ["sobol", *PIMA, "--features", "glu,bmi", "--model", "{model}"], "the model was trained on npreg, glu"),
        ("unknown class", ["sobol", *PIMA, "--model", "{model}", "--class", "Maybe", "--n", "64"], "no class 'Maybe' in 'type'"),
        ("no model", ["sobol", *PIMA, "--model", "{tmp}/nothing"], "one is missing"),
        ("bad epochs", ["train", *PIMA, "--epochs", "0", "--out", "{tmp}/m"], "outside 1 to 100000"),
        ("bad hidden", ["train", *PIMA, "--hidden", "32,x", "--out", "{tmp}/m"], "comma-separated list of integers"),
    ],
)
def test_user_errors_exit_2_with_one_line(capsys, tmp_path, trained, case, args, message):
    names = {
        "tmp": tmp_path,
        "one": _single_class(tmp_path),
        "missing": _edited(tmp_path, "missing.csv", 9, "bmi", ""),
        "text": _edited(tmp_path, "text.csv", 4, "glu", "high"),
        "model": trained[3],
    }
    code, out, err = run_cli(capsys, *[a.format(**names) for a in args])
    assert code == 2, err
    assert message in err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "Traceback" not in err and out == ""


def test_a_model_for_another_target_is_refused(capsys, trained):
    # Same columns and a two-class target, but not the one the model predicts.
    code, _, err = run_cli(capsys, "sobol", "--data", "demo:pima", "--target", "split", "--features", ",".join(FEATURES), "--model", trained[3])
    assert code == 2 and "the model predicts 'type'" in err and err.count("\n") == 1
