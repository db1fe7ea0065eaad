"""Scales and figure export (issue 13, items 9 and 11): a normalised shared scale beside the absolute
one, colour bars with a label and at most six ticks, no bar on a cell without a map, a per-cell colour
map, and figures (PNG at a chosen DPI, SVG, PDF) with the parameters JSON beside them."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from PySide6.QtWidgets import QFileDialog, QInputDialog

from gui.colours import nice_ticks
from gui.widgets.map_grid import NORMALISED, SHARED


def test_nice_ticks_are_round_and_at_most_six():
    assert nice_ticks(0.0, 1.0) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(-8.0, 8.0) == [-5.0, 0.0, 5.0]
    assert nice_ticks(-3.3, 7.9) == [-2.5, 0.0, 2.5, 5.0, 7.5]
    assert nice_ticks(0.0, 0.037) == [0.0, 0.01, 0.02, 0.03]
    for low, high in ((-3.3, 7.9), (0.001, 0.0013), (12.0, 1e6), (-1e-7, 1e-7)):
        ticks = nice_ticks(low, high)
        assert 2 <= len(ticks) <= 6 and all(low <= t <= high for t in ticks)


def test_scales_bars_cell_colour_maps_and_figure_export(make_window, qtbot, tmp_path, monkeypatch):
    window = make_window(demo=True)
    with qtbot.waitSignal(window.demo_ready, timeout=90000):
        pass
    grid = window.grid
    cells = grid.cells
    for cell in cells:
        ticks = cell.colorbar.axis._tickLevels[0]
        assert 2 <= len(ticks) <= 6 and cell.colorbar.axis.labelText.endswith("value")
        assert "x0" not in cell.colorbar.axis.labelString()  # no SI factor beside ticks that show the values
    # Normalised shared scale: each map divided by its largest |value|, one bar from 0 (or -1) to 1.
    grid.scale_box.setCurrentIndex(NORMALISED)
    assert grid.shared_bar_host.isVisible() and tuple(grid.shared_bar.levels())[1] == 1.0
    for cell in cells:
        shown = cell.map_item.image
        assert np.isclose(float(np.abs(shown).max()), 1.0) and not cell.colorbar.isVisible()
        np.testing.assert_allclose(shown, cell.explanation.map / np.abs(cell.explanation.map).max(), rtol=1e-6)
    assert "max |map|" in grid.shared_bar.axis.labelText
    grid.scale_box.setCurrentIndex(SHARED)
    np.testing.assert_array_equal(cells[0].map_item.image, cells[0].explanation.map)
    grid.scale_box.setCurrentIndex(0)
    # One cell in its own colour map, from its right-click menu.
    menu = grid.cell_menu(cells[1])
    colour_menu = next(a.menu() for a in menu.actions() if a.menu() is not None)
    next(a for a in colour_menu.actions() if a.text() == "magma").trigger()
    assert cells[1].colormap_choice == "magma" and cells[0].colormap_choice == ""
    # Export one map: the default name comes from its input and method; PNG at the chosen DPI, JSON beside.
    proposed = []

    def save_name(parent, caption, name, filters):
        proposed.append(name)
        return str(tmp_path / name), ""

    monkeypatch.setattr(QFileDialog, "getSaveFileName", save_name)
    monkeypatch.setattr(QInputDialog, "getInt", lambda *args, **kwargs: (100, True))
    export = next(a for a in menu.actions() if a.text().startswith("Export"))
    export.trigger()
    stem = window.workspace.current.item.path.stem
    assert proposed == [f"{stem}_local.png"]
    with Image.open(tmp_path / proposed[0]) as picture:
        width = picture.width
        assert round(picture.info["dpi"][0]) == 100
    record = json.loads((tmp_path / f"{stem}_local.json").read_text())
    assert record["dpi"] == 100 and record["maps"][0]["method"] == "local" and record["maps"][0]["params"]["window"] == 16
    assert record["maps"][0]["model"]["spec"] == "demo:ultrasound" and "versions" in record
    assert window.session.export_cell(cells[1], tmp_path / "twice.png", dpi=200)
    with Image.open(tmp_path / "twice.png") as picture:
        assert abs(picture.width - 2 * width) <= 4  # the figure's size is in inches: twice the DPI, twice the pixels
    # The comparison as SVG and PDF, with a colour bar label per map and the mask outline.
    assert window.session.export_comparison(tmp_path / "both.svg")
    svg = (tmp_path / "both.svg").read_text()
    assert "Grad-CAM value" in svg and "Local sensitivity value" in svg
    assert window.session.export_comparison(tmp_path / "both.pdf")
    assert (tmp_path / "both.pdf").read_bytes().startswith(b"%PDF")
    assert len(json.loads((tmp_path / "both.json").read_text())["maps"]) == 2
    # The HTML report: one file, every map as an embedded figure with its parameters, and the versions.
    assert window.session.export_report(tmp_path / "report.html")
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 2 and "Local sensitivity" in html and "window=16" in html
    assert "demo:ultrasound" in html and "Versions" in html and "torch" in html
