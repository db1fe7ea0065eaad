"""`batch --batch N` from the command line: a batched run and a one-by-one run of the same images
store the same maps (up to float rounding); a bad batch size is one line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cli.main import main as cli
from engine.demo.phantom import write_imagefolder
from engine.runs.store import Store


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantom") / "data"
    write_imagefolder(folder, n=3, size=64, seed=7)
    return folder


def run(capsys, *args):
    code = cli([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_batched_and_one_by_one_runs_store_the_same_maps(capsys, tmp_path, data):
    base = ["batch", "--model", "demo:ultrasound", "--data", data, "--methods", "gradcam,saliency", "--steps", "4", "--threads", "1", "--json"]
    for batch in ("1", "3"):
        code, out, err = run(capsys, *base, "--store", tmp_path / batch, "--batch", batch)
        assert code == 0, err
        assert json.loads(out)["computed"] == 6 and err == ""
    one, many = Store.open(tmp_path / "1"), Store.open(tmp_path / "3")
    for method in ("gradcam", "saliency"):
        a, b = one.read_map_stack(method), many.read_map_stack(method)
        assert np.abs(a - b).max() <= 1e-5 * np.ptp(a)
    assert list(one.table()["target"]) == list(many.table()["target"])


def test_a_bad_batch_size_is_one_line(capsys, tmp_path, data):
    code, out, err = run(capsys, "batch", "--model", "demo:ultrasound", "--data", data, "--methods", "gradcam", "--store", tmp_path / "s", "--batch", "0")
    assert code == 2 and "--batch" in err and "Traceback" not in err
