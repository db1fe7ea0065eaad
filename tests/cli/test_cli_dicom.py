"""DICOM through the command line: `explain` and `evaluate` take .dcm files, multi-frame files and
DICOM folders with no option of their own, and a bad DICOM is one line and exit status 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli.main import main as cli
from tests.engine.test_dicom import dicom_dataset, write_dicom

SMALL = ["--resize", "24", "--crop", "24"]


def run_cli(capsys, *args):
    code = cli([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_clear_line(code, err):
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err


@pytest.fixture
def frames():
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (3, 28, 30), dtype=np.uint8)


def test_explain_on_a_dicom_file_gives_the_map_of_the_same_png(capsys, tmp_path, scripted_tiny, frames):
    model, _ = scripted_tiny
    Image.fromarray(frames[0]).save(tmp_path / "scan.png")
    write_dicom(tmp_path / "scan.dcm", frames[0], PixelSpacing=[0.3, 0.3], SeriesDescription="axial")
    maps = {}
    for name in ("scan.png", "scan.dcm"):
        code, out, err = run_cli(capsys, "explain", "--model", model, "--input", tmp_path / name, "--out", tmp_path / name.replace(".", "_"), "--json", *SMALL)
        assert code == 0, err
        (record,) = json.loads(out)
        maps[name] = np.load(record["files"]["npy"])
    assert Path(record["files"]["npy"]).name == "scan.saliency.npy"
    assert record["input_meta"]["pixel_spacing_mm"] == [0.3, 0.3] and record["input_meta"]["series_description"] == "axial"
    np.testing.assert_array_equal(maps["scan.dcm"], maps["scan.png"])


def test_explain_on_a_multi_frame_file_writes_one_map_per_frame(capsys, tmp_path, scripted_tiny, frames):
    model, _ = scripted_tiny
    cine = write_dicom(tmp_path / "cine.dcm", frames, frames=3, FrameTime=40.0)
    Image.fromarray(frames[1]).save(tmp_path / "frame1.png")
    code, out, err = run_cli(capsys, "explain", "--model", model, "--input", cine, "--out", tmp_path / "o", "--json", *SMALL)
    assert code == 0, err
    records = json.loads(out)
    assert [Path(r["files"]["npy"]).name for r in records] == [f"cine_f00{k}.saliency.npy" for k in range(3)]
    assert [r["frame"] for r in records] == [0, 1, 2] and all(r["input_meta"]["frames"] == 3 for r in records)
    assert f"{cine}#001: predicted" in err  # each frame is named in the progress lines
    code, out, err = run_cli(capsys, "explain", "--model", model, "--input", tmp_path / "frame1.png", "--out", tmp_path / "p", "--json", *SMALL)
    assert code == 0, err
    np.testing.assert_array_equal(np.load(records[1]["files"]["npy"]), np.load(json.loads(out)[0]["files"]["npy"]))
    assert not np.array_equal(np.load(records[0]["files"]["npy"]), np.load(records[1]["files"]["npy"]))


def test_explain_on_a_series_folder_follows_instance_numbers_and_skips_a_bad_file(capsys, tmp_path, scripted_tiny, frames):
    model, _ = scripted_tiny
    series = tmp_path / "series"
    series.mkdir()
    for k, instance in enumerate((2, 1, 3)):
        write_dicom(series / f"slice{k}.dcm", frames[k], InstanceNumber=instance)
    (series / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\x01" * 40)
    code, out, err = run_cli(capsys, "explain", "--model", model, "--input", series, "--out", tmp_path / "o", "--json", *SMALL)
    assert code == 0, err
    assert [Path(r["input"]).name for r in json.loads(out)] == ["slice1.dcm", "slice0.dcm", "slice2.dcm"]
    assert "skipped" in err and "broken.dcm" in err and "Traceback" not in err


def test_evaluate_takes_a_dicom_folder(capsys, tmp_path, scripted_tiny, frames):
    model, _ = scripted_tiny
    write_dicom(tmp_path / "cine.dcm", frames[:2], frames=2)
    code, out, err = run_cli(capsys, "evaluate", "--model", model, "--data", tmp_path, "--methods", "saliency", "--n", "2", "--steps", "4", "--sanity-images", "0", "--json")
    assert code == 0, err
    assert json.loads(out)["n_images"] == 2


def test_bad_dicom_files_are_one_line_and_exit_status_2(capsys, tmp_path, scripted_tiny):
    model, _ = scripted_tiny
    no_pixels = dicom_dataset(np.zeros((4, 4), np.uint8))
    del no_pixels.PixelData
    no_pixels.save_as(tmp_path / "report.dcm", enforce_file_format=True)
    (tmp_path / "corrupt.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 64)
    good = write_dicom(tmp_path / "good.dcm", np.zeros((40, 40), np.uint16)).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(good[:-1000])
    for name, words in (("report.dcm", "without pixel data"), ("corrupt.dcm", "header is damaged"), ("cut.dcm", "cut.dcm: cannot decode")):
        code, _, err = run_cli(capsys, "explain", "--model", model, "--input", tmp_path / name, "--out", tmp_path / "o", *SMALL)
        assert_one_clear_line(code, err)
        assert words in err
