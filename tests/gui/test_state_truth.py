"""The window's state never lies (issue 13, items 1-6), driven as a user would: the demo explains the
image it highlights, a changed input never leaves an old map under a new header, cells name their
model, failed loads leave no "Loading..." and set aside the file that failed, a randomly initialised
model is marked, and a failing cell reports once, in the GUI's words, and does not re-run on every click."""

from __future__ import annotations

import numpy as np
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QMessageBox

from gui.document import PENDING
from gui.main_window import DEMO_CLASSES
from gui.panels.messages_panel import gui_words
from tests.gui.conftest import ENGINE_TIMEOUT_MS, wait_for_input
from tests.gui.test_main_window import run_from_panel


def _image(path, seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 48, 3), np.uint8)).save(path)
    return path


def test_open_the_demo_explains_the_highlighted_image_and_cells_name_their_model(make_window, qtbot, tmp_path):
    window = make_window()
    qtbot.waitUntil(lambda: window.workspace.info is not None, timeout=ENGINE_TIMEOUT_MS)
    folder = tmp_path / "other"
    folder.mkdir()
    _image(folder / "elsewhere.png")
    window.workspace.open_dataset(folder)
    window.model_panel.load_requested.emit("demo:ultrasound", "", "", False)
    qtbot.waitUntil(lambda: window.workspace.current is not None and window.workspace.current.item.path.name == "elsewhere.png", timeout=ENGINE_TIMEOUT_MS)
    with qtbot.waitSignal(window.demo_ready, timeout=90000):
        window.demo_action.trigger()
    current = window.workspace.current
    highlighted = window.dataset_panel.view.currentIndex().data(Qt.ItemDataRole.UserRole)
    assert highlighted == current.item and current.item.label in DEMO_CLASSES
    assert window.document.input.path == str(current.item.path)
    for cell in window.grid.cells:
        assert cell.request.input_path == str(current.item.path)
        assert np.array_equal(cell.image, current.image)  # computed on the highlighted image, not elsewhere.png
        title = cell.title.text()
        assert "model demo:ultrasound" in title and current.item.path.name in title and " s on cpu" in title
        assert "UNTRAINED" not in title


def test_a_new_input_shows_pending_cells_never_the_old_map_and_a_failure_reports_once(make_window, qtbot):
    window = make_window(demo=True)
    with qtbot.waitSignal(window.demo_ready, timeout=90000):
        pass
    old = window.workspace.current.item
    seen = []
    window.document.subscribe(lambda event: seen.append((window.analyses.cell_for(event.analysis), event.analysis.status)) if event.kind == "changed" else None)
    other = next(item for item in window.workspace.scan.items if item.label in DEMO_CLASSES and item != old)
    window.dataset_panel.select(other)
    qtbot.waitUntil(lambda: all(cell.state == "done" and cell.request.input_path == str(other.path) for cell in window.grid.cells), timeout=60000)
    pending = [cell for cell, status in seen if status == PENDING]
    assert set(pending) == set(window.grid.cells)
    # Right after the change each cell named the new input and showed no map (checked by the view state it drew then).
    current = window.workspace.current
    for cell in window.grid.cells:
        assert np.array_equal(cell.image, current.image) and other.path.name in cell.title.text()
    # A failing analysis: the message shows in the cell and once in Messages, without command-line flags.
    assert not window.analysis_panel.form.set_value("layer", "no.such.layer")  # the layer field offers only the model's layers
    failing = run_from_panel(qtbot, window, "actmax", objective="channel", channel=100000, steps=1)
    qtbot.waitUntil(lambda: failing.state == "failed", timeout=30000)
    assert failing.explanation is None and not failing.colorbar.isVisible()
    assert "main.py" not in failing.footer.text() and "channel 100000 does not exist" in failing.footer.text()
    assert len(window.messages_panel.entries) == 1 and window.messages_dock.isVisible()
    # Another image: the working maps follow it, the failing one waits for the user instead of failing again.
    third = next(item for item in window.workspace.scan.items if item not in (old, other))
    window.dataset_panel.select(third)
    qtbot.waitUntil(lambda: all(cell.state == "done" for cell in window.grid.cells if cell is not failing) and window.workspace.current.item == third, timeout=60000)
    assert failing.state == "failed" and failing.cell_id not in window.cell_jobs
    assert len(window.messages_panel.entries) == 1 and window.messages_panel.entries[0][2] == 1


def test_failed_loads_leave_no_loading_text_set_the_failing_file_aside_and_untrained_is_marked(make_window, qtbot, tmp_path, monkeypatch):
    window = make_window(demo=True, demo_analyses=False)
    wait_for_input(qtbot, window)
    panel = window.model_panel
    wrong = tmp_path / "five.txt"
    wrong.write_text("a\nb\nc\nd\ne\n")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(wrong), ""))
    qtbot.mouseClick(panel.labels_button, Qt.MouseButton.LeftButton)  # five names for a three-class model
    qtbot.waitUntil(lambda: bool(window.errors), timeout=20000)
    text = panel.source_label.text()
    assert "Could not load" in text and "Still using" in text and "Loading" not in text and not panel.busy.isVisible()
    assert panel.labels_path == "" and "five.txt" in text
    # The labels that did not fit no longer block a load of the demo.
    errors = len(window.errors)
    with qtbot.waitSignal(window.workspace.model_loaded, timeout=30000):
        qtbot.mouseClick(panel.load_button, Qt.MouseButton.LeftButton)
    assert len(window.errors) == errors and "Could not" not in panel.source_label.text()
    # A random-weights model is marked in the panel and in every map it makes.
    assert not panel.untrained_label.isVisibleTo(panel)
    window.model_panel.load_requested.emit("mobilenet_v3_small", "", "", False)
    qtbot.waitUntil(lambda: window.workspace.model.loaded.spec == "mobilenet_v3_small" and window.document.model.spec == "mobilenet_v3_small", timeout=ENGINE_TIMEOUT_MS)
    assert panel.untrained_label.isVisibleTo(panel) and window.document.model.untrained
    qtbot.waitUntil(lambda: window.workspace.current.tensor.shape[-1] == 224, timeout=20000)
    cell = run_from_panel(qtbot, window, "saliency")
    qtbot.waitUntil(lambda: cell.state == "done", timeout=60000)
    assert "UNTRAINED" in cell.title.text() and "random weights" in cell.title.toolTip()


def test_cli_words_become_gui_words_and_bugs_leak_no_internals():
    assert gui_words("the model has no layer 'x'; `main.py info --model ...` lists the layers") == "the model has no layer 'x'; the Model panel's layer tree lists the layers"
    assert "--weights" not in gui_words("a.pt: holds only weights; name the architecture too, e.g. --model resnet18 --weights a.pt")
    assert gui_words("IndexError: pop from empty list") == "an internal error (IndexError); the log has the details. Please report it."
    assert gui_words("scan.png: cannot read the image") == "scan.png: cannot read the image"


def test_predict_all_skips_unreadable_files_and_shows_accuracy_and_a_confusion_matrix(make_window, qtbot, tmp_path):
    window = make_window()
    qtbot.waitUntil(lambda: window.workspace.info is not None, timeout=ENGINE_TIMEOUT_MS)
    for index, label in enumerate(("benign", "benign", "normal")):
        (tmp_path / "set" / label).mkdir(parents=True, exist_ok=True)
        _image(tmp_path / "set" / label / f"scan{index}.png", seed=index)
    (tmp_path / "set" / "normal" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with qtbot.waitSignal(window.workspace.model_loaded, timeout=ENGINE_TIMEOUT_MS):
        window.model_panel.load_requested.emit("demo:ultrasound", "", "", False)
    window.workspace.open_dataset(tmp_path / "set")
    panel = window.dataset_panel
    qtbot.waitUntil(lambda: panel.model.rowCount() == 4 and panel.predict_button.isEnabled(), timeout=20000)
    with qtbot.waitSignal(panel.predictions_shown, timeout=30000):
        panel.predict_button.click()
    rows = {item.path.name: row for row, item in enumerate(panel.model.items)}
    assert rows["broken.png"] not in panel.model.predictions and len(panel.model.predictions) == 3
    assert "1 unreadable file(s) skipped" in panel.scores_label.text()
    assert any("skipped" in title and "broken.png" in message for title, message in window.errors)
    labelled = [(item.label, panel.model.predictions[row][0]) for row, item in enumerate(panel.model.items) if row in panel.model.predictions]
    expected = sum(truth == guess for truth, guess in labelled) / 3
    assert f"Accuracy {expected:.1%}" in panel.scores_label.text()
    table = panel.confusion
    assert table.isVisibleTo(panel)
    counts = sum(int(table.item(r, c).text()) for r in range(table.rowCount()) for c in range(table.columnCount()))
    diagonal = sum(int(table.item(r, r).text()) for r in range(table.rowCount()))
    assert counts == 3 and diagonal == round(expected * 3)


def test_the_title_names_the_session_quitting_with_unsaved_maps_asks_and_reopening_recomputes_nothing(make_window, qtbot, tmp_path, monkeypatch):
    window = make_window(demo=True)
    with qtbot.waitSignal(window.demo_ready, timeout=90000):
        pass
    assert not window.isWindowModified()  # the demo's own maps are nobody's unsaved work
    cell = run_from_panel(qtbot, window, "saliency")
    qtbot.waitUntil(lambda: cell.state == "done", timeout=30000)
    assert window.isWindowModified() and window.windowTitle().startswith("Sensiscope") and window.windowTitle().endswith("[*]")
    del window.confirm_close  # the real question, answered Cancel: the window stays
    asked = []
    monkeypatch.setattr(QMessageBox, "exec", lambda box: asked.append(box.text()) or QMessageBox.StandardButton.Cancel)
    window.close()
    assert window.isVisible() and len(asked) == 1 and "not saved" in asked[0]
    path = tmp_path / "work.sensiscope.zip"
    assert window.session.save(path)
    assert window.windowTitle().startswith("work.sensiscope.zip[*] - Sensiscope") and not window.isWindowModified()
    fresh = make_window()
    with qtbot.waitSignal(fresh.session_restored, timeout=ENGINE_TIMEOUT_MS):
        fresh.habits.open_path(str(path))  # what `main.py gui work.sensiscope.zip` and a drop do
    wait_for_input(qtbot, fresh)
    qtbot.wait(300)
    assert not fresh.cell_jobs and [c.state for c in fresh.grid.cells] == ["done"] * 3
    assert all("model demo:ultrasound" in c.title.text() for c in fresh.grid.cells)
    assert fresh.windowTitle().startswith("work.sensiscope.zip") and not fresh.isWindowModified()
    window.close()  # saved: no second question
    assert len(asked) == 1 and not window.isVisible()


def test_clear_all_asks_undo_brings_maps_back_and_identical_cells_are_not_duplicated(make_window, qtbot, monkeypatch):
    window = make_window(demo=True)
    with qtbot.waitSignal(window.demo_ready, timeout=90000):
        pass
    grid = window.grid
    maps = [cell.explanation for cell in grid.cells]
    # Run with the demo's own Grad-CAM request again: the existing cell is selected, no duplicate.
    window.analysis_panel.select_method("gradcam")
    qtbot.mouseClick(window.analysis_panel.run_button, Qt.MouseButton.LeftButton)
    assert len(grid.cells) == 2 and grid.selected is grid.cells[0]
    answers = [QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes]
    monkeypatch.setattr(QMessageBox, "exec", lambda box: answers.pop(0))
    qtbot.mouseClick(grid.clear_button, Qt.MouseButton.LeftButton)  # answered No: nothing removed
    assert len(grid.cells) == 2
    qtbot.mouseClick(grid.clear_button, Qt.MouseButton.LeftButton)
    assert grid.cells == [] and window.document.analyses == []
    window.undo_action.trigger()
    assert [cell.explanation for cell in grid.cells] == maps and [c.state for c in grid.cells] == ["done", "done"]
    assert not window.cell_jobs  # put back as they were, not recomputed
    window.redo_action.trigger()
    assert grid.cells == []
    window.undo_action.trigger()
    qtbot.mouseClick(grid.cells[1].remove_button, Qt.MouseButton.LeftButton)
    assert [c.request.method for c in grid.cells] == ["gradcam"]
    window.undo_action.trigger()
    assert [c.request.method for c in grid.cells] == ["gradcam", "local"] and grid.cells[1].explanation is maps[1]


def test_main_py_gui_takes_paths_and_the_launcher_opens_files(tmp_path):
    from gui.app import parse_args

    args, rest = parse_args(["scan.png", "work.sensiscope.zip", "-style", "fusion"])
    assert args.paths == ["scan.png", "work.sensiscope.zip"] and not args.demo
    import gui.app
    import main

    calls = []
    image = _image(tmp_path / "scan.png")
    saved = gui.app.run_gui
    gui.app.run_gui = lambda argv: calls.append(list(argv)) or 0
    try:
        assert main.main([str(image)]) == 0 and main.main(["gui", str(image)]) == 0
    finally:
        gui.app.run_gui = saved
    assert calls == [[str(image)], [str(image)]]
    assert gui.app.run_gui(["--empty", str(tmp_path / "missing.png")]) == 2
