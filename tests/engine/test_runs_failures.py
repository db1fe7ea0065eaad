"""A data-set run survives a broken image: the image's pairs are failed records with the reason,
the rest is computed; a resume skips them unless asked to retry; a retry that succeeds replaces
them. `evaluate` without a store goes through the same run, in memory, to the same report."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from engine.core.requests import ModelSpec
from engine.io.images import scan_inputs
from engine.methods._registry import get_method
from engine.runs.evaluate import evaluate_dataset
from engine.runs.run import run_batch
from engine.runs.store import MemoryStore, Store
from engine.runs.worker import Job, MetricSettings
from tests.engine.test_runs import METHODS, phantom_items


def job(batch: int = 1) -> Job:
    params = {name: get_method(name).params_cls() for name in METHODS}
    return Job(ModelSpec("demo:ultrasound"), params, MetricSettings(steps=4), seed=0, threads=1, batch=batch)


@pytest.fixture
def broken_folder(tmp_path):
    folder = tmp_path / "data"
    good = phantom_items(folder)
    victim = good[1].path
    saved = tmp_path / "saved.png"
    shutil.copy(victim, saved)
    victim.write_bytes(b"not a png at all")
    items = [i for i in scan_inputs(folder).items if not i.is_tensor]
    return folder, items, victim, saved


@pytest.mark.parametrize("batch", [1, 3])
def test_a_broken_image_is_a_failed_record_and_the_run_goes_on(broken_folder, tmp_path, batch):
    folder, items, victim, saved = broken_folder
    store_dir = tmp_path / f"store{batch}"
    summary = run_batch(job(batch), store_dir, items, data=str(folder))
    assert summary.complete and summary.computed == len(items) * len(METHODS)
    broken_name = victim.relative_to(folder).as_posix()
    assert [(image, method) for image, method, _ in summary.failures] == [(broken_name, m) for m in METHODS]
    assert all("not an image" in reason for _, _, reason in summary.failures)
    store = Store.open(store_dir)
    table = store.table()
    assert len(table) == (len(items) - 1) * len(METHODS) and broken_name not in set(table["image"])
    assert len(store.failures()) == len(METHODS)
    index = [i.path for i in items].index(victim)
    assert np.isnan(store.read_map_stack("gradcam")[index]).all() and not np.isnan(store.read_map_stack("gradcam")[index - 1]).any()

    again = run_batch(job(batch), store_dir, items, data=str(folder), resume=True)  # failed pairs are skipped
    assert (again.computed, again.skipped, again.failed) == (0, len(items) * len(METHODS), 0)
    retried = run_batch(job(batch), store_dir, items, data=str(folder), resume=True, retry_failed=True)
    assert (retried.computed, retried.failed) == (len(METHODS), len(METHODS))

    shutil.copy(saved, victim)  # the user mends the file: a retry computes its pairs
    mended = run_batch(job(batch), store_dir, items, data=str(folder), resume=True, retry_failed=True)
    assert (mended.computed, mended.failed) == (len(METHODS), 0)
    store = Store.open(store_dir)
    assert store.failures() == [] and len(store.table()) == len(items) * len(METHODS)
    assert not np.isnan(store.read_map_stack("gradcam")[index]).any()


def test_evaluate_in_memory_and_into_a_store_give_the_same_report(tmp_path):
    items = phantom_items(tmp_path / "data")
    in_memory, summary = evaluate_dataset(job(2), items, data="phantom", sanity_images=0)
    assert summary.store == "<memory>" and not (tmp_path / "<memory>").exists()
    stored, _ = evaluate_dataset(job(2), items, store=tmp_path / "store", data="phantom", sanity_images=0)
    a, b = in_memory.to_dict(), stored.to_dict()
    for report in (a, b):  # the timings are the only figures that differ between two runs
        report.pop("elapsed_s")
        report["comparisons"] = [c for c in report["comparisons"] if c["metric"] != "time_s"]
        for method in report["methods"]:
            method["metrics"].pop("time_s")
    assert a == b and a["n_images"] == len(items) and a["methods"][0]["metrics"]["deletion_auc"]["n"] == len(items)
    with pytest.raises(Exception, match="cannot be resumed"):
        MemoryStore.for_run(None, {}, resume=True)
