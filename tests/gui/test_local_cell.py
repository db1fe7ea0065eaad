"""A local-sensitivity cell says which forwards ran: incremental in its title, and the method's notes
(why a model ran densely) in the title's tooltip."""

from __future__ import annotations

import torch

import engine
from engine.models.architectures import build_architecture
from gui.plotting import configure_pyqtgraph
from gui.widgets.map_view import AnalysisRequest, MapCell


def _cell(qtbot, result, params):
    configure_pyqtgraph()
    cell = MapCell(1, AnalysisRequest("local", params, None, "predicted", "a.png"))
    qtbot.addWidget(cell)
    cell.set_result(result, None, None)
    return cell


def test_an_incremental_local_run_says_so_in_its_title(qtbot):
    model, x = build_architecture("sonocnn", seed=0, in_channels=1), torch.rand(1, 1, 48, 48)
    params = {"window": 6, "stride": 6}
    result = engine.explain(model, x, "local", target=0, params=params)
    assert result.extras["engine"] == "incremental"
    assert "· incremental" in _cell(qtbot, result, params).title.text()


def test_a_model_that_ran_densely_shows_why_in_the_tooltip(qtbot):
    model = torch.jit.script(build_architecture("sonocnn", seed=0, in_channels=1).eval())
    params = {"window": 6, "stride": 6}
    result = engine.explain(model, torch.rand(1, 1, 48, 48), "local", target=0, params=params)
    cell = _cell(qtbot, result, params)
    assert result.extras["engine"] == "dense" and "incremental" not in cell.title.text()
    assert "TorchScript" in cell.title.toolTip()
