"""A damaged result store is found on open and said in one line; `--resume --repair` sets the
damage aside (never deletes it) and recomputes exactly what was lost, to the same results as an
undamaged run. Arbitrary damage to a record file gives a clear error or a sound store."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engine.core.errors import UserError
from engine.runs.run import run_batch
from engine.runs.store import Store
from tests.engine.test_runs import METHODS, assert_same_results, make_job, phantom_items


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    return phantom_items(tmp_path_factory.mktemp("phantom") / "data")


@pytest.fixture(scope="module")
def reference(items, tmp_path_factory):
    """A clean store written in two runs (several parts), the yardstick of every repair."""
    folder = tmp_path_factory.mktemp("reference") / "store"
    run_batch(make_job(), folder, items, data="phantom", limit=4)
    run_batch(make_job(), folder, items, data="phantom", resume=True)
    return folder


def copy_of(reference, tmp_path):
    target = tmp_path / "store"
    shutil.copytree(reference, target)
    return target


def one_line(exc_info) -> str:
    message = str(exc_info.value)
    assert "\n" not in message
    return message


def repaired_equals_reference(store_dir, items, reference):
    summary = run_batch(make_job(), store_dir, items, data="phantom", resume=True, repair=True)
    assert summary.complete
    assert any(p.name.startswith("damaged-") for p in store_dir.iterdir())
    assert_same_results(Store.open(store_dir), Store.open(reference))
    return summary


def test_a_truncated_part_is_named_and_repaired(items, reference, tmp_path):
    store_dir = copy_of(reference, tmp_path)
    part = sorted((store_dir / "records").glob("part-*.parquet"))[0]
    lost = pq.read_table(part).num_rows
    part.write_bytes(part.read_bytes()[:100])
    with pytest.raises(UserError) as caught:
        Store.open(store_dir)
    assert f"the record file {part.name} is damaged" in one_line(caught) and "--repair" in str(caught.value)
    with pytest.raises(UserError, match="is damaged"):
        run_batch(make_job(), store_dir, items, data="phantom", resume=True)
    summary = repaired_equals_reference(store_dir, items, reference)
    assert summary.computed == lost > 0  # exactly the pairs of the damaged part
    assert list(store_dir.glob("damaged-*/" + part.name))


def test_a_foreign_part_and_rows_that_do_not_belong(items, reference, tmp_path):
    store_dir = copy_of(reference, tmp_path)
    pq.write_table(pa.table({"x": [1, 2]}), store_dir / "records" / "part-zzz-foreign.parquet")
    with pytest.raises(UserError, match="not a part of this store"):
        Store.open(store_dir)
    shutil.move(str(store_dir / "records" / "part-zzz-foreign.parquet"), str(tmp_path / "foreign.parquet"))
    row = pq.read_table(sorted((store_dir / "records").glob("part-*.parquet"))[0]).to_pylist()[0]
    bogus = [dict(row, image_index=10**9), dict(row, method="nosuch")]
    Store.open(store_dir)._write_records(bogus)
    with pytest.raises(UserError) as caught:
        Store.open(store_dir)
    assert "2 record(s) do not belong to the run (image index 1000000000" in one_line(caught)
    summary = repaired_equals_reference(store_dir, items, reference)
    assert summary.computed == 0 and len(Store.open(store_dir).table()) == len(items) * len(METHODS)


def test_damaged_zarr_metadata_sets_that_method_aside(items, reference, tmp_path):
    store_dir = copy_of(reference, tmp_path)
    (store_dir / "maps.zarr" / "gradcam" / "zarr.json").write_text("{ not json")
    with pytest.raises(UserError, match="the maps of gradcam are damaged"):
        run_batch(make_job(), store_dir, items, data="phantom", resume=True)
    summary = repaired_equals_reference(store_dir, items, reference)
    assert summary.computed == len(items)  # every gradcam pair again, no saliency pair


def test_store_folders_that_are_symbolic_links_are_refused(items, reference, tmp_path):
    real = copy_of(reference, tmp_path)
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    with pytest.raises(UserError, match="is a symbolic link"):
        run_batch(make_job(), link, items, data="phantom", resume=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.move(str(real / "records"), str(outside / "records"))
    (real / "records").symlink_to(outside / "records", target_is_directory=True)
    with pytest.raises(UserError, match="records: is a symbolic link"):
        run_batch(make_job(), real, items, data="phantom", resume=True)
    assert sorted(p.name for p in (outside / "records").iterdir()) == sorted(p.name for p in (reference / "records").iterdir())


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(offset=st.integers(min_value=0, max_value=4000), length=st.integers(min_value=1, max_value=64), seed=st.integers(0, 255), which=st.sampled_from(["part", "zarr"]))
def test_arbitrary_damage_gives_a_clear_error_or_a_sound_store(reference, tmp_path_factory, offset, length, seed, which):
    store_dir = tmp_path_factory.mktemp("fuzz") / "store"
    shutil.copytree(reference, store_dir)
    target = sorted((store_dir / "records").glob("part-*.parquet"))[-1] if which == "part" else store_dir / "maps.zarr" / "saliency" / "zarr.json"
    data = bytearray(target.read_bytes())
    start = offset % max(1, len(data))
    data[start : start + length] = bytes((seed + i) % 256 for i in range(len(data[start : start + length])))
    target.write_bytes(bytes(data))
    try:
        store = Store.open(store_dir)
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    table = store.table()  # a store that opens reads whole, with sound values
    assert set(table["method"]) <= set(METHODS) and table["image_index"].between(0, len(store.settings["images"]) - 1).all()
    json.loads((store_dir / "manifest.json").read_text())


def test_a_backend_that_fails_before_any_pair_leaves_no_store_behind(items, tmp_path):
    """A Ray cluster that cannot be reached (or a model no worker can load) leaves nothing that
    would block the same command, corrected, from running again."""
    import dataclasses

    from engine.core.requests import ModelSpec

    broken = dataclasses.replace(make_job(), model=ModelSpec("no-such-model.pt"))
    store_dir = tmp_path / "store"
    with pytest.raises(UserError, match="no-such-model"):
        run_batch(broken, store_dir, items[:1], data="phantom")
    assert not store_dir.exists()
    summary = run_batch(make_job(), store_dir, items[:1], data="phantom")
    assert summary.complete


def test_a_full_disk_is_one_line_and_the_store_stays_consistent(items, tmp_path, monkeypatch):
    import errno

    store_dir = tmp_path / "store"
    run_batch(make_job(), store_dir, items, data="phantom", limit=2)
    real = Store._write_records

    def full(self, records):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Store, "_write_records", full)
    with pytest.raises(UserError) as caught:
        run_batch(make_job(), store_dir, items, data="phantom", resume=True)
    assert "No space left on device" in one_line(caught) and "--resume" in str(caught.value)
    monkeypatch.setattr(Store, "_write_records", real)
    assert len(Store.open(store_dir).table()) == 2
    assert run_batch(make_job(), store_dir, items, data="phantom", resume=True).complete


def test_long_image_names_get_short_output_names(tmp_path):
    from engine.io.writers import MAX_NAME_BYTES, short_name

    long_name = "é" * 150 + ".gradcam"
    short = short_name(long_name)
    assert len(short.encode()) <= MAX_NAME_BYTES and short != short_name("é" * 151 + ".gradcam")
    assert short_name("scan.gradcam") == "scan.gradcam" and short_name(long_name) == short
