"""More hostile inputs (issue 30, items 6 to 12): each gets one clear line and exit status 2 (or
works, where the input is sound), never a traceback or a hang, and nothing the user owns is lost."""

from __future__ import annotations

import csv
import json
import os
import pickle
import stat

import numpy as np
import pandas as pd
import pytest
import torch

from cli import tabular as cli_tabular
from cli.main import main as cli
from engine.core.csvsafe import safe_cell, safe_row
from engine.core.errors import UserError
from engine.core.vocab import MAX_CLASSES, MAX_TABLE_COLUMNS
from engine.io.images import read_image
from tests.engine.test_dicom import write_dicom
from tests.models import tiny_cnn

SMALL = ["--resize", "24", "--crop", "24"]
QUICK = ["--epochs", "3", "--hidden", "4", "--patience", "3"]


def run_cli(capsys, *args):
    code = cli([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_clear_line(code, err):
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err


def frame(rows: int = 60, seed: int = 0) -> pd.DataFrame:
    """A small classification table: y depends on a and b."""
    rng = np.random.default_rng(seed)
    a, b, c = rng.normal(size=(3, rows))
    return pd.DataFrame({"a": a, "b": b, "c": c, "y": np.where(a + 0.5 * b > 0, "yes", "no")})


def folder_state(folder):
    return sorted((p.relative_to(folder).as_posix(), p.read_bytes()) for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------ 6. hf: folders


def hf_config(folder, **fields):
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_type": "vit", "architectures": ["ViTForImageClassification"], "image_size": 32, "patch_size": 8, "hidden_size": 32,
              "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64} | fields
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    "fields,words",
    [
        ({"num_labels": 1_000_000_000}, "field 'num_labels' must be a whole number of classes from 1 to"),
        ({"id2label": {str(i): f"c{i}" for i in range(MAX_CLASSES + 1)}}, f"field 'id2label' names {MAX_CLASSES + 1:,} classes"),
        ({"num_labels": "many"}, "field 'num_labels'"),
        ({"num_channels": 7}, "field 'num_channels' must be 1"),
        ({"image_size": -32}, "field 'image_size'"),
    ],
)
def test_an_hf_config_asking_for_a_giant_model_is_refused_before_building(capsys, tmp_path, fields, words):
    folder = hf_config(tmp_path / "model", **fields)
    code, out, err = run_cli(capsys, "info", "--model", f"hf:{folder}")
    assert_one_clear_line(code, err)
    assert words in err and "config.json" in err and out == ""


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    from transformers import ViTConfig, ViTForImageClassification

    folder = tmp_path_factory.mktemp("hf") / "tiny-vit"
    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, id2label={0: "cat", 1: "dog"}, label2id={"cat": 0, "dog": 1})
    ViTForImageClassification(config).save_pretrained(folder, safe_serialization=True)
    return folder


GOOD_PROCESSOR = {"do_resize": True, "size": {"height": 32, "width": 32}, "do_normalize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 2}


@pytest.mark.parametrize(
    "change,field",
    [
        ({"image_mean": "x"}, "image_mean"),
        ({"image_std": [0.5, 0, 0.5]}, "image_std"),
        ({"image_std": [0.5, 0.5]}, "image_std"),
        ({"size": -224}, "size"),
        ({"size": {"height": "tall", "width": 32}}, "size"),
        ({"crop_size": {"height": -1, "width": 32}, "do_center_crop": True}, "crop_size"),
        ({"do_resize": "yes"}, "do_resize"),
        ({"resample": "bicubic"}, "resample"),
        ({"crop_pct": 7}, "crop_pct"),
    ],
)
def test_a_malformed_preprocessor_config_names_the_field(capsys, hf_folder, tmp_path, change, field):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((hf_folder / name).read_bytes())
    (folder / "preprocessor_config.json").write_text(json.dumps(GOOD_PROCESSOR | change))
    code, _, err = run_cli(capsys, "info", "--model", f"hf:{folder}")
    assert_one_clear_line(code, err)
    assert f"field '{field}'" in err and "preprocessor_config.json" in err


def test_a_sound_preprocessor_config_still_loads(capsys, hf_folder, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        (folder / name).write_bytes((hf_folder / name).read_bytes())
    (folder / "preprocessor_config.json").write_text(json.dumps(GOOD_PROCESSOR | {"image_mean": 0.5, "image_std": 0.25}))  # one number: every channel
    code, out, err = run_cli(capsys, "info", "--model", f"hf:{folder}", "--json")
    assert code == 0, err
    model = json.loads(out)["model"]
    assert model["preprocess"]["mean"] == [0.5] and model["preprocess"]["std"] == [0.25]


# ------------------------------------------------------------------ 7. huge tables


def test_a_table_with_200000_columns_is_refused_from_its_header(capsys, tmp_path):
    wide = tmp_path / "wide.csv"
    columns = 200_000
    wide.write_text(",".join(f"c{i}" for i in range(columns)) + "\n" + ",".join("1" for _ in range(columns)) + "\n")
    before = folder_state(tmp_path)
    code, _, err = run_cli(capsys, "train", "--data", wide, "--target", "c0", "--out", tmp_path / "model")
    assert_one_clear_line(code, err)
    assert f"has {columns:,} columns, more than the {MAX_TABLE_COLUMNS:,}" in err
    assert folder_state(tmp_path) == before  # no model written, the table untouched


def test_a_large_table_shows_reading_progress(capsys, tmp_path, monkeypatch):
    table = tmp_path / "t.csv"
    frame().to_csv(table, index=False)
    monkeypatch.setattr(cli_tabular, "LARGE_TABLE_BYTES", 0)  # every table is "large"
    code, out, err = run_cli(capsys, "train", "--data", table, "--target", "y", *QUICK, "--out", tmp_path / "m")
    assert code == 0, err
    assert "read [100%] reading the table" in err


# ------------------------------------------------------------------ 8. Parquet


def test_parquet_tables_train_like_csv(capsys, tmp_path):
    data = frame()
    data.to_parquet(tmp_path / "t.parquet")
    data.to_csv(tmp_path / "t.csv", index=False)
    records = {}
    for name in ("t.parquet", "t.csv"):
        code, out, err = run_cli(capsys, "train", "--data", tmp_path / name, "--target", "y", *QUICK, "--out", tmp_path / name.replace(".", "_"), "--json")
        assert code == 0, err
        records[name] = json.loads(out)
    assert records["t.parquet"]["features"] == records["t.csv"]["features"] == ["a", "b", "c"]
    assert records["t.parquet"]["classes"] == records["t.csv"]["classes"] == ["no", "yes"]
    assert records["t.parquet"]["metrics"] == records["t.csv"]["metrics"]


@pytest.mark.parametrize(
    "edit,words",
    [
        (lambda d: d.assign(a=d["a"].where(d.index != 3)), "missing values in column 'a' (1)"),
        (lambda d: d.assign(a=d["a"].where(d.index != 3, np.inf)), "column 'a' holds 1 infinite value(s)"),
        (lambda d: d.assign(b=d["b"].astype(str).where(d.index != 5, "high")), "column 'b' is mostly numeric but holds non-numeric value(s) such as 'high'"),
        (lambda d: d.assign(c=[[1, 2]] * len(d)), "hold binary or nested values"),
        (lambda d: d.assign(y=np.arange(len(d)) * 0.37), "looks continuous"),
    ],
)
def test_parquet_tables_get_the_csv_checks(capsys, tmp_path, edit, words):
    edit(frame()).to_parquet(tmp_path / "t.parquet")
    task = ["--task", "classification"] if words == "looks continuous" else []
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "t.parquet", "--target", "y", *task, *QUICK, "--out", tmp_path / "m")
    assert_one_clear_line(code, err)
    assert words in err
    assert not (tmp_path / "m.safetensors").exists()


def test_a_damaged_parquet_file_is_one_line(capsys, tmp_path):
    frame().to_parquet(tmp_path / "t.parquet")
    data = (tmp_path / "t.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.parquet").write_text("a,b\n1,2\n")  # a CSV under a Parquet name is read as the CSV it is
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "cut.parquet", "--target", "y", "--out", tmp_path / "m")
    assert_one_clear_line(code, err)
    assert "not a readable Parquet table" in err


# ------------------------------------------------------------------ 9. DICOM frames


@pytest.fixture
def cine(tmp_path):
    frames = np.random.default_rng(3).integers(0, 256, (3, 28, 30), dtype=np.uint8)
    return write_dicom(tmp_path / "cine.dcm", frames, frames=3)


def test_a_frame_named_as_outputs_name_it_is_accepted_as_input(capsys, tmp_path, scripted_tiny, cine):
    model, _ = scripted_tiny
    code, out, err = run_cli(capsys, "explain", "--model", model, "--input", f"{cine}#001", "--out", tmp_path / "one", "--json", *SMALL)
    assert code == 0, err
    (record,) = json.loads(out)
    assert record["frame"] == 1 and record["files"]["npy"].endswith("cine_f001.saliency.npy")
    code, out, err = run_cli(capsys, "explain", "--model", model, "--input", cine, "--out", tmp_path / "all", "--json", *SMALL)
    assert code == 0, err
    np.testing.assert_array_equal(np.load(record["files"]["npy"]), np.load(json.loads(out)[1]["files"]["npy"]))


def test_an_out_of_range_frame_is_one_line(capsys, tmp_path, scripted_tiny, cine):
    model, _ = scripted_tiny
    code, _, err = run_cli(capsys, "explain", "--model", model, "--input", f"{cine}#005", "--out", tmp_path / "o", *SMALL)
    assert_one_clear_line(code, err)
    assert "has 3 frames; frame 5 does not exist" in err
    assert not (tmp_path / "o").exists()


def test_a_dicom_holding_fewer_frames_than_it_declares_lists_only_those(capsys, tmp_path, scripted_tiny):
    model, _ = scripted_tiny
    frames = np.random.default_rng(4).integers(0, 256, (2, 28, 30), dtype=np.uint8)
    short = write_dicom(tmp_path / "short.dcm", frames, frames=1000)
    code, out, err = run_cli(capsys, "explain", "--model", model, "--input", short, "--out", tmp_path / "o", "--json", *SMALL)
    assert code == 0, err
    records = json.loads(out)
    assert [r["frame"] for r in records] == [0, 1]
    assert records[0]["input_meta"]["frames"] == 2 and records[0]["input_meta"]["frames_declared"] == 1000
    assert "declares 1000 frames but its pixel data hold 2" in err and "skipped" not in err


# ------------------------------------------------------------------ 10. formula-like CSV text


FORMULAS = ["=HYPERLINK(\"http://x\")", "+cmd", "-2+3", "@SUM(A1)"]


def test_formula_like_column_names_are_escaped_in_csv_outputs(capsys, tmp_path):
    data = frame(80)
    data.columns = [*FORMULAS[:3], "y"]
    data[FORMULAS[3]] = np.random.default_rng(1).normal(size=len(data))
    data.to_csv(tmp_path / "t.csv", index=False)
    code, out, err = run_cli(capsys, "sobol", "--data", tmp_path / "t.csv", "--target", "y", "--train", "--networks", "2", *QUICK, "--n", "64", "--out", tmp_path / "out", "--json")
    assert code == 0, err
    assert {f["name"] for f in json.loads(out)["features"]} == set(FORMULAS)  # the data keep the names
    cells = []
    for name in ("sobol_indices.csv", "sobol_convergence.csv", "sobol_ensemble.csv"):
        with open(tmp_path / "out" / name, newline="", encoding="utf-8") as handle:
            cells += [cell for row in csv.reader(handle) for cell in row]
    texts = [cell for cell in cells if cell and cell[0] in "=+-@\t\r"]
    assert all(safe_cell(cell) == cell for cell in texts)  # only numbers (-0.01) may start so, unquoted
    assert {f"'{name}" for name in FORMULAS} <= set(cells)


def test_the_escaping_follows_owasp_and_keeps_numbers():
    assert safe_row(["=1+2", "+a", "-a", "@a", "\tx", "\rx", "a=b", "", None, -1.5]) == ["'=1+2", "'+a", "'-a", "'@a", "'\tx", "'\rx", "a=b", "", None, -1.5]
    assert safe_row(["-0.25", "+1e-3", "-inf", "-2+3"]) == ["-0.25", "+1e-3", "-inf", "'-2+3"]


# ------------------------------------------------------------------ 11. shared-server permissions


@pytest.mark.skipif(os.name != "posix", reason="Unix permissions")
@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_outputs_honour_the_umask(capsys, tmp_path, umask, mode):
    frame().to_csv(tmp_path / "t.csv", index=False)
    old = os.umask(umask)
    try:
        code, _, err = run_cli(capsys, "train", "--data", tmp_path / "t.csv", "--target", "y", *QUICK, "--out", tmp_path / "out" / "m")
    finally:
        os.umask(old)
    assert code == 0, err
    written = [p for p in (tmp_path / "out").iterdir() if p.is_file()]
    assert {p.name for p in written} == {"m.safetensors", "m.json", ".sensiscope-files.json"}
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in written} == {p.name: mode for p in written}


# ------------------------------------------------------------------ 12. messages


def test_a_pickle_refusal_never_passes_on_torchs_advice(capsys, tmp_path, rgb_png):
    whole = tmp_path / "whole.pt"
    torch.save(tiny_cnn(seed=0), whole)

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(Evil(), protocol=4))
    cases = (
        (["--model", whole], "refused to load", "it names the Python object tests.models.TinyCNN"),
        (["--model", "resnet18", "--weights", evil], "not a readable PyTorch file", "pickle operation 149"),
    )
    for args, what, named in cases:
        code, out, err = run_cli(capsys, "explain", *args, "--input", rgb_png, "--out", tmp_path / "o", *SMALL)
        assert_one_clear_line(code, err)
        assert what in err and named in err
        for advice in ("weights_only", "torch.load", "safe_globals", "file an issue", "pytorch.org"):
            assert advice not in err
        assert "ran" not in out
    assert not (tmp_path / "o").exists()


def test_a_failing_onnx_model_prints_no_onnxruntime_log_lines(capfd, tmp_path, rgb_png):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])
    shape = numpy_helper.from_array(np.array([-1, 5], np.int64), "shape")  # 3 x 8 x 8 values cannot make rows of 5
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["y"])], "g", [x], [y], [shape])
    path = tmp_path / "broken.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    code = cli(["explain", "--model", str(path), "--input", str(rgb_png), "--method", "local", "--out", str(tmp_path / "o")])
    _, err = capfd.readouterr()  # file-descriptor level: onnxruntime's logger writes there, past sys.stderr
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and lines[-1].startswith("error: ") and all(line.startswith("note: ") for line in lines[:-1]), err
    assert "onnxruntime could not run" in err and "[E:onnxruntime" not in err and "\x1b[" not in err and "/onnxruntime_src/" not in err


def test_a_folder_where_an_image_belongs_is_said_with_an_article(tmp_path):
    # The message the GUI's image list shows when an item became a folder.
    with pytest.raises(UserError, match=r": is a folder, not an image$"):
        read_image(tmp_path)


@pytest.mark.parametrize(
    "args,words",
    [
        (["explain", "--model", "", "--input", "photo.png"], "no model given"),
        (["info", "--model", " "], "no model given"),
        (["sobol", "--data", "demo:pima", "--target", "type", "--model", ""], "--model is empty"),
        (["explain", "--model", "resnet18", "--input", ""], "--input is empty"),
        (["explain", "--model", "resnet18", "--input", "photo.png", "--out", ""], "--out is empty"),
        (["train", "--data", "", "--target", "y", "--out", "m"], "--data is empty"),
    ],
)
def test_an_empty_value_is_refused_never_read_as_the_current_folder(capsys, tmp_path, monkeypatch, rgb_png, args, words):
    monkeypatch.chdir(tmp_path)
    before = folder_state(tmp_path)
    code, out, err = run_cli(capsys, *args)
    assert_one_clear_line(code, err)
    assert words in err and ".: is a folder" not in err and out == ""
    assert folder_state(tmp_path) == before  # nothing trained, explained or written here


def test_classification_of_a_continuous_target_is_refused(capsys, tmp_path):
    data = frame(200).assign(y=lambda d: d["a"] * 3 + d["b"])  # a measurement, not classes
    data.to_csv(tmp_path / "t.csv", index=False)
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "t.csv", "--target", "y", "--task", "classification", *QUICK, "--out", tmp_path / "m")
    assert_one_clear_line(code, err)
    assert "the target 'y' has 200 distinct values in 200 rows" in err and "--task regression" in err
    assert not (tmp_path / "m.json").exists()
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "t.csv", "--target", "y", "--task", "regression", *QUICK, "--out", tmp_path / "m")
    assert code == 0, err


def test_a_model_table_mismatch_says_which_to_change(capsys, tmp_path):
    data = frame().assign(z=lambda d: np.where(d["c"] > 0, "up", "down"))
    data.to_csv(tmp_path / "t.csv", index=False)
    code, _, err = run_cli(capsys, "train", "--data", tmp_path / "t.csv", "--target", "y", "--features", "a,b,c", *QUICK, "--out", tmp_path / "m")
    assert code == 0, err
    model = tmp_path / "m.safetensors"
    sobol = ["sobol", "--data", tmp_path / "t.csv", "--model", model, "--n", "16"]
    # Another target in the same table: the table is right, --target is not.
    code, _, err = run_cli(capsys, *sobol, "--target", "z", "--features", "a,b,c")
    assert_one_clear_line(code, err)
    assert "the model predicts 'y'" in err and "but --target is 'z': pass --target y" in err
    # The right target, but the table lacks a column the model takes: --data must change.
    data.drop(columns="c").to_csv(tmp_path / "less.csv", index=False)
    code, _, err = run_cli(capsys, "sobol", "--data", tmp_path / "less.csv", "--model", model, "--n", "16", "--target", "y", "--features", "a,b")
    assert_one_clear_line(code, err)
    assert "pass --features a,b,c" in err
    code, _, err = run_cli(capsys, "sobol", "--data", tmp_path / "less.csv", "--model", model, "--n", "16", "--target", "y")
    assert_one_clear_line(code, err)
    assert "less.csv lacks c" in err and "give --data the table the model was trained on" in err


def test_column_names_no_font_can_draw_are_named_in_a_note(capsys, tmp_path):
    unknown = "\U000f0001x"  # a private-use character: no font has its glyph
    data = frame(80)
    data.columns = ["温度", unknown, "c", "y"]
    data.to_csv(tmp_path / "t.csv", index=False, encoding="utf-8")
    code, _, err = run_cli(capsys, "sobol", "--data", tmp_path / "t.csv", "--target", "y", "--train", "--networks", "1", *QUICK, "--n", "64", "--out", tmp_path / "out")
    assert code == 0, err
    assert (tmp_path / "out" / "sobol_indices.png").stat().st_size > 0
    notes = [line for line in err.splitlines() if "sobol_indices.png cannot show" in line]
    assert len(notes) == 1 and unknown in notes[0] and "Glyph" not in err
