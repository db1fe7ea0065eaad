"""The Table tab: the Pima demo from opening to training an ensemble, Sobol indices with both
intervals, the other methods and their ranking table, input reduction, export, sessions that bring
the networks back, and cancel."""

from __future__ import annotations

import csv
import threading

import numpy as np
import pyqtgraph as pg
import torch
from PySide6.QtCore import Qt

from engine.core.progress import EpochLosses
from engine.core.vocab import ACTIVATIONS, MISSING_POLICIES, TABULAR_TRAINING
from gui.widgets.tabular_plots import SPREAD_COLOUR

PIMA_FEATURES = {"npreg", "glu", "bp", "skin", "bmi", "ped", "age"}
JOB_TIMEOUT_MS = 60000


def open_pima(qtbot, window):
    panel = window.tabular_panel
    with qtbot.waitSignal(panel.table_opened, timeout=JOB_TIMEOUT_MS):
        window.pima_action.trigger()
    return panel


def train(qtbot, panel, epochs: int, networks: int = 1):
    panel.epochs_spin.setValue(epochs)
    panel.networks_spin.setValue(networks)
    with qtbot.waitSignal(panel.trained, timeout=JOB_TIMEOUT_MS) as blocker:
        qtbot.mouseClick(panel.train_button, Qt.MouseButton.LeftButton)
    return blocker.args[0]


def test_pima_train_sobol_reduction_and_export(make_window, qtbot, tmp_path):
    window = make_window()
    panel = open_pima(qtbot, window)
    assert window.tabs.currentWidget() is panel and not window.model_dock.isVisible()
    assert panel.frame_model.rowCount() == 532 and panel.frame_model.columnCount() == 9
    assert panel.stats_model.rowCount() == 9 and panel.target() == "type"
    assert panel.stats_model.cell(7, 1) == "categorical" and "No, Yes" in panel.stats_model.cell(7, 7)
    assert panel.frame_model.headerData(7, Qt.Orientation.Horizontal) == "type (target)"

    panel.workers = 1  # the reduction's retrainings in this process (spawning workers is tested in the engine)
    trained = train(qtbot, panel, epochs=40, networks=2)
    text = panel.metrics_label.text()
    for name in ("Accuracy", "Balanced accuracy", "ROC AUC", "Confusion matrix", "Network 1 of 2"):
        assert name in text
    assert trained.metrics["accuracy"] > 0.6 and [t.config.seed for t in panel.networks] == [0, 1]
    assert len(panel.loss_plot.train_curve.getData()[0]) == trained.history["epochs_run"]
    # Every epoch's loss was seen live; each network of the ensemble starts its own curve.
    assert len(panel.losses) == panel.networks[-1].history["epochs_run"]

    panel.n_box.setCurrentText("256")
    with qtbot.waitSignal(panel.sobol_done, timeout=JOB_TIMEOUT_MS) as blocker:
        qtbot.mouseClick(panel.sobol_button, Qt.MouseButton.LeftButton)
    result = blocker.args[0]
    assert result.n == 256 and panel.tabs.currentWidget() is panel.sobol_view
    names = panel.sobol_view.tick_names()
    assert set(names) == PIMA_FEATURES and names == result.ranking("ST")
    assert len([item for item in panel.sobol_view.bars.items() if type(item).__name__ == "BarGraphItem"]) == 2
    assert not panel.sobol_view.s2_plot.isVisibleTo(panel.sobol_view)
    # The ensemble's mean, with the bootstrap interval and the spread across the two networks.
    ensemble = panel.ensembles["sobol"]
    assert len(ensemble.runs) == 2 and result.distribution == "empirical"
    np.testing.assert_allclose(result.ST, ensemble.mean)
    errors = [item for item in panel.sobol_view.bars.items() if type(item).__name__ == "ErrorBarItem"]
    assert len(errors) == 3  # S1 and ST bootstrap, ST spread
    spread = [item for item in errors if pg.mkPen(item.opts["pen"]).color().name() == SPREAD_COLOUR]
    assert len(spread) == 1
    np.testing.assert_allclose(spread[0].opts["top"], ensemble.spread[panel.sobol_view.order])
    assert "spread across networks" in " ".join(label.text for _, label in panel.sobol_view.bars.getPlotItem().legend.items)

    panel.seeds_spin.setValue(1)
    panel.reduce_epochs_spin.setValue(15)
    with qtbot.waitSignal(panel.reduction_done, timeout=JOB_TIMEOUT_MS) as blocker:
        qtbot.mouseClick(panel.reduce_button, Qt.MouseButton.LeftButton)
        assert "Input reduction running" in panel.reduction_view.summary.text()  # never "run a Sobol analysis first"
    reduction = blocker.args[0]
    view = panel.reduction_view
    assert list(view.curves["ranked"][0]) == list(range(1, 8)) and list(view.curves["random"][0]) == list(range(1, 7))
    assert len(panel.losses) == trained.history["epochs_run"]  # the reduction's trainings leave the loss curve alone
    assert f"Recommended k = {reduction.recommended_k}" in view.summary.text()
    assert reduction.ranking == result.ranking("ST")
    table = view.table  # ranked k = 7..1, then random k = 6..1; the recommended row marked
    assert table.rowCount() == 7 + 6 and table.columnCount() == 2 + 2 * len(reduction.rows[0].metrics) + 1
    assert [table.row_texts(r)[:2] for r in (0, 6, 7, 12)] == [["7", "ranked"], ["1", "ranked"], ["6", "random"], ["1", "random"]]
    marked = table.recommended_row
    assert table.row_texts(marked)[:2] == [str(reduction.recommended_k), "ranked"] and table.item(marked, 0).font().bold()
    assert table.item(marked, 0).background().color().name() == "#d9f0d9" and not table.item((marked + 1) % 13, 0).font().bold()

    job = window.session.export_tables(tmp_path / "tables")
    with qtbot.waitSignal(job.signals.finished, timeout=JOB_TIMEOUT_MS) as blocker:
        pass
    files = blocker.args[0]
    with open(files["indices_csv"], newline="") as handle:
        rows = list(csv.reader(handle))
    assert [row[0] for row in rows[1:]] == names
    assert (tmp_path / "tables" / "reduction.csv").is_file() and (tmp_path / "tables" / "tabular_model.safetensors").is_file()
    assert not window.errors

    # A saved session brings the Sobol charts and the reduction back in a fresh window, without recomputing.
    assert window.session.save(tmp_path / "tables.sensiscope.zip")
    fresh = make_window()
    restored = fresh.tabular_panel
    with qtbot.waitSignals([fresh.session_restored, restored.table_opened], timeout=JOB_TIMEOUT_MS):
        fresh.session.open(tmp_path / "tables.sensiscope.zip")
    assert restored.target() == "type" and restored.job is None
    assert restored.sobol_view.tick_names() == names and bar_heights(restored.sobol_view) == bar_heights(panel.sobol_view)
    # The networks, their loss curve and metrics come back, so an analysis runs again at once.
    assert [t.config.seed for t in restored.networks] == [0, 1] and restored.sobol_button.isEnabled()
    assert restored.metrics_label.text() == panel.metrics_label.text()
    assert list(restored.loss_plot.train_curve.yData) == list(panel.loss_plot.train_curve.yData)
    x = torch.as_tensor(restored.model_result.data.x[:10])
    torch.testing.assert_close(restored.networks[1].model(x), panel.networks[1].model(x))
    np.testing.assert_allclose(restored.ensembles["sobol"].spread, ensemble.spread)
    assert restored.sobol.n == 256 and restored.reduction.to_dict() == reduction.to_dict()
    assert restored.reduction_view.table.rowCount() == 13 and restored.reduction_view.table.recommended_row == marked
    assert list(restored.reduction_view.curves["ranked"][1]) == list(view.curves["ranked"][1])
    assert not fresh.errors
    restored.n_box.setCurrentText("64")
    with qtbot.waitSignal(restored.sobol_done, timeout=JOB_TIMEOUT_MS):
        qtbot.mouseClick(restored.sobol_button, Qt.MouseButton.LeftButton)
    assert restored.sobol.n == 64 and not fresh.errors


def test_every_method_and_the_ranking_table(make_window, qtbot):
    window = make_window()
    panel = open_pima(qtbot, window)
    train(qtbot, panel, epochs=20, networks=2)
    panel.method_box.setCurrentText("all")
    panel.n_box.setCurrentText("64")
    panel.s2_box.setChecked(True)
    with qtbot.waitSignal(panel.methods_done, timeout=JOB_TIMEOUT_MS) as blocker:
        qtbot.mouseClick(panel.sobol_button, Qt.MouseButton.LeftButton)
    results = blocker.args[0]
    view = panel.methods_view
    assert [e.method for e in results] == ["sobol", "morris", "fast", "rbd_fast", "delta", "pawn", "dgsm"]
    assert panel.tabs.currentWidget() is view and view.table.columnCount() == 7
    table = view.rank_texts()
    assert set(table) == PIMA_FEATURES | {"networks W"}
    for column, ensemble in enumerate(results):  # each column is that method's ranking by its ensemble mean
        ranks = {name: float(table[name][column]) for name in PIMA_FEATURES}
        assert sorted(ranks, key=ranks.get)[0] == ensemble.ranking()[0]
        assert table["networks W"][column] == f"{ensemble.kendall_w:.2f}"
    assert "across the 7 methods" in view.summary.text()
    view.method_box.setCurrentText("delta")
    assert "delta" in view.bars.getPlotItem().titleLabel.text
    # The S2 heat map fills its plot, names every cell on hover and keeps the legend off the convergence points.
    sobol_view = panel.sobol_view
    first, second = sobol_view.names[sobol_view.order[0]], sobol_view.names[sobol_view.order[1]]
    assert sobol_view.s2_text(0, 1) == f"S2({first}, {second}) = {sobol_view.s2_matrix[0, 1]:.4f}"
    assert sobol_view.s2_text(0, 0).endswith("has no S2") and sobol_view.s2_text(9, 0) == ""
    assert not sobol_view.s2_plot.getPlotItem().vb.state["aspectLocked"]
    assert sobol_view.convergence.getPlotItem().legend is None and first in sobol_view.convergence_legend.text()
    assert not window.errors


def bar_heights(sobol_view) -> list[list[float]]:
    return [[float(h) for h in item.opts["height"]] for item in sobol_view.bars.items() if type(item).__name__ == "BarGraphItem"]


def test_training_and_sobol_can_be_cancelled(make_window, qtbot):
    window = make_window()
    panel = open_pima(qtbot, window)
    panel.epochs_spin.setValue(5000)
    panel.patience_spin.setValue(5000)
    qtbot.mouseClick(panel.train_button, Qt.MouseButton.LeftButton)
    job = panel.job
    qtbot.waitUntil(lambda: len(panel.losses) >= 3 and job.state == "running", timeout=JOB_TIMEOUT_MS)
    assert panel.cancel_button.isEnabled() and not panel.sobol_button.isEnabled()
    with qtbot.waitSignal(job.signals.cancelled, timeout=3000):
        qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    assert panel.model_result is None and "cancelled" in panel.progress.format()
    assert not panel.cancel_button.isEnabled() and panel.train_button.isEnabled()

    train(qtbot, panel, epochs=5)
    panel.n_box.setCurrentText("65536")
    panel.s2_box.setChecked(True)
    qtbot.mouseClick(panel.sobol_button, Qt.MouseButton.LeftButton)
    job = panel.job
    qtbot.waitUntil(lambda: job.state == "running", timeout=JOB_TIMEOUT_MS)
    with qtbot.waitSignal(job.signals.cancelled, timeout=20000):
        qtbot.mouseClick(panel.cancel_button, Qt.MouseButton.LeftButton)
    assert panel.sobol is None and panel.sobol_view.tick_names() == []
    assert not window.errors


def curve_length(curve) -> int:
    points = curve.getData()[1]
    return 0 if points is None else len(points)


def test_the_loss_curve_is_drawn_from_epoch_payloads_never_from_text(make_window, qtbot, monkeypatch):
    import engine.app.tabular
    import engine.tabular

    real_training = engine.tabular.train_tabular
    sent = [EpochLosses(epoch, 6, 1.0 / epoch, 1.5 / epoch) for epoch in range(1, 6)]
    release = threading.Event()

    def reporting_training(data, config, progress=None, cancel=None):
        progress(0.01, "epoch 1: loss 9.0000, validation 9.0000")  # the engine's old wording, without a payload
        for epoch in sent:
            progress(epoch.epoch / 6, f"epoch {epoch.epoch}", epoch)
        release.wait(60)  # until the test has seen the live curve
        return real_training(data, config, cancel=cancel)

    monkeypatch.setattr(engine.app.tabular, "train_tabular", reporting_training)
    window = make_window()
    panel = open_pima(qtbot, window)
    panel.epochs_spin.setValue(6)
    try:
        qtbot.mouseClick(panel.train_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: curve_length(panel.loss_plot.train_curve) == len(sent), timeout=JOB_TIMEOUT_MS)
        assert panel.losses == sent  # the text report added nothing
        assert list(panel.loss_plot.train_curve.yData) == [epoch.loss for epoch in sent]
        assert list(panel.loss_plot.val_curve.yData) == [epoch.validation for epoch in sent]
        with qtbot.waitSignal(panel.trained, timeout=JOB_TIMEOUT_MS) as blocker:
            release.set()
    finally:
        release.set()
    history = blocker.args[0].history  # the finished training's own record replaces the live curve
    assert np.allclose(panel.loss_plot.train_curve.yData, history["train_loss"]) and not window.errors


def test_the_forms_offer_the_engine_vocabulary_and_defaults(make_window):
    panel = make_window().tabular_panel
    assert [panel.missing_box.itemText(i) for i in range(panel.missing_box.count())] == list(MISSING_POLICIES)
    assert [panel.activation_box.itemText(i) for i in range(panel.activation_box.count())] == list(ACTIVATIONS)
    settings = panel.train_settings()
    for name in ("hidden", "activation", "epochs", "lr", "dropout", "patience", "seed"):
        assert settings[name] == TABULAR_TRAINING[name], name
    assert panel.reduce_epochs_spin.value() == TABULAR_TRAINING["epochs"]
