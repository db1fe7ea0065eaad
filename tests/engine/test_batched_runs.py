"""Data-set runs in batches (``Job.batch``): the store of a batched run equals the one-by-one
store (maps and scores up to float rounding, the same pairs and targets), a batched run killed
mid-way resumes without recomputing a finished pair, and a Ray actor runs a group as the local
worker does."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from engine.runs.run import run_batch
from engine.runs.store import Store
from engine.runs.worker import task_groups
from tests.engine.test_runs import METHODS, make_job, phantom_items

SCORES = ["deletion_auc", "insertion_auc", "pointing", "energy", "iou"]


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    return phantom_items(tmp_path_factory.mktemp("phantom") / "data")


@pytest.fixture(scope="module")
def one_by_one(items, tmp_path_factory):
    folder = tmp_path_factory.mktemp("single") / "store"
    run_batch(make_job(), folder, items, data="phantom")
    return Store.open(folder)


def batched_job(batch: int = 3):
    return dataclasses.replace(make_job(), batch=batch)


def assert_close_results(a: Store, b: Store) -> None:
    """The same pairs, targets, predictions and masks; maps and scores equal up to float rounding
    (a map that differs in its last bits can reorder two pixels of equal rank in the curves)."""
    ta, tb = a.table(), b.table()
    pd.testing.assert_frame_equal(ta[["image_index", "image", "label", "method", "target", "predicted"]], tb[["image_index", "image", "label", "method", "target", "predicted"]])
    np.testing.assert_allclose(ta[SCORES].to_numpy(float), tb[SCORES].to_numpy(float), atol=1e-4, equal_nan=True)
    for curve in ("deletion_curve", "insertion_curve"):
        np.testing.assert_allclose(np.stack(ta[curve]), np.stack(tb[curve]), atol=1e-3)
    for method in METHODS:
        maps_a, maps_b = a.read_map_stack(method), b.read_map_stack(method)
        assert np.abs(maps_a - maps_b).max() <= 1e-5 * np.ptp(maps_b)


def test_groups_keep_the_order_of_the_tasks():
    assert task_groups(list(range(7)), 3) == [[0, 1, 2], [3, 4, 5], [6]]
    assert task_groups(list(range(2)), 0) == [[0], [1]]


def test_a_batched_run_stores_what_the_one_by_one_run_stores(items, one_by_one, tmp_path):
    summary = run_batch(batched_job(), tmp_path / "store", items, data="phantom")
    assert (summary.computed, summary.complete) == (8, True)
    assert_close_results(Store.open(tmp_path / "store"), one_by_one)
    # the batch size is not a result setting: the manifest is the one-by-one run's
    assert Store.open(tmp_path / "store").settings == one_by_one.settings


def test_a_batched_run_killed_mid_way_resumes_without_recomputing(items, one_by_one, tmp_path):
    folder = tmp_path / "store"
    first = run_batch(batched_job(), folder, items, data="phantom", limit=3)
    assert Store.open(folder).done_pairs() == {(0, "gradcam"), (0, "saliency"), (1, "gradcam")}
    second = run_batch(batched_job(), folder, items, data="phantom", resume=True)
    assert (first.computed, second.skipped, second.computed, second.complete) == (3, 3, 5, True)
    assert_close_results(Store.open(folder), one_by_one)


def test_a_ray_actor_runs_a_group_as_the_local_worker_does(items):
    """The Ray actor's code, called directly (starting Ray takes a minute on the loaded 2-core test
    machine; a run on a local Ray with 2 workers and groups of 2 gave the local store to the bit
    when this was written): a list of tasks is run as one group."""
    from engine.runs.ray_backend import _RayWorker
    from engine.runs.run import pending_tasks
    from engine.runs.worker import Worker

    job = batched_job(2)
    tasks = pending_tasks(items[:2], list(METHODS), set())
    actor, worker = _RayWorker(), Worker(job)
    remote, local = actor.run(job, tasks), worker.run_many(tasks)
    assert [(r.index, r.method) for r in remote] == [(0, "gradcam"), (0, "saliency"), (1, "gradcam"), (1, "saliency")]
    for a, b in zip(remote, local, strict=True):
        assert {k: v for k, v in a.record.items() if k != "time_s"} == {k: v for k, v in b.record.items() if k != "time_s"}
        np.testing.assert_array_equal(a.map, b.map)
    assert len(actor.run(job, tasks[0])) == 2  # one task, as before batching
