"""Data-set runs into a result store: the store's format, results written as they finish, resume
after a kill (the same final table, no finished pair recomputed), and refusals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import zarr

from engine.core.errors import UserError
from engine.core.requests import ModelSpec
from engine.demo.phantom import write_imagefolder
from engine.io.images import load_input, scan_inputs
from engine.methods._registry import get_method
from engine.methods.runner import explain
from engine.models.loading import load_model
from engine.runs.report import report_from_store
from engine.runs.run import run_batch
from engine.runs.store import Store
from engine.runs.worker import Job, MetricSettings

METHODS = ("gradcam", "saliency")


def make_job(steps: int = 4) -> Job:
    params = {name: get_method(name).params_cls() for name in METHODS}
    return Job(ModelSpec("demo:ultrasound"), params, MetricSettings(steps=steps), seed=0, threads=1)


def phantom_items(folder) -> list:
    write_imagefolder(folder, n=4, size=128, seed=5)
    return [i for i in scan_inputs(folder).items if not i.is_tensor]


def comparable(store: Store) -> pd.DataFrame:
    """The store's table without the timings (the only column that differs between runs)."""
    return store.table().drop(columns=["time_s"])


def assert_same_results(a: Store, b: Store) -> None:
    pd.testing.assert_frame_equal(comparable(a), comparable(b), check_exact=True)
    for method in METHODS:
        np.testing.assert_array_equal(a.read_map_stack(method), b.read_map_stack(method))


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    return phantom_items(tmp_path_factory.mktemp("phantom") / "data")


@pytest.fixture(scope="module")
def reference(items, tmp_path_factory):
    folder = tmp_path_factory.mktemp("reference") / "store"
    summary = run_batch(make_job(), folder, items, data="phantom")
    return summary, Store.open(folder)


def test_the_store_opens_with_pandas_and_zarr_and_holds_the_runners_maps(items, reference):
    summary, store = reference
    assert (summary.total, summary.skipped, summary.computed, summary.complete) == (8, 0, 8, True)
    records = pd.read_parquet(store.folder / "records")
    assert len(records) == 8 and set(records["method"]) == set(METHODS)
    assert set(records.columns) >= {"image", "label", "target", "predicted", "pointing", "deletion_auc", "insertion_auc", "deletion_curve"}
    assert records["deletion_curve"].map(len).eq(5).all()  # steps + 1 points
    masked = records[records["label"] != "normal"]
    assert masked["pointing"].notna().all() and records.loc[records["label"] == "normal", "pointing"].isna().all()
    manifest = json.loads((store.folder / "manifest.json").read_text())
    assert manifest["settings"]["methods"]["gradcam"] == {"layer": "", "relu": True, "output": "logit"}
    assert manifest["settings"]["images"] == [i.relative.as_posix() for i in items] and "torch" in manifest["versions"]
    assert manifest["runs"][-1]["computed"] == 8
    maps = zarr.open_group(str(store.folder / "maps.zarr"), mode="r")
    assert maps["gradcam"].shape == (4, 128, 128) and maps["gradcam"].dtype == np.float32
    # The stored map is the runner's map for that image, computed directly here.
    loaded = load_model("demo:ultrasound")
    tensor, _ = load_input(items[2], loaded.preprocess)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        direct = explain(loaded, tensor, "saliency", None, get_method("saliency").params_cls(), seed=0).map
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(store.read_map(2, "saliency"), np.asarray(direct, dtype=np.float32))


def test_a_run_killed_mid_way_and_resumed_ends_with_the_same_table(items, reference, tmp_path):
    folder = tmp_path / "store"
    first = run_batch(make_job(), folder, items, data="phantom", limit=3)  # stops inside the second image
    assert (first.computed, first.complete) == (3, False)
    assert Store.open(folder).done_pairs() == {(0, "gradcam"), (0, "saliency"), (1, "gradcam")}
    second = run_batch(make_job(), folder, items, data="phantom", resume=True)
    assert (second.skipped, second.computed, second.complete) == (3, 5, True)  # no finished pair recomputed
    assert_same_results(Store.open(folder), reference[1])
    again = run_batch(make_job(), folder, items, data="phantom", resume=True)
    assert (again.skipped, again.computed) == (8, 0)


def test_a_kill_between_the_maps_and_the_records_loses_only_that_image(items, reference, tmp_path, monkeypatch):
    folder = tmp_path / "store"
    written = []
    original = Store._write_records

    def dies_on_the_second_image(self, records):
        if written:
            raise KeyboardInterrupt  # the process dies after the maps, before the records
        written.append(len(records))
        original(self, records)

    monkeypatch.setattr(Store, "_write_records", dies_on_the_second_image)
    with pytest.raises(KeyboardInterrupt):
        run_batch(make_job(), folder, items, data="phantom")
    monkeypatch.setattr(Store, "_write_records", original)
    assert written == [2] and len(Store.open(folder).table()) == 2
    resumed = run_batch(make_job(), folder, items, data="phantom", resume=True)
    assert (resumed.skipped, resumed.computed) == (2, 6)
    assert_same_results(Store.open(folder), reference[1])


def test_resume_is_refused_when_the_settings_differ(items, reference, tmp_path):
    _, store = reference
    with pytest.raises(UserError, match=r"settings differ.*metrics\.steps"):
        run_batch(make_job(steps=5), store.folder, items, data="phantom", resume=True)
    with pytest.raises(UserError, match=r"settings differ.*images"):
        run_batch(make_job(), store.folder, items[:3], data="phantom", resume=True)
    with pytest.raises(UserError, match="already holds a run; pass --resume"):
        run_batch(make_job(), store.folder, items, data="phantom")
    foreign = tmp_path / "busy"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="other files"):
        run_batch(make_job(), foreign, items, data="phantom")
    assert (foreign / "notes.txt").read_text() == "mine" and not (foreign / "manifest.json").exists()


def test_float16_maps_are_stored_as_float16(items, reference, tmp_path):
    job = Job(ModelSpec("demo:ultrasound"), {"gradcam": get_method("gradcam").params_cls()}, MetricSettings(steps=4), seed=0, threads=1)
    run_batch(job, tmp_path / "half", items[:2], map_dtype="float16")
    half = zarr.open_group(str(tmp_path / "half" / "maps.zarr"), mode="r")["gradcam"]
    assert half.dtype == np.float16
    full = reference[1].read_map_stack("gradcam")[:2]
    np.testing.assert_allclose(half[:], full, rtol=1e-3, atol=1e-3 * np.abs(full).max())
    with pytest.raises(UserError, match="map type"):
        run_batch(job, tmp_path / "other", items[:2], map_dtype="int8")


def test_the_evaluate_report_of_a_store_matches_its_records(reference):
    _, store = reference
    report = report_from_store(store, 1.0)
    table = store.table()
    assert report.n_images == 4 and [m.method for m in report.methods] == list(METHODS)
    gradcam = report.methods[0]
    np.testing.assert_allclose(gradcam.values["deletion_auc"], table.loc[table["method"] == "gradcam", "deletion_auc"])
    stats = gradcam.stats()
    assert stats["deletion_auc"]["ci_low"] <= stats["deletion_auc"]["mean"] <= stats["deletion_auc"]["ci_high"]
    assert stats["road_morf"]["n"] == 0  # ROAD was not asked for
    assert {(c.a, c.b) for c in report.comparisons()} == {("gradcam", "saliency")}
