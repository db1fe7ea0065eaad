"""Colour maps: the views show matplotlib's tables by the names the engine renders PNGs with."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps

from engine.core.explanation import Explanation
from engine.core.vocab import COLORMAPS, DIVERGING_COLORMAP, SEQUENTIAL_COLORMAP
from engine.io.render import overlay
from gui import colours
from gui.widgets.map_grid import MapGrid
from gui.widgets.map_view import AnalysisRequest, MapCell


def sampled(name: str) -> np.ndarray:
    """matplotlib's own 256 colours of a map, as 0-255 RGB."""
    return np.round(colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3] * 255)


def cell_showing(qtbot, saliency: np.ndarray) -> MapCell:
    cell = MapCell(1, AnalysisRequest("local", {}, None, "predicted", "a.png"))
    qtbot.addWidget(cell)
    explanation = Explanation(map=saliency, method="local", params={}, target=0, predicted=0, probability=0.9, device="cpu", elapsed_s=0.1)
    cell.set_result(explanation, None, None)
    return cell


@pytest.mark.parametrize("name", ["inferno", "viridis", "turbo", "RdBu_r", "coolwarm", "gray"])
def test_a_maps_lookup_table_is_matplotlibs(qtbot, name):
    cell = cell_showing(qtbot, np.linspace(0.0, 1.0, 64, dtype=np.float32).reshape(8, 8))
    cell.apply_display(name, 0.6, None, True)
    assert np.array_equal(cell.map_item.lut[:, :3], sampled(name))
    assert np.array_equal(colours.colormap(name).getLookupTable(nPts=256, alpha=False), sampled(name))


def test_auto_picks_by_sign_as_the_engine_does(qtbot):
    ramp = np.linspace(0.0, 1.0, 256, dtype=np.float32)[None]
    one_signed = cell_showing(qtbot, ramp)
    one_signed.apply_display("auto", 0.6, None, True)
    assert np.array_equal(one_signed.map_item.lut[:, :3], sampled(SEQUENTIAL_COLORMAP))
    # The exported PNG (alpha 1: the map alone) has, pixel for pixel, the colours of the view's table.
    assert np.array_equal(overlay(np.zeros((1, 256, 3)), ramp, alpha=1.0)[0], one_signed.map_item.lut[:, :3])
    signed = cell_showing(qtbot, np.array([[-1.0, 0.5], [0.25, 1.0]], np.float32))
    signed.apply_display("auto", 0.6, None, True)
    assert np.array_equal(signed.map_item.lut[:, :3], sampled(DIVERGING_COLORMAP))


def test_the_choices_are_the_vocabulary_and_old_names_map_to_the_nearest(qtbot):
    grid = MapGrid()
    qtbot.addWidget(grid)
    assert [grid.colormap_box.itemText(i) for i in range(grid.colormap_box.count())] == list(COLORMAPS)
    for old, new in (("CET-D1", "RdBu_r"), ("CET-L1", "gray"), ("viridis", "viridis")):
        grid.colormap_box.setCurrentText(old)
        assert grid.colormap_box.currentText() == new
    assert colours.resolve("CET-D1", signed=False) == "RdBu_r" and colours.resolve("auto", signed=True) == DIVERGING_COLORMAP


def test_an_old_session_with_a_colorcet_name_opens_with_its_nearest_map(make_window):
    window = make_window()
    from gui.session_file import parse_session

    old = {"format": "sensiscope-session", "version": 1, "display": {"colormap": "CET-L1", "opacity": 40}}
    window.session._restore(parse_session(old, {}, set()))
    assert window.grid.colormap_box.currentText() == "gray" and window.grid.opacity_slider.value() == 40
