"""The image Sobol method in the GUI: listed with its form, and its convergence view drawn in the
map cell the way pertmap's objective curve is."""

from __future__ import annotations

import numpy as np
import torch

import engine
from gui.panels.analysis_panel import AnalysisPanel
from gui.plotting import configure_pyqtgraph
from gui.widgets.map_view import AnalysisRequest, MapCell
from tests.models import region_model


def test_sobol_is_listed_with_its_form(qtbot):
    panel = AnalysisPanel()
    qtbot.addWidget(panel)
    panel.set_methods(engine.available_methods(), preferred="sobol")
    assert panel.method() == "sobol" and "Sobol indices (sobol)" == panel.method_box.currentText()
    assert {"regions", "grid", "n", "index", "baseline"} <= set(panel.form.editors)
    assert panel.form.values()["n"] == 32 and panel.form.values()["grid"] == 8


def test_the_cell_draws_the_convergence_of_the_largest_regions(qtbot):
    configure_pyqtgraph()
    result = engine.explain(region_model(size=32, region=(8, 24, 8, 24)), torch.rand(3, 32, 32), "sobol", params={"grid": 4, "n": 16})
    cell = MapCell(1, AnalysisRequest("sobol", {"grid": 4, "n": 16}, None, "predicted", "a.png"))
    qtbot.addWidget(cell)
    cell.set_result(result, np.zeros((32, 32, 3), np.float32), None)
    assert cell.curve_plot is not None and "Sobol indices" in cell.title.text()
    curves = cell.curve_plot.listDataItems()
    assert len(curves) == 5  # the five regions with the largest ST
    x, y = curves[0].getData()
    np.testing.assert_allclose(x, np.log2([4, 8, 16]))
    assert y[-1] == float(result.extras["ST"].max())
    assert "convergence" in cell.toolTip() and "N = 4, 8, 16" in cell.toolTip()
    # A later result without a convergence view (pertmap's objective) reuses the same small plot.
    result.extras = {"objective": [3.0, 2.0, 1.5], "steps": [0, 1, 2]}
    cell.set_result(result, None, None)
    assert len(cell.curve_plot.listDataItems()) == 1 and "objective" in cell.toolTip()


def test_the_sobol_cell_outlines_its_regions_with_a_toggle(qtbot):
    from gui.widgets.map_grid import MapGrid

    configure_pyqtgraph()
    result = engine.explain(region_model(size=32, region=(8, 24, 8, 24)), torch.rand(3, 32, 32), "sobol", params={"grid": 4, "n": 8})
    grid = MapGrid()
    qtbot.addWidget(grid)
    cell = grid.add_cell(AnalysisRequest("sobol", {"grid": 4, "n": 8}, None, "predicted", "a.png"))
    cell.set_result(result, np.zeros((32, 32, 3), np.float32), None)
    grid.refresh_display()
    edges = cell.regions_item.image[..., 3] > 0
    # A 4 x 4 grid of 8-pixel regions: borders on rows and columns 8, 16 and 24, nowhere else.
    assert np.unique(result.extras["labels"]).size == 16
    expected = np.zeros((32, 32), bool)
    expected[[8, 16, 24], :] = True
    expected[:, [8, 16, 24]] = True
    assert np.array_equal(edges, expected)
    assert cell.regions_item.isVisible()
    grid.regions_box.setChecked(False)
    assert not cell.regions_item.isVisible()


def test_a_pertmap_cell_with_repeats_shows_its_stability(qtbot):
    from tests.engine.test_pertmap import REGION, _discriminative_region_model, _input

    configure_pyqtgraph()
    x = _input()
    params = {**REGION, "steps": 30, "repeats": 2}
    result = engine.explain(_discriminative_region_model(x), x, "pertmap", params=params, seed=0)
    stability = result.extras["stability"]
    assert stability is not None and 0.5 <= stability <= 1.0
    cell = MapCell(1, AnalysisRequest("pertmap", params, None, "predicted", "a.png"))
    qtbot.addWidget(cell)
    cell.set_result(result, None, None)
    assert f"stability (Spearman of 2 runs) {stability:.2f}" in cell.title.text()
