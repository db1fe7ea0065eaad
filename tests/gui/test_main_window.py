"""The main window: the demo, running and cancelling analyses, and bad files that must not crash it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from PySide6.QtCore import Qt

import engine
from engine.core.errors import UntrustedFile, UserError
from gui.panels.model_panel import ModelPanel
from tests.gui.conftest import ENGINE_TIMEOUT_MS, wait_for_input
from tests.models import tiny_cnn

ROOT = Path(__file__).resolve().parents[2]


def run_from_panel(qtbot, window, method: str, **params):
    """Choose a method and parameters in the analysis panel and press Run; returns the new cell."""
    panel = window.analysis_panel
    panel.select_method(method)
    for name, value in params.items():
        assert panel.form.set_value(name, value)
    before = list(window.grid.cells)
    qtbot.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)
    new = [cell for cell in window.grid.cells if cell not in before]
    assert len(new) == 1
    return new[0]


def test_the_demo_opens_with_two_maps_side_by_side(make_window, qtbot):
    window = make_window(demo=True)
    with qtbot.waitSignal(window.demo_ready, timeout=90000):
        pass
    cells = window.grid.cells
    assert [cell.request.method for cell in cells] == ["gradcam", "local"]
    for cell in cells:
        assert cell.explanation.map.shape == (128, 128)
        assert cell.map_item.image.shape == (128, 128)
        assert cell.base_item.image.shape == (128, 128)
        assert cell.mask_item.image is not None  # the demo images have lesion masks
    assert cells[1].request.params["window"] == 16 and cells[1].request.params["stride"] == 8
    assert window.workspace.current.item.label in ("benign", "malignant")
    assert window.model_panel.prediction.topLevelItemCount() == 3
    assert window.dataset_panel.model.rowCount() == 60
    assert window.windowTitle() == f"Sensiscope {engine.app_version()}[*]" and not window.isWindowModified()  # [*]: Qt's modified mark
    assert not window.errors
    # Display settings: a shared, symmetric scale and another colour map apply to every map.
    window.grid.scale_box.setCurrentIndex(1)
    window.grid.colormap_box.setCurrentText("viridis")
    window.grid.opacity_slider.setValue(30)
    levels = [tuple(cell.colorbar.levels()) for cell in cells]
    assert levels[0] == levels[1] and levels[0][0] == -levels[0][1]
    assert cells[0].map_item.opacity() == 0.3
    # One colour bar for the whole grid in shared mode, covering every map; own scales bring the cells' bars back.
    bars = window.grid.visible_colour_bars()
    assert bars == [window.grid.shared_bar] and tuple(bars[0].levels()) == levels[0]
    low, high = bars[0].levels()
    assert all(low <= float(cell.explanation.map.min()) and float(cell.explanation.map.max()) <= high for cell in cells)
    window.grid.scale_box.setCurrentIndex(0)
    assert window.grid.visible_colour_bars() == [cell.colorbar for cell in cells] and not window.grid.shared_bar_host.isVisible()


def test_run_grad_cam_on_a_selected_image_with_a_chosen_layer(make_window, qtbot):
    window = make_window(demo=True, demo_analyses=False)
    wait_for_input(qtbot, window)
    scan = window.workspace.scan
    malignant = next(item for item in scan.items if item.label == "malignant")
    window.dataset_panel.select(malignant)
    qtbot.waitUntil(lambda: window.workspace.current.item == malignant, timeout=10000)
    window.model_panel.layer_chosen.emit("features.8")
    cell = run_from_panel(qtbot, window, "gradcam")
    qtbot.waitUntil(lambda: cell.explanation is not None, timeout=30000)
    assert cell.explanation.params.layer == "features.8"
    assert cell.explanation.map.shape == (128, 128)
    assert "Grad-CAM" in cell.title.text() and malignant.path.name in cell.title.text()
    assert not window.errors
    first = cell.explanation
    qtbot.mouseClick(cell.rerun_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: cell.explanation is not first and cell.state == "done", timeout=30000)
    qtbot.mouseClick(cell.remove_button, Qt.MouseButton.LeftButton)
    assert cell not in window.grid.cells and window.grid.placeholder.isVisibleTo(window.grid)


def test_a_long_pertmap_run_is_cancelled_quickly(make_window, qtbot):
    window = make_window(demo=True, demo_analyses=False)
    wait_for_input(qtbot, window)
    cell = run_from_panel(qtbot, window, "pertmap", steps=100000)
    job = window.cell_jobs[cell.cell_id]
    qtbot.waitUntil(lambda: job.state == "running" and job.fraction > 0, timeout=30000)
    assert window.analysis_panel.cancel_button.isEnabled()
    with qtbot.waitSignal(job.signals.cancelled, timeout=2000):
        qtbot.mouseClick(window.analysis_panel.cancel_button, Qt.MouseButton.LeftButton)
    assert cell.state == "cancelled" and cell.explanation is None
    assert not window.analysis_panel.cancel_button.isEnabled()
    # A short run of the same method draws its objective curve under the map, for a chosen class.
    window.analysis_panel.target_box.setCurrentIndex(3)  # 0 is "predicted class", then classes 0, 1, 2
    short = run_from_panel(qtbot, window, "pertmap", steps=12, record_every=3, batch_size=4)
    qtbot.waitUntil(lambda: short.state == "done", timeout=30000)
    assert short.explanation.target == 2 and "malignant" in short.title.text()
    assert short.curve_plot is not None and "objective" in short.toolTip()


def test_a_corrupt_weights_file_gives_a_message_and_the_window_stays_usable(make_window, qtbot, tmp_path):
    window = make_window(demo=True, demo_analyses=False)
    wait_for_input(qtbot, window)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(os.urandom(256))
    window.model_panel.open_file(str(bad))
    qtbot.waitUntil(lambda: bool(window.errors), timeout=20000)
    title, message = window.errors[-1]
    assert title == "Cannot load the model" and "bad.pt" in message
    assert message in window.statusBar().currentMessage()
    assert window.workspace.model.loaded.spec == "demo:ultrasound"
    cell = run_from_panel(qtbot, window, "gradcam")
    qtbot.waitUntil(lambda: cell.explanation is not None, timeout=30000)


def test_a_pickled_model_loads_only_after_the_user_trusts_it(make_window, qtbot, tmp_path, monkeypatch):
    window = make_window(demo=False)
    qtbot.waitUntil(lambda: window.workspace.info is not None, timeout=ENGINE_TIMEOUT_MS)
    path = tmp_path / "whole.pt"
    torch.save(tiny_cnn(seed=0), path)
    asked = []
    monkeypatch.setattr(ModelPanel, "confirm_trust", lambda self, name: asked.append(name) or True)
    window.model_panel.open_file(str(path))
    qtbot.waitUntil(lambda: window.workspace.model is not None, timeout=20000)
    assert asked == [str(path)]
    assert "trusted" in window.workspace.model.loaded.source
    assert window.model_panel.tree.topLevelItemCount() > 0


def test_opening_an_image_makes_it_the_current_input(make_window, qtbot, tmp_path):
    window = make_window(demo=False)
    qtbot.waitUntil(lambda: window.workspace.info is not None, timeout=ENGINE_TIMEOUT_MS)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 50, 3), np.uint8)).save(tmp_path / "photo.png")
    window.workspace.open_dataset(tmp_path / "photo.png")
    qtbot.waitUntil(lambda: window.dataset_panel.model.rowCount() == 1, timeout=10000)
    qtbot.waitUntil(lambda: 0 in window.dataset_panel.model.thumbnails, timeout=10000)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    window.workspace.open_dataset(tmp_path / "broken.png")
    qtbot.waitUntil(lambda: window.dataset_panel.model.rowCount() == 1 and window.dataset_panel.model.items[0].path.name == "broken.png", timeout=10000)
    window.model_panel.load_requested.emit("demo:ultrasound", "", "", False)
    qtbot.waitUntil(lambda: bool(window.errors), timeout=20000)
    assert "broken.png" in window.errors[-1][1]


def test_a_failure_asks_for_trust_by_its_type_never_by_its_words(make_window, qtbot, monkeypatch):
    window = make_window()
    asked, requests = [], []
    monkeypatch.setattr(ModelPanel, "confirm_trust", lambda self, name: asked.append(name) or True)
    failures = {
        "plain.pt": UserError("plain.pt: refused to load: the file contains Python objects, not only tensors"),
        "pickled.pt": UntrustedFile("pickled.pt", "pickled.pt: holds a whole model"),
    }

    def fake_load(spec, weights="", labels="", trust=False):
        requests.append((spec, trust))
        error = failures[spec] if not trust else UserError(f"{spec}: trusted, and still broken")

        def fail(progress, cancel):
            raise error

        return window.jobs.submit(fail, f"loading {spec}")

    monkeypatch.setattr(window.workspace, "load_model", fake_load)
    for spec in failures:
        with qtbot.waitSignal(window.jobs.job_ended, check_params_cb=lambda job, spec=spec: job.title == f"loading {spec}", timeout=10000):
            window._load_model(spec, "", "", False)
    with qtbot.waitSignal(window.jobs.job_ended, check_params_cb=lambda job: job.title == "loading pickled.pt", timeout=10000):
        pass  # the trusted second attempt, submitted when the first one failed
    # The engine's refusal text alone asks nothing; an UntrustedFile asks once and loads again with trust.
    assert asked == ["pickled.pt"] and requests == [("plain.pt", False), ("pickled.pt", False), ("pickled.pt", True)]
    assert window.model_panel.source_label.text() == "<b>Could not load pickled.pt</b>: pickled.pt: trusted, and still broken"


def test_the_main_thread_never_imports_torch():
    """The window's modules import no torch; the first job imports it, and matplotlib, on a worker thread."""
    code = textwrap.dedent(
        """
        import sys, threading
        import gui.app, gui.main_window
        assert "torch" not in sys.modules and "matplotlib" not in sys.modules, "imported with the window's modules"
        importers = {}

        class Spy:
            def find_spec(self, name, path, target=None):
                if name in ("torch", "matplotlib"):
                    importers.setdefault(name, threading.current_thread().name)
                return None

        sys.meta_path.insert(0, Spy())
        from PySide6.QtCore import QSettings, QTimer
        app = gui.app.create_app([])
        window = gui.main_window.MainWindow(settings=QSettings(sys.argv[1], QSettings.Format.IniFormat))
        window.workspace.engine_ready.connect(lambda info: app.exit(0))
        window.workspace.error.connect(lambda title, message: app.exit(3))
        QTimer.singleShot(120000, lambda: app.exit(2))
        code = app.exec()
        window.close()
        assert code == 0, code
        assert set(importers) == {"torch", "matplotlib"} and threading.main_thread().name not in importers.values(), importers
        """
    )
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    with tempfile.TemporaryDirectory() as folder:
        result = subprocess.run([sys.executable, "-c", code, f"{folder}/settings.ini"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr


def test_menus_and_about(make_window):
    window = make_window()
    assert [action.text() for action in window.menuBar().actions()] == ["&File", "&Edit", "&View", "&Help"]
    window.about_action.trigger()
    assert window.messages and window.messages[-1][0] == "About Sensiscope"


def test_screenshot_mode_writes_a_png(tmp_path):
    shot = tmp_path / "shot.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    result = subprocess.run([sys.executable, "main.py", "gui", "--demo", "--screenshot", str(shot)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=150)
    assert result.returncode == 0, result.stderr
    with Image.open(shot) as image:
        assert image.width >= 800 and image.height >= 600
