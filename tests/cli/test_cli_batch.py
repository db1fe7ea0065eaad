"""The batch command and evaluate --store: a run into a store, stopped and resumed from the
command line, the report with intervals and paired tests, and one-line refusals."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from cli.main import main as cli
from engine.demo.phantom import write_imagefolder


def run(capsys, *args):
    code = cli([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantom") / "data"
    write_imagefolder(folder, n=4, size=128, seed=5)
    return folder


BATCH = ("batch", "--model", "demo:ultrasound", "--methods", "gradcam,saliency", "--steps", "4")


def test_batch_stopped_and_resumed_from_the_command_line(capsys, tmp_path, data):
    store = tmp_path / "store"
    code, out, err = run(capsys, *BATCH, "--data", data, "--store", store, "--max-pairs", "3", "--json")
    assert code == 0, err
    first = json.loads(out)
    assert (first["computed"], first["complete"], first["images"]) == (3, False, 4)
    assert err == ""  # --json: no progress bar
    code, out, err = run(capsys, *BATCH, "--data", data, "--store", store, "--resume")
    assert code == 0, err
    assert "5 pairs computed, 3 already there, 8 in all, complete" in out
    records = pd.read_parquet(store / "records")
    assert len(records) == 8 and records.groupby("method").size().to_dict() == {"gradcam": 4, "saliency": 4}
    # The same store with other settings is refused in one line, before any work.
    code, out, err = run(capsys, *BATCH, "--data", data, "--store", store, "--resume", "--steps", "6")
    assert code == 2 and "settings differ" in err and "metrics.steps" in err and err.count("\n") == 1
    code, out, err = run(capsys, *BATCH, "--data", data, "--store", store)
    assert code == 2 and "pass --resume" in err


def test_evaluate_into_a_store_reports_intervals_and_paired_tests(capsys, tmp_path, data):
    store = tmp_path / "store"
    args = ["evaluate", "--model", "demo:ultrasound", "--data", data, "--methods", "gradcam,saliency", "--n", "4", "--steps", "4", "--sanity-images", "0", "--store", store]
    code, out, err = run(capsys, *args, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["n_images"] == 4
    deletion = report["methods"][0]["metrics"]["deletion_auc"]
    assert deletion["n"] == 4 and deletion["ci_low"] <= deletion["mean"] <= deletion["ci_high"]
    assert {(c["metric"], c["a"], c["b"]) for c in report["comparisons"]} >= {("deletion_auc", "gradcam", "saliency")}
    code, out, err = run(capsys, *args, "--resume")  # everything is there: nothing is recomputed
    assert code == 0, err
    assert "[" in out and "Wilcoxon signed-rank, Holm-corrected" in out
    assert len(pd.read_parquet(store / "records")) == 8


def test_evaluate_without_a_store_has_intervals_and_road(capsys, data):
    args = ["evaluate", "--model", "demo:ultrasound", "--data", data, "--methods", "gradcam", "--n", "3", "--steps", "4", "--sanity-images", "0", "--road", "--tolerance", "15", "--json"]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    report = json.loads(out)
    for method in report["methods"]:
        metrics = method["metrics"]
        assert metrics["road_morf"]["n"] == 3 and 0 <= metrics["road_morf"]["mean"] <= 1
        assert metrics["pointing"]["n"] == 2 and metrics["pointing"]["ci_low"] is not None


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--backend", "local", "--address", "auto"], "need --backend ray"),
        (["--methods", "gradcam,gradcam"], "names a method twice"),
        (["--map-dtype", "int8"], "invalid choice"),
    ],
)
def test_batch_user_errors_are_one_line(capsys, tmp_path, data, extra, message):
    args = [*BATCH, "--data", data, "--store", tmp_path / "s", *extra]
    code, out, err = run(capsys, *args)
    assert code == 2 and message in err and "Traceback" not in err and err.count("\n") == 1


def test_evaluate_resume_needs_a_store(capsys, data):
    code, out, err = run(capsys, "evaluate", "--model", "demo:ultrasound", "--data", data, "--resume")
    assert code == 2 and "--resume needs --store" in err


def test_evaluate_reports_the_stability_of_a_method_run_with_repeats(capsys, data):
    """pertmap with repeats=2 records the Spearman correlation of its two runs per image; the
    report gives its mean with an interval, a deterministic method has none, and no pair compares it."""
    _stability_run(capsys, data)


def _stability_run(capsys, data) -> tuple[list, dict]:
    args = ["evaluate", "--model", "demo:ultrasound", "--data", data, "--methods", "gradcam,pertmap", "--n", "3", "--steps", "4", "--sanity-images", "0"]
    args += ["--param", "pertmap.repeats=2", "--param", "pertmap.steps=12", "--param", "pertmap.patience=0", "--json"]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    report = json.loads(out)
    metrics = {m["method"]: m["metrics"] for m in report["methods"]}
    assert metrics["gradcam"]["stability"]["n"] == 0
    stability = metrics["pertmap"]["stability"]
    # a flat map (every feature saturated after 12 steps) has no ranking and gives no value
    assert 2 <= stability["n"] <= 3 and -1.0 <= stability["mean"] <= 1.0 and stability["ci_low"] is not None
    assert all(c["metric"] != "stability" for c in report["comparisons"])
    return args, stability


def test_an_evaluation_into_a_store_keeps_the_stability_too(capsys, tmp_path, data):
    args, direct = _stability_run(capsys, data)
    code, out, err = run(capsys, *args, "--store", tmp_path / "store")
    assert code == 0, err
    metrics = {m["method"]: m["metrics"] for m in json.loads(out)["methods"]}
    assert metrics["gradcam"]["stability"]["n"] == 0
    assert metrics["pertmap"]["stability"]["n"] == direct["n"] and metrics["pertmap"]["stability"]["mean"] == pytest.approx(direct["mean"], abs=1e-9)
