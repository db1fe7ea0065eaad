"""The image-model commands: phantom, train-images, evaluate, and explain on the demo."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from cli.main import main as cli


def run(capsys, *args):
    code = cli([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_phantom_then_train_images_on_the_folder(capsys, tmp_path):
    code, out, err = run(capsys, "phantom", "--out", tmp_path / "set", "--n", "12", "--size", "48", "--seed", "2")
    assert code == 0, err
    assert "4 normal, 4 benign, 4 malignant" in out
    code, out, err = run(capsys, "train-images", "--arch", "sonocnn", "--data", tmp_path / "set", "--size", "48", "--epochs", "1", "--batch", "4", "--out", tmp_path / "m", "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["classes"] == ["benign", "malignant", "normal"]
    assert summary["metrics"]["n_test"] == 3 and 0 <= summary["metrics"]["accuracy"] <= 1
    assert (tmp_path / "m.safetensors").is_file() and (tmp_path / "m.json").is_file()
    # The trained model explains its own kind of image, labels included.
    code, out, err = run(capsys, "explain", "--model", tmp_path / "m.safetensors", "--input", tmp_path / "set" / "benign" / "0001.png", "--method", "gradcam", "--out", tmp_path / "o", "--json")
    assert code == 0, err
    record = json.loads(out)[0]
    assert record["map_shape"] == [48, 48] and record["predicted_label"] in ("benign", "malignant", "normal")


def test_explain_the_demo_model_on_the_demo_data(capsys, tmp_path):
    code, out, err = run(capsys, "explain", "--model", "demo:ultrasound", "--input", "demo:ultrasound", "--method", "gradcam", "saliency", "--compare", "--out", tmp_path, "--json")
    assert code == 0, err
    records = json.loads(out)
    assert len(records) == 2 * 60
    assert {r["label"] for r in records} == {"normal", "benign", "malignant"}
    accuracy = np.mean([r["predicted_label"] == r["label"] for r in records if r["method"] == "gradcam"])
    assert accuracy >= 0.85
    assert all(r["mask"] for r in records)
    comparison = json.loads((tmp_path / "benign" / "0001.compare.json").read_text())
    assert comparison["pairs"][0]["a"] == "gradcam" and -1 <= comparison["pairs"][0]["spearman"] <= 1


def test_evaluate_on_the_demo(capsys, tmp_path):
    args = ["evaluate", "--model", "demo:ultrasound", "--data", "demo:ultrasound", "--methods", "gradcam,local", "--n", "3", "--steps", "8", "--sanity-images", "1"]
    args += ["--param", "local.window=32", "--param", "local.stride=32", "--out", tmp_path, "--json"]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    report = json.loads(out)
    assert report["n_images"] == 3 and report["accuracy"] is not None
    methods = {m["method"]: m for m in report["methods"]}
    assert set(methods) == {"gradcam", "local"}
    assert methods["local"]["params"]["window"] == 32
    for method in methods.values():
        metrics = method["metrics"]
        assert metrics["deletion_auc"]["n"] == 3 and metrics["pointing"]["n"] == 2  # one of three images is normal
        assert 0 <= metrics["energy"]["mean"] <= 1 and metrics["time_s"]["mean"] > 0
        assert len(method["sanity"]) == 1 and method["sanity_verdict"]
    with open(tmp_path / "evaluation.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["method"] for r in rows] == ["gradcam", "local"]
    with Image.open(tmp_path / "curves.png") as image:
        assert image.size[0] > 600


@pytest.mark.parametrize(
    "args,message",
    [
        (["train-images", "--arch", "resnet1800", "--data", "demo:ultrasound", "--out", "x"], "unknown architecture"),
        (["train-images", "--data", "demo:xray", "--out", "x"], "unknown demo data"),
        (["train-images", "--data", "demo:ultrasound", "--n", "5", "--out", "x"], "at least 30"),
        (["evaluate", "--model", "demo:ultrasound", "--data", "demo:ultrasound", "--methods", "telepathy"], "unknown method"),
        (["evaluate", "--model", "demo:nothing", "--data", "demo:ultrasound"], "unknown demo model"),
        (["phantom", "--out", "x", "--n", "2"], "at least 3"),
    ],
)
def test_user_errors_exit_2(capsys, tmp_path, args, message):
    code, out, err = run(capsys, *[a if a != "x" else tmp_path / "x" for a in args])
    assert code == 2 and message in err and "Traceback" not in err and err.count("\n") == 1


def test_evaluation_table_keeps_its_columns_with_long_method_names():
    from cli.images import format_table
    from engine.metrics.study import EvaluationReport, MethodSummary

    methods = []
    for name in ("gradcam", "guided-gradcam"):
        summary = MethodSummary(name, {})
        summary.values["deletion_auc"] = [0.25, 0.5, 0.75]
        summary.values["time_s"] = [0.01, 0.02, 0.03]
        methods.append(summary)
    lines = format_table(EvaluationReport("m", 3, 1.0, methods, [], 1.0)).splitlines()
    rows = [line for line in lines if line.startswith(("gradcam", "guided-gradcam"))]
    assert len(rows) == 2
    header = next(line for line in lines if line.startswith("method"))
    end = header.index("deletion AUC") + len("deletion AUC")
    for row in rows:
        assert row[end - 1] != " " and row[end] == " "  # each cell ends under its title
