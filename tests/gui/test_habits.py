"""Menus and habits: recent files, copy, shortcuts, theme, memory label, predict all, reordering and drops."""

from __future__ import annotations

import re
from types import SimpleNamespace

import psutil
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

from engine.core.vocab import MODEL_FILE_SUFFIXES
from gui.panels.model_panel import MODEL_FILTER
from gui.widgets.map_view import AnalysisRequest
from gui.window_actions import MAX_RECENT, SHORTCUTS, memory_text
from tests.gui.conftest import wait_for_input


def test_recent_files_shortcuts_copy_and_theme(make_window, qtbot, tmp_path):
    window = make_window()
    habits = window.habits
    assert [action.text() for action in window.menuBar().actions()] == ["&File", "&Edit", "&View", "&Help"]
    # Recent files: most recent first, at most MAX_RECENT, missing files pruned with a message.
    files = []
    for index in range(MAX_RECENT + 2):
        path = tmp_path / f"model{index}.pt"
        path.write_bytes(b"x")
        habits.recent.add("models", path)
        files.append(path)
    assert habits.recent.paths("models")[0] == str(files[-1]) and len(habits.recent.paths("models")) == MAX_RECENT
    files[-1].unlink()
    habits.fill_recent("models")
    names = [action.text() for action in habits.recent_menus["models"].actions()]
    assert names == [path.name for path in reversed(files[2:-1])]
    assert "model9.pt" in window.statusBar().currentMessage()
    habits.fill_recent("tables")
    assert [action.text() for action in habits.recent_menus["tables"].actions()] == ["(none)"]
    # Standard shortcuts sit on the expected actions and are listed in Help > Keyboard shortcuts.
    for name, keys in SHORTCUTS:
        assert getattr(window, name).shortcut().toString() == keys, name
    dialog = habits.show_shortcuts()
    assert dialog.tree.topLevelItemCount() == len(SHORTCUTS)
    dialog.close()
    # Copy map image: the selected (else the last) cell as a picture on the clipboard.
    assert not habits.copy_map()
    window.grid.add_cell(AnalysisRequest("gradcam", {}, None, "predicted", "a.png"))
    QGuiApplication.clipboard().clear()
    window.copy_map_action.trigger()
    assert not QGuiApplication.clipboard().image().isNull()
    # Theme: the palette changes and the choice persists in the settings.
    light = QApplication.palette().color(QPalette.ColorRole.Window).lightness()
    try:
        habits.theme_actions["dark"].trigger()
        assert QApplication.palette().color(QPalette.ColorRole.Window).lightness() < min(light, 100)
        assert window.settings.value("view/theme") == "dark"
    finally:
        habits.set_theme("light")
    assert window.settings.value("view/theme") == "light"


def test_the_status_bar_shows_memory_use(make_window):
    window = make_window()
    window.habits.update_memory()
    assert re.fullmatch(r"(RAM|GPU) [\d,]+( / [\d,]+)? MB", window.habits.memory_label.text())
    assert window.habits.timer.isActive() and window.habits.timer.interval() == 2000


def test_memory_use_comes_from_psutil_on_every_platform(monkeypatch):
    monkeypatch.setattr(psutil, "Process", lambda: SimpleNamespace(memory_info=lambda: SimpleNamespace(rss=1536 * 2**20)))
    assert memory_text("cpu") == "RAM 1,536 MB"

    def hidden():
        raise psutil.AccessDenied(0)

    monkeypatch.setattr(psutil, "Process", hidden)
    assert memory_text("cpu") == "RAM ?"


def test_predict_all_captions_and_the_outcome_filter(make_window, qtbot):
    window = make_window(demo=True, demo_analyses=False)
    wait_for_input(qtbot, window)
    panel = window.dataset_panel
    assert panel.predict_button.isEnabled()
    with qtbot.waitSignal(panel.predictions_shown, timeout=30000):
        panel.predict_button.click()
    model = panel.model
    assert len(model.predictions) == model.rowCount() == 60
    caption = model.data(model.index(0), Qt.ItemDataRole.DisplayRole)
    assert re.search(r"\n\w+ \d+%$", caption)
    assert "confidence" in model.data(model.index(0), Qt.ItemDataRole.ToolTipRole)
    verdicts = [model.correct(row) for row in range(60)]
    panel.outcome_box.setCurrentIndex(2)  # incorrect only
    assert [panel.view.isRowHidden(row) for row in range(60)] == [verdict is not False for verdict in verdicts]
    panel.outcome_box.setCurrentIndex(1)  # correct only
    assert [panel.view.isRowHidden(row) for row in range(60)] == [verdict is not True for verdict in verdicts]
    assert any(verdicts)


def test_cells_move_and_dropped_files_open(make_window, qtbot, tmp_path, monkeypatch):
    window = make_window()
    grid = window.grid
    cells = [grid.add_cell(AnalysisRequest(method, {}, None, "predicted", "a.png")) for method in ("gradcam", "local", "saliency")]
    qtbot.mouseClick(cells[0].right_button, Qt.MouseButton.LeftButton)
    assert grid.cells == [cells[1], cells[0], cells[2]]
    assert grid.grid.itemAtPosition(0, 1).widget() is cells[0]
    assert not grid.move_cell(cells[2], 1) and not cells[1].left_button.isEnabled()
    grid.select(cells[2])
    window.remove_cell_action.trigger()
    assert grid.cells == [cells[1], cells[0]]
    # Drops: a model file goes to the model panel, anything else is opened as data.
    opened = []
    monkeypatch.setattr(window.model_panel, "open_file", lambda path: opened.append(("model", path)))
    monkeypatch.setattr(window.workspace, "open_dataset", lambda path: opened.append(("data", path)))
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(tmp_path / name)) for name in ("net.safetensors", "last.CKPT", "")])
    event = QDropEvent(QPointF(5, 5), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    window.dropEvent(event)
    assert opened == [("model", str(tmp_path / "net.safetensors")), ("model", str(tmp_path / "last.CKPT")), ("data", str(tmp_path))]


def test_the_model_file_dialog_offers_every_suffix_the_engine_loads():
    offered = re.search(r"\((.*?)\)", MODEL_FILTER)[1].split()
    assert offered == [f"*{suffix}" for suffix in MODEL_FILE_SUFFIXES] and "*.ckpt" in offered
