"""The Ray backend on a local Ray that these tests start (2 CPUs, no dashboard) and stop: the same
records and maps as the local backend, and a run killed mid-way and resumed on Ray ends with the
complete, identical table without recomputing a finished pair."""

from __future__ import annotations

import dataclasses

import pytest

from engine.core.errors import UserError
from engine.core.requests import ModelSpec
from engine.runs.run import RayOptions, run_batch
from engine.runs.store import Store
from tests.engine.test_runs import assert_same_results, make_job, phantom_items

ray = pytest.importorskip("ray", reason="the Ray backend needs the cluster extra")

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::ResourceWarning")


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    return phantom_items(tmp_path_factory.mktemp("phantom") / "data")


@pytest.fixture(scope="module")
def local_store(items, tmp_path_factory):
    folder = tmp_path_factory.mktemp("local") / "store"
    run_batch(make_job(), folder, items, data="phantom")
    return Store.open(folder)


def test_two_ray_workers_give_the_local_records_and_maps(local_ray, items, local_store, tmp_path):
    summary = run_batch(make_job(), tmp_path / "ray", items, data="phantom", backend="ray", ray=RayOptions(workers=2))
    assert (summary.backend, summary.computed, summary.complete) == ("ray", 8, True)
    assert_same_results(Store.open(tmp_path / "ray"), local_store)


def test_a_ray_run_killed_mid_way_resumes_on_ray_and_on_the_local_backend(local_ray, items, local_store, tmp_path):
    folder = tmp_path / "ray"
    first = run_batch(make_job(), folder, items, data="phantom", backend="ray", ray=RayOptions(workers=2), limit=3)
    assert (first.computed, first.complete) == (3, False) and len(Store.open(folder).done_pairs()) == 3
    second = run_batch(make_job(), folder, items, data="phantom", backend="ray", ray=RayOptions(workers=2), resume=True, limit=2)
    assert (second.skipped, second.computed) == (3, 2)
    third = run_batch(make_job(), folder, items, data="phantom", resume=True)  # the last pairs on the local backend
    assert (third.skipped, third.computed, third.complete) == (5, 3, True)
    assert_same_results(Store.open(folder), local_store)


def test_a_worker_error_is_one_user_error(local_ray, items, tmp_path):
    job = make_job()
    broken = dataclasses.replace(job, model=ModelSpec("no-such-model.pt"))
    with pytest.raises(UserError, match="no-such-model"):
        run_batch(broken, tmp_path / "broken", items[:1], backend="ray", ray=RayOptions(workers=2))
    with pytest.raises(UserError, match="asks for 1 GPUs but the cluster has 0"):
        run_batch(job, tmp_path / "gpus", items[:1], backend="ray", ray=RayOptions(workers=2, gpus_per_worker=1))
