"""The frame slider of the data panel: it moves through the frames of a multi-frame DICOM file (a cine
loop), each frame becoming the current input as if its thumbnail were clicked, and the window/level of
the file is shown; single-frame inputs have no slider."""

from __future__ import annotations

import numpy as np
from PIL import Image

from engine.io.images import scan_inputs
from gui.jobs import JobManager
from gui.panels.dataset_panel import DatasetPanel
from tests.engine.test_dicom import write_dicom
from tests.gui.conftest import ENGINE_TIMEOUT_MS

# Frame k is uniformly 70 + 10 k; the window (centre 100, width 80, LINEAR) maps v to
# clip((v - 99.5) / 79 + 0.5, 0, 1) (PS3.3 C.11.2.1.2.1), so every frame has its own grey.
VALUES = [70 + 10 * k for k in range(6)]


def _expected_grey(value: float) -> float:
    return float(np.clip((value - 99.5) / 79 + 0.5, 0, 1))


def _cine(path):
    frames = np.stack([np.full((24, 20), value, np.uint8) for value in VALUES])
    return write_dicom(path, frames, frames=len(VALUES), WindowCenter=100, WindowWidth=80, PixelSpacing=[0.2, 0.2])


def test_the_slider_makes_frame_3_the_current_input_with_its_pixels(make_window, qtbot, tmp_path):
    window = make_window(demo=False)
    qtbot.waitUntil(lambda: window.workspace.info is not None, timeout=ENGINE_TIMEOUT_MS)
    window.model_panel.load_requested.emit("demo:ultrasound", "", "", False)
    qtbot.waitUntil(lambda: window.workspace.model is not None, timeout=ENGINE_TIMEOUT_MS)
    path = _cine(tmp_path / "cine.dcm")
    window.workspace.open_dataset(path)
    panel = window.dataset_panel
    qtbot.waitUntil(lambda: window.workspace.current is not None and window.workspace.current.item.path == path, timeout=ENGINE_TIMEOUT_MS)
    assert window.workspace.current.item.name == "cine#000"
    assert panel.frame_slider.isVisible() and panel.frame_label.text() == "frame 1 / 6"
    assert (panel.frame_slider.minimum(), panel.frame_slider.maximum()) == (0, 5)
    assert panel.window_label.isVisible() and panel.window_label.text() == "Window centre 100, width 80"

    panel.frame_slider.setValue(3)
    qtbot.waitUntil(lambda: window.workspace.current.item.name == "cine#003", timeout=ENGINE_TIMEOUT_MS)
    state = window.workspace.current
    assert state.item.frame == 3 and panel.view.currentIndex().row() == 3
    assert panel.frame_label.text() == "frame 4 / 6"
    # The display image is frame 3's grey through the file's window, not any other frame's.
    np.testing.assert_allclose(state.image, _expected_grey(VALUES[3]), atol=1e-5)
    assert all(abs(_expected_grey(VALUES[3]) - _expected_grey(v)) > 0.05 for k, v in enumerate(VALUES) if k != 3)

    # Clicking a thumbnail (selecting its row) moves the slider too, without selecting twice.
    panel.select(panel.model.items[5])
    qtbot.waitUntil(lambda: window.workspace.current.item.name == "cine#005", timeout=ENGINE_TIMEOUT_MS)
    assert panel.frame_slider.value() == 5 and panel.frame_label.text() == "frame 6 / 6"
    np.testing.assert_allclose(window.workspace.current.image, _expected_grey(VALUES[5]), atol=1e-5)
    assert not window.errors


def test_single_frame_inputs_have_no_slider_and_show_their_window_and_rescale(qtbot, tmp_path):
    write_dicom(tmp_path / "ct.dcm", np.full((8, 8), 1000, np.uint16), RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400)
    write_dicom(tmp_path / "plain.dcm", np.zeros((8, 8), np.uint8))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "photo.png")
    _cine(tmp_path / "loop.dcm")
    jobs = JobManager()
    panel = DatasetPanel(jobs)
    qtbot.addWidget(panel)
    panel.show()
    scan = scan_inputs(tmp_path)
    panel.show_scan(scan)
    chosen = []
    panel.item_selected.connect(chosen.append)
    by_name = {item.name: item for item in scan.items}

    panel.select(by_name["ct.dcm"])
    assert panel.frame_slider.isHidden() and panel.frame_label.isHidden()
    assert panel.window_label.text() == "Window centre 40, width 400; rescale slope 2, intercept -1024"
    panel.select(by_name["plain.dcm"])
    assert panel.window_label.text() == "Window: full range"
    panel.select(by_name["photo.png"])
    assert panel.frame_slider.isHidden() and panel.window_label.isHidden()
    panel.select(by_name["loop#002"])
    assert not panel.frame_slider.isHidden() and panel.frame_slider.value() == 2
    panel.frame_slider.setValue(4)
    assert [item.name for item in chosen] == ["ct.dcm", "plain.dcm", "photo.png", "loop#002", "loop#004"]
    panel.show_scan(scan_inputs(tmp_path / "photo.png"))
    assert panel.frame_slider.isHidden() and panel.window_label.isHidden()
    assert jobs.shutdown(wait=True)


def test_each_frame_thumbnail_shows_its_own_frame(qtbot, tmp_path):
    from gui.panels.dataset_panel import make_thumbnail

    items = scan_inputs(_cine(tmp_path / "cine.dcm")).items
    greys = [make_thumbnail(item).pixelColor(5, 5).red() for item in items]
    expected = [_expected_grey(value) * 255 for value in VALUES]  # 8 bits: within one level
    assert all(abs(grey - want) <= 1 for grey, want in zip(greys, expected, strict=True)), (greys, expected)
    assert len(set(greys)) == len(VALUES)
