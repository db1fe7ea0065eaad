"""Result stores in the window (issue 18): the Results table of a store, sorted and filtered; a row's
stored maps in the grid, read from the Zarr array and never recomputed; unreadable stores as
messages; and a batch run started from the window, abandoned at close and resumed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import zarr
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QMessageBox

from engine.core.requests import ModelSpec
from engine.demo.phantom import write_imagefolder
from engine.io.images import scan_inputs
from engine.methods._registry import get_method
from engine.runs.run import run_batch
from engine.runs.store import Store
from engine.runs.worker import Job, MetricSettings
from gui.document import DONE, PENDING, AnalysisRequest, Document, InputInfo, ModelInfo
from gui.jobs import BATCH_LANE, DEVICE_LANE
from gui.panels.batch_dialog import BatchDialog
from gui.session_file import read_session
from tests.gui.conftest import ENGINE_TIMEOUT_MS, wait_for_input

METHODS = ("saliency", "gradcam")


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantom") / "data"
    write_imagefolder(folder, n=4, size=128, seed=5)
    return folder


@pytest.fixture(scope="module")
def store(phantom, tmp_path_factory):
    """A store written by the engine: 4 phantom images x saliency, gradcam."""
    folder = tmp_path_factory.mktemp("stores") / "run"
    params = {name: get_method(name).params_cls() for name in METHODS}
    job = Job(ModelSpec("demo:ultrasound"), params, MetricSettings(steps=4), seed=0, threads=1)
    items = [i for i in scan_inputs(phantom).items if not i.is_tensor]
    summary = run_batch(job, folder, items, data=str(phantom.resolve()))
    assert summary.complete and summary.computed == 8
    return folder


def test_a_stored_analysis_is_done_without_a_job_follows_no_input_and_is_nobodys_unsaved_work():
    document = Document()
    document.set_input(InputInfo("/data/a.png", "a.png"))
    request = AnalysisRequest("gradcam", {"layer": ""}, 1, "benign", "x.png", {"layer": ""}, "/store-data/x.png", ModelInfo("demo:ultrasound"))
    stored = document.add_stored(request, "the stored map", None, None, {"store": "/runs/run"})
    assert stored.status == DONE and stored.result == "the stored map" and not document.pending() and not document.modified
    assert document.set_input(InputInfo("/data/b.png", "b.png")) == [] and document.set_model(ModelInfo("resnet18")) == []
    assert stored.status == DONE and stored.request.input_path == "/store-data/x.png"  # it is the store's, not the current input's
    document.remove(stored.id)
    assert not document.modified
    again = document.add_stored(request, "the stored map", None, None, {"store": "/runs/run"})
    document.rerun(again.id)  # run again, it is computed here for the current input and model
    assert again.origin is None and again.status == PENDING and again.request.input_path == "/data/b.png" and document.modified


def open_store(qtbot, window, folder):
    window.habits.open_path(str(folder))  # as `main.py gui STOREDIR` and a drop do
    qtbot.waitUntil(lambda: window.results.data is not None and window.results.panel.model.rowCount() > 0, timeout=30000)
    return window.results.panel


def column(panel, name: str) -> list:
    return [record[name] for record in panel.shown_records()]


def test_a_store_opens_as_a_table_sorted_and_filtered_and_a_row_shows_its_stored_maps(make_window, qtbot, store, tmp_path):
    window = make_window()
    qtbot.waitUntil(lambda: window.workspace.info is not None, timeout=ENGINE_TIMEOUT_MS)
    jobs = []
    window.jobs.job_added.connect(jobs.append)
    panel = open_store(qtbot, window, store)
    assert window.results.dock.isVisible()
    table = Store.open(store).table()
    assert [(r["image"], r["method"]) for r in panel.shown_records()] == list(zip(table["image"], table["method"], strict=True))
    assert len(panel.shown_records()) == 8 and "4 image(s) x 2 method(s)" in panel.summary.text() and "complete" in panel.summary.text()
    # Sorting by a metric orders the rows by its value, either way round.
    panel.table.sortByColumn(panel.column_of("deletion_auc"), Qt.SortOrder.AscendingOrder)
    values = column(panel, "deletion_auc")
    assert values == sorted(values) and len(set(values)) > 1
    panel.table.sortByColumn(panel.column_of("insertion_auc"), Qt.SortOrder.DescendingOrder)
    values = column(panel, "insertion_auc")
    assert values == sorted(values, reverse=True)
    # A metric that some images lack (no lesion, no pointing game) keeps them last either way.
    for order in (Qt.SortOrder.AscendingOrder, Qt.SortOrder.DescendingOrder):
        panel.table.sortByColumn(panel.column_of("energy"), order)
        energies = column(panel, "energy")
        known = [e for e in energies if e is not None]
        assert energies[len(known) :] == [None] * (8 - len(known)) and known == sorted(known, reverse=order == Qt.SortOrder.DescendingOrder)
    panel.method_box.setCurrentText("gradcam")
    assert column(panel, "method") == ["gradcam"] * 4
    panel.method_box.setCurrentText("All methods")
    panel.table.sortByColumn(panel.column_of("insertion_auc"), Qt.SortOrder.DescendingOrder)

    # The top row: every stored map of its image goes into the grid, equal to the Zarr arrays.
    top = panel.shown_records()[0]
    panel.select_row(0)
    qtbot.waitUntil(lambda: len(window.grid.cells) == 2, timeout=30000)
    maps = zarr.open_group(str(store / "maps.zarr"), mode="r")
    index = top["image_index"]
    assert [cell.request.method for cell in window.grid.cells] == list(METHODS)
    for cell in window.grid.cells:
        analysis = window.analyses.analysis_of(cell)
        assert analysis.status == DONE and analysis.origin["store"] == str(store) and cell.cell_id not in window.analyses.cell_jobs
        assert np.allclose(cell.explanation.map, maps[cell.request.method][index], equal_nan=True)
        assert cell.request.input_name == top["image"] and cell.request.model.spec == "demo:ultrasound"
        assert "stored in run" in cell.title.text() and "not recomputed" in cell.footer.text()
        assert cell.base_item.image.shape == (128, 128)  # the image under the map, from the data folder
    assert window.grid.selected.request.method == top["method"]
    # Nothing was computed: only file-lane reads ran, no analysis or batch job.
    assert jobs and not [job for job in jobs if job.lane in (DEVICE_LANE, BATCH_LANE)]
    assert not window.document.modified and not window.errors
    # A session keeps them (a stored map has no probability: written as null, read back as NaN).
    assert window.session.save(tmp_path / "stored.sensiscope.zip")
    cells = read_session(tmp_path / "stored.sensiscope.zip", set(METHODS)).cells
    assert [c.method for c in cells] == list(METHODS) and math.isnan(cells[0].explanation.probability)
    assert np.array_equal(cells[1].explanation.map, window.grid.cells[1].explanation.map)

    # Another image's row replaces them; a stored map keeps its map when the current input changes.
    other = next(row for row, r in enumerate(panel.shown_records()) if r["image_index"] != index)
    panel.select_row(other)
    new_index = panel.shown_records()[other]["image_index"]
    qtbot.waitUntil(lambda: window.results.shown == (str(store), new_index) and len(window.grid.cells) == 2, timeout=30000)
    for cell in window.grid.cells:
        assert np.allclose(cell.explanation.map, maps[cell.request.method][new_index], equal_nan=True)
    assert len(window.document.analyses) == 2


@pytest.mark.parametrize(
    ("manifest", "words"),
    [
        ("{garbage", "not valid JSON"),
        (json.dumps({"format": "sensiscope-store", "format_version": 99, "settings": {}}), "newer Sensiscope"),
        (json.dumps({"format": "sensiscope-store", "format_version": 1, "settings": {"images": "x"}}), "incompatible"),
    ],
)
def test_an_unreadable_store_is_a_message_not_a_crash(make_window, qtbot, tmp_path, manifest, words):
    window = make_window()
    folder = tmp_path / "broken"
    (folder / "records").mkdir(parents=True)
    (folder / "manifest.json").write_text(manifest)
    window.habits.open_path(str(folder))
    qtbot.waitUntil(lambda: bool(window.errors), timeout=30000)
    title, message = window.errors[-1]
    assert title == "Cannot open the result store" and words in message and "Traceback" not in message
    assert window.results.data is None and window.messages_panel.isVisible()


def test_a_store_with_a_corrupt_record_file_is_a_message(make_window, qtbot, store, tmp_path):
    import shutil

    window = make_window()
    copy = tmp_path / "copy"
    shutil.copytree(store, copy)
    (copy / "records" / "part-0-garbage.parquet").write_bytes(b"not parquet at all")
    window.results.open_store(copy)
    qtbot.waitUntil(lambda: bool(window.errors), timeout=30000)
    assert "cannot read this result store" in window.errors[-1][1] and window.results.data is None


def start_batch_from_dialog(window, monkeypatch, store_dir):
    """Choose saliency and gradcam, 4 curve steps and the store in the dialog, and press Run."""

    def fill(dialog):
        for name, box in dialog.method_boxes.items():
            box.setChecked(name in METHODS)
        dialog.store_edit.setText(str(store_dir))
        dialog.steps_box.setValue(4)
        assert dialog.batch_box.value() == 16  # as main.py batch --batch
        dialog.batch_box.setValue(3)
        assert dialog.check() == ""
        return QDialog.DialogCode.Accepted

    monkeypatch.setattr(BatchDialog, "exec", fill)
    job = window.results.batch_dialog()
    assert job is not None and job.lane == BATCH_LANE
    assert window.results.batch_request.batch == 3
    return job


def open_model_and_folder(qtbot, window, folder):
    qtbot.waitUntil(lambda: window.workspace.info is not None, timeout=ENGINE_TIMEOUT_MS)
    window.workspace.load_model("demo:ultrasound")
    window.workspace.open_dataset(folder)
    wait_for_input(qtbot, window)


def test_a_batch_from_the_window_is_abandoned_at_close_and_resumed(make_window, qtbot, monkeypatch, phantom, tmp_path):
    store_dir = tmp_path / "gui-run"
    answers = []  # the answers to "Abandon the batch run?"; none left: abandon (a failed test never hangs on a dialog)
    monkeypatch.setattr(QMessageBox, "exec", lambda box: answers.pop(0) if answers else QMessageBox.StandardButton.Yes)
    first = make_window()
    open_model_and_folder(qtbot, first, phantom)
    first_job = start_batch_from_dialog(first, monkeypatch, store_dir)
    kept = []

    def close_during_the_run(_fraction, _message, data):
        """Close as soon as 2 pairs are in the store: Cancel keeps the window and the run, then
        "Abandon and close" (the next answer) closes it and cancels the run."""
        if data is None or data.computed < 2 or kept:
            return
        answers.append(QMessageBox.StandardButton.Cancel)
        first.close()
        kept.append(first.isVisible() and not first_job.ended and not answers)
        first.close()

    first_job.signals.progress.connect(close_during_the_run)
    qtbot.waitUntil(lambda: first_job.ended, timeout=60000)
    assert kept == [True] and not first.isVisible() and first_job.state == "cancelled"
    finished = len(Store.open(store_dir).done_pairs())
    assert 2 <= finished < 8  # the pairs finished before the close stay in the store

    # A new window resumes the run: only the missing pairs are computed.
    window = make_window()
    open_model_and_folder(qtbot, window, phantom)
    job = start_batch_from_dialog(window, monkeypatch, store_dir)
    with qtbot.waitSignal(job.signals.finished, timeout=120000) as result:
        pass
    summary = result.args[0]
    assert (summary.skipped, summary.computed, summary.total, summary.complete) == (finished, 8 - finished, 8, True)
    qtbot.waitUntil(lambda: window.results.data is not None and len(window.results.panel.shown_records()) == 8, timeout=30000)
    assert window.results.data.folder == str(store_dir)
    # Once more with resume: nothing left to compute.
    job = start_batch_from_dialog(window, monkeypatch, store_dir)
    with qtbot.waitSignal(job.signals.finished, timeout=60000) as result:
        pass
    assert (result.args[0].skipped, result.args[0].computed) == (8, 0)
    assert len(Store.open(store_dir).table()) == 8 and not window.errors
    assert not math.isnan(Store.open(store_dir).table()["deletion_auc"].mean())


def test_the_stability_column_appears_only_when_a_run_kept_it():
    from gui.store_data import StoreData, metric_text

    base = {"image": "a.png", "label": "benign", "method": "pertmap", "predicted": "benign", "pointing": 1.0, "deletion_auc": 0.4, "insertion_auc": 0.7, "time_s": 2.0}
    settings = {"methods": {"pertmap": {}}, "images": ["a.png"]}
    without = StoreData("s", settings, [], [dict(base)])
    kept = StoreData("s", settings, [], [{**base, "stability": 0.75}])
    assert "stability" not in without.columns() and "stability" in kept.columns()
    assert "stability 0.75" in metric_text(kept.rows[0]) and "stability" not in metric_text(without.rows[0])


def test_a_gui_batch_request_makes_the_engine_job_with_its_images_per_pass(phantom):
    from gui.store_data import BatchRequest, batch_job

    request = BatchRequest("demo:ultrasound", None, None, False, str(phantom), ("gradcam",), "unused", batch=5, max_images=4)
    job, items = batch_job(request)
    assert job.batch == 5 and len(items) == 4
    assert batch_job(BatchRequest("demo:ultrasound", None, None, False, str(phantom), ("gradcam",), "unused", batch=0))[0].batch == 1


def test_a_batch_with_a_broken_image_runs_the_rest_and_names_it(make_window, qtbot, monkeypatch, phantom, tmp_path):
    """One unreadable image no longer stops a batch from the window: the other images are run, the
    broken one is a failed record, and the Messages dock names it with the reason."""
    import shutil

    folder = tmp_path / "data"
    shutil.copytree(phantom, folder)
    broken = sorted(p for p in folder.rglob("*.png") if not p.stem.endswith("_mask"))[-1]
    broken.write_bytes(b"not an image")
    window = make_window()
    open_model_and_folder(qtbot, window, folder)
    job = start_batch_from_dialog(window, monkeypatch, tmp_path / "store")
    with qtbot.waitSignal(job.signals.finished, timeout=120000) as result:
        pass
    summary = result.args[0]
    assert summary.complete and summary.failed == len(METHODS)
    name = broken.relative_to(folder).as_posix()
    assert [image for image, _ in window.results.skipped_images] == [name]
    title, message, _ = window.messages_panel.entries[0]
    assert title == "Batch: images skipped" and f"{name}: " in message and "Retry failed" in message and window.messages_dock.isVisible()
    assert len(Store.open(tmp_path / "store").table()) == (summary.total - summary.failed)
    assert not window.errors
