"""The main window opens with its menus, shows images and survives bad files."""

from __future__ import annotations

import numpy as np
from PIL import Image

import engine


def test_window_has_menus_and_shows_the_device(make_window):
    window = make_window()
    titles = [action.text() for action in window.menuBar().actions()]
    assert titles == ["&File", "&View", "&Help"]
    assert window.windowTitle() == f"Sensiscope {engine.app_version()}"
    assert "cpu" in window.device_label.text() or "cuda" in window.device_label.text()


def test_about_names_the_version(make_window):
    window = make_window()
    window.about_action.trigger()
    assert window.messages and engine.app_version() in window.messages[-1][1]


def test_opening_an_image_shows_it(make_window, tmp_path):
    window = make_window()
    pixels = np.zeros((20, 30, 3), np.uint8)
    pixels[5, 7] = (255, 0, 0)
    Image.fromarray(pixels).save(tmp_path / "red.png")
    assert window.open_image(tmp_path / "red.png")
    shown = window.image_view.getImageItem().image
    assert shown.shape == (20, 30, 3)
    assert shown[5, 7].tolist() == [1.0, 0.0, 0.0]
    assert "30 x 20" in window.statusBar().currentMessage()


def test_a_corrupt_image_gives_a_message_and_keeps_the_current_one(make_window, tmp_path):
    window = make_window()
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(tmp_path / "ok.png")
    assert window.open_image(tmp_path / "ok.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    assert not window.open_image(tmp_path / "broken.png")
    assert window.messages[-1][0] == "Cannot open image"
    assert "broken.png" in window.messages[-1][1]
    assert window.current_image.shape == (8, 8, 1)
