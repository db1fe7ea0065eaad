"""Activation maximisation shows what it made (issue 13, item 13): the optimised image of every target
in the cell, a readable objective plot, init=input by default in the window, the optimised image
itself (not a meaningless change map) when it starts from noise; and its files from the CLI writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

import engine
from engine.io.images import InputItem
from engine.io.writers import write_optimised_images
from gui.panels.analysis_panel import AnalysisPanel
from gui.plotting import configure_pyqtgraph
from gui.widgets.map_view import AnalysisRequest, MapCell
from tests.models import tiny_cnn


def _actmax(init: str):
    model = tiny_cnn(seed=0).eval()
    return model, engine.explain(model, torch.rand(3, 16, 16), "actmax", 0, {"steps": 6, "targets": "0,1", "init": init, "mean": "0.5", "std": "0.25"})


def test_the_window_starts_actmax_from_the_input(qtbot):
    panel = AnalysisPanel()
    qtbot.addWidget(panel)
    panel.set_methods(engine.available_methods(), preferred="actmax")
    assert panel.form.values()["init"] == "input"
    panel.form.set_value("init", "noise")
    panel.reset_button.click()
    assert panel.form.values()["init"] == "input"


def test_the_cell_shows_the_optimised_images_and_from_noise_no_change_map(qtbot):
    configure_pyqtgraph()
    _, result = _actmax("input")
    cell = MapCell(1, AnalysisRequest("actmax", {}, 0, "class 0", "a.png"))
    qtbot.addWidget(cell)
    cell.set_result(result, np.zeros((16, 16, 3), np.float32), None, lambda index: f"class {index}")
    strip = cell.optimised_item.image
    assert strip.shape[0] == 16 and strip.shape[1] > 32  # two 16-pixel images and a gap
    np.testing.assert_allclose(strip[:, :16], np.clip(result.extras["images"][0], 0, 1), atol=1e-6)
    assert "class 0, class 1" in cell.optimised_plot.titleLabel.text
    assert len(cell.curve_plot.listDataItems()) == 2 and cell.curve_plot.minimumHeight() >= 110
    assert cell.has_map() and cell.map_item.image is not None
    _, noisy = _actmax("noise")
    cell.set_result(noisy, np.zeros((16, 16, 3), np.float32), None)
    assert not cell.has_map() and cell.map_item.image is None and not cell.colorbar.isVisible()
    np.testing.assert_allclose(cell.base_item.image, np.clip(noisy.extras["images"][0], 0, 1), atol=1e-6)
    assert "init=noise" in cell.footer.text()


def test_the_optimised_images_are_written_in_model_input_space_and_as_png(tmp_path):
    model, result = _actmax("noise")
    item = InputItem(tmp_path / "scan.png", Path("scan.png"))
    files = write_optimised_images(result, tmp_path / "out", item)
    assert [f.rsplit("/", 1)[-1] for f in files] == ["scan.actmax.optimised0.npy", "scan.actmax.optimised0.png", "scan.actmax.optimised1.npy", "scan.actmax.optimised1.png"]
    for index, unit in enumerate(result.extras["targets"]):
        saved = np.load(files[2 * index])
        assert saved.shape == (3, 16, 16)
        with torch.no_grad():  # fed to the model as it is, it scores what the optimisation reached
            score = float(model(torch.from_numpy(saved)[None])[0, unit])
        reached = float(np.asarray(result.extras["final_scores"])[index, index])  # image k scored on unit k
        assert abs(score - reached) < 1e-4 * max(1.0, abs(reached))
    assert write_optimised_images(engine.explain(model, torch.rand(3, 16, 16), "saliency"), tmp_path / "out", item) == []
