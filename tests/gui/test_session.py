"""Exports of the map grid and sessions: saved, reopened in a fresh window with the same maps, bad files refused."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
from PIL import Image

from tests.gui.conftest import ENGINE_TIMEOUT_MS, wait_for_input


def test_export_maps_and_reopen_a_session_with_identical_cells(make_window, qtbot, tmp_path):
    window = make_window(demo=True)
    with qtbot.waitSignal(window.demo_ready, timeout=90000):
        pass
    cells = window.grid.cells
    window.grid.colormap_box.setCurrentText("viridis")

    job = window.session.export_maps(tmp_path / "maps")
    with qtbot.waitSignal(job.signals.finished, timeout=20000) as blocker:
        pass
    files = blocker.args[0]
    assert len(files) == 4
    for cell in cells:
        stem = next(f[:-4] for f in files if f.endswith(".npy") and f"cell{cell.cell_id}_{cell.request.method}" in f)
        saved = np.load(stem + ".npy")
        assert saved.dtype == np.float32 and np.array_equal(saved, cell.explanation.map)
        with Image.open(stem + ".png") as picture:
            assert picture.size == cell.explanation.map.shape[::-1]
    assert window.session.export_comparison(tmp_path / "comparison.png")
    with Image.open(tmp_path / "comparison.png") as picture:
        assert picture.width > 300

    path = tmp_path / "demo.sensiscope.zip"
    assert window.session.save(path)
    with zipfile.ZipFile(path) as archive:
        state = json.loads(archive.read("session.json"))
    assert state["model"]["spec"] == "demo:ultrasound" and state["data"]["demo"] and state["data"]["selected"]
    assert [c["method"] for c in state["cells"]] == ["gradcam", "local"]

    fresh = make_window()
    with qtbot.waitSignal(fresh.session_restored, timeout=ENGINE_TIMEOUT_MS):
        fresh.session.open(path)
    restored = fresh.grid.cells
    assert [c.request.method for c in restored] == ["gradcam", "local"]
    for old, new in zip(cells, restored, strict=True):
        assert new.request.params == old.request.params and new.request.target == old.request.target
        assert new.request.input_name == old.request.input_name and new.input_path == old.input_path
        assert np.array_equal(new.explanation.map, old.explanation.map) and new.explanation.map.dtype == np.float32
        assert np.array_equal(new.image, old.image) and np.array_equal(new.mask, old.mask)
        assert new.explanation.target == old.explanation.target and new.explanation.elapsed_s == old.explanation.elapsed_s
    assert fresh.grid.colormap_box.currentText() == "viridis"
    # The model and the selected input come back, and the restored maps are not recomputed.
    wait_for_input(qtbot, fresh)
    assert str(fresh.workspace.current.item.path) == state["data"]["selected"]
    restored_maps = [c.explanation for c in restored]
    assert not fresh.cell_jobs and [c.explanation for c in fresh.grid.cells] == restored_maps
    assert all(c.state == "done" for c in fresh.grid.cells)
    assert not fresh.errors


def test_corrupt_and_foreign_session_files_give_a_message(make_window, qtbot, tmp_path):
    window = make_window()
    qtbot.waitUntil(lambda: window.workspace.info is not None, timeout=ENGINE_TIMEOUT_MS)
    corrupt = tmp_path / "corrupt.zip"
    corrupt.write_bytes(os.urandom(512))
    foreign = tmp_path / "foreign.zip"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("session.json", json.dumps({"format": "something-else"}))
    broken = tmp_path / "broken.zip"
    with zipfile.ZipFile(broken, "w") as archive:
        archive.writestr("session.json", json.dumps({"format": "sensiscope-session", "version": 1, "cells": [{"folder": "cells/0"}]}))
    for path, words in ((corrupt, "not a zip"), (foreign, "not a Sensiscope session"), (broken, "cells[].method")):
        count = len(window.errors)
        window.session.open(path)
        qtbot.waitUntil(lambda count=count: len(window.errors) > count, timeout=20000)
        title, message = window.errors[-1]
        assert title == "Cannot open the session" and words in message
    assert window.grid.cells == []
