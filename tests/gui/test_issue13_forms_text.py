"""Issue 13, items 10 and 12, driven as a user would: the parameter form in a Basic and a collapsible
Advanced group (values of both reach the request), no wheel changes without focus, one click on a
layer chooses it, maps refit after the grid re-lays out, and long texts (cell titles, the model
panel, the device box, the layer tree, the jobs dock, the progress bar) are cut with an ellipsis
with the full text in their tooltip."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch
from PySide6.QtCore import QPoint, QPointF, Qt
from PySide6.QtGui import QFontMetrics, QWheelEvent
from PySide6.QtWidgets import QApplication

import engine
from engine.core.params import build_params
from gui.document import AnalysisRequest, ModelInfo
from gui.panels.analysis_panel import AnalysisPanel
from gui.panels.model_panel import ModelPanel
from gui.widgets.map_grid import MapGrid
from gui.widgets.param_form import BASIC_FALLBACK, BASIC_PARAMS, ParamForm

LONG_MODEL = "a_model_with_a_very_long_name_that_cannot_fit_" * 4 + ".safetensors"
LONG_INPUT = "a_scan_from_a_folder_with_very_long_names_" * 4 + ".png"


def visible(form: ParamForm, name: str) -> bool:
    return form.editors[name].isVisibleTo(form)


def test_actmax_shows_its_basic_fields_advanced_opens_on_demand_and_both_reach_the_request(qtbot):
    panel = AnalysisPanel()
    qtbot.addWidget(panel)
    panel.set_methods(engine.available_methods(), preferred="actmax")
    panel.resize(360, 700)
    panel.show()
    form = panel.form
    basic = ["targets", "init", "steps", "lr", "objective"]
    assert [name for name in form.editors if form.is_basic(name)] == [n for n in form.editors if n in basic]
    assert all(visible(form, name) for name in basic)
    advanced = [name for name in form.editors if name not in basic]
    assert len(advanced) == 15 and not any(visible(form, name) for name in advanced)  # collapsed at first
    assert form.advanced_button.text() == "Advanced (15)"
    qtbot.mouseClick(form.advanced_button, Qt.MouseButton.LeftButton)
    assert all(visible(form, name) for name in advanced)
    # A value from each group reaches the run request.
    assert form.set_value("steps", 7) and form.set_value("tv", 0.25) and form.set_value("init", "noise")
    with qtbot.waitSignal(panel.run_requested) as blocker:
        qtbot.mouseClick(panel.run_button, Qt.MouseButton.LeftButton)
    method, values, _target = blocker.args
    built = build_params(engine.get_method("actmax").params_cls, values)
    assert method == "actmax" and (built.steps, built.tv, built.init) == (7, 0.25, "noise")
    # The open group is remembered per method: local starts collapsed, actmax comes back open.
    panel.select_method("local")
    assert [n for n in form.editors if form.is_basic(n)] == ["mode", "window", "stride", "baseline"]
    assert not visible(form, "blur_sigma") and not form.advanced_button.isChecked()
    panel.select_method("actmax")
    assert form.advanced_button.isChecked() and visible(form, "tv")


def test_every_method_gets_a_working_form_with_its_basic_fields_first(qtbot):
    form = ParamForm()
    qtbot.addWidget(form)
    form.show()
    for spec in engine.available_methods():
        names = [p.name for p in spec.params()]
        form.set_specs(spec.params(), method=spec.name)
        shown = [n for n in names if form.is_basic(n)]
        listed = [n for n in BASIC_PARAMS.get(spec.name, ()) if n in names]
        assert set(shown) == set(listed or names[:BASIC_FALLBACK]), spec.name
        assert form.advanced_button.isVisibleTo(form) == (len(shown) < len(names))
        assert build_params(spec.params_cls, form.values()) == spec.params_cls(), spec.name
    for method, names in BASIC_PARAMS.items():  # the table names real fields of registered methods
        assert set(names) <= {p.name for p in engine.get_method(method).params()}, method


def wheel(widget, up: bool = True) -> None:
    centre = QPointF(widget.rect().center())
    event = QWheelEvent(centre, widget.mapToGlobal(centre), QPoint(0, 0), QPoint(0, 120 if up else -120),
                        Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase, False)
    QApplication.sendEvent(widget, event)


def test_the_wheel_changes_a_value_only_once_the_editor_has_focus(qtbot):
    form = ParamForm()
    qtbot.addWidget(form)
    form.set_specs(engine.get_method("local").params(), method="local")
    form.show()
    qtbot.waitExposed(form)
    window, mode = form.editors["window"], form.editors["mode"]
    before = (window.value(), mode.currentIndex())
    wheel(window)
    wheel(mode, up=False)
    assert (window.value(), mode.currentIndex()) == before  # the form scrolls instead
    assert window.focusPolicy() == Qt.FocusPolicy.StrongFocus  # and the wheel alone does not focus it
    form.activateWindow()
    window.setFocus()
    qtbot.waitUntil(window.hasFocus, timeout=3000)
    wheel(window)
    assert window.value() == before[0] + window.singleStep()


class TinyNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features_with_a_long_descriptive_name_for_the_first_block = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.head(self.features_with_a_long_descriptive_name_for_the_first_block(x).mean((2, 3)))


def test_the_model_panel_cuts_long_names_keeps_them_in_tooltips_and_one_click_chooses_a_layer(qtbot):
    from engine.models.summary import conv_layers, summarize
    from gui.workspace import ModelState

    panel = ModelPanel()
    qtbot.addWidget(panel)
    device = SimpleNamespace(spec="cuda:0", label=lambda: "cuda:0 - NVIDIA H200 with 139 GiB of memory, compute capability 9.0, driver 550.54")
    panel.set_engine(SimpleNamespace(models=["demo:ultrasound"], devices=[device], default_device="cuda:0"))
    panel.resize(260, 600)
    panel.show()
    qtbot.waitExposed(panel)
    net = TinyNet()
    layers = summarize(net, (3, 8, 8))
    loaded = SimpleNamespace(module=net, num_classes=2, notes=[], spec=LONG_MODEL, source="weights from a file")
    panel.show_model(ModelState(loaded, layers, conv_layers(layers), (3, 8, 8)))
    label = panel.source_label
    assert "…" in label.text() and LONG_MODEL not in label.text()
    assert LONG_MODEL in label.toolTip() and "weights from a file" in label.toolTip()
    panel.resize(3000, 600)  # wide enough: the whole name shows
    qtbot.waitUntil(lambda: LONG_MODEL in label.text(), timeout=3000)
    panel.resize(260, 600)
    qtbot.waitUntil(lambda: LONG_MODEL not in label.text(), timeout=3000)
    # A failed load of a long file name: cut too, whole in the tooltip.
    panel.load_failed(LONG_MODEL, "", "", "cannot read the file", current="demo:ultrasound")
    assert "Could not load" in label.text() and "…" in label.text() and LONG_MODEL in label.toolTip()
    # The device box draws its long name cut, the whole name in its tooltip.
    box = panel.device_box
    qtbot.waitUntil(lambda: box.width() < 300, timeout=3000)
    assert "…" in box.displayed_text() and len(box.displayed_text()) < len(device.label())
    assert device.label() in box.toolTip()
    assert QFontMetrics(box.font()).horizontalAdvance(box.displayed_text()) < box.width()
    # The layer tree: every column's full text in its tooltip; one click on a feature-map layer chooses it.
    tree = panel.tree
    item = next(i for i in tree.findItems("*", Qt.MatchFlag.MatchWildcard | Qt.MatchFlag.MatchRecursive)
                if i.data(0, Qt.ItemDataRole.UserRole) == "features_with_a_long_descriptive_name_for_the_first_block")
    assert item.toolTip(1) == item.text(1) == "Conv2d" and item.toolTip(2) == item.text(2)
    assert item.data(0, Qt.ItemDataRole.UserRole) in item.toolTip(0)
    with qtbot.waitSignal(panel.layer_chosen) as blocker:
        qtbot.mouseClick(tree.viewport(), Qt.MouseButton.LeftButton, pos=tree.visualItemRect(item).topLeft() + QPoint(40, 6))
    assert blocker.args == ["features_with_a_long_descriptive_name_for_the_first_block"]


def explanation(seed: int = 0):
    values = np.random.default_rng(seed).random((32, 48)).astype(np.float32)
    return SimpleNamespace(map=values, target=1, target_probability=0.75, elapsed_s=1.5, device="cpu", extras={}, params={}, method="saliency")


def request(untrained: bool = False) -> AnalysisRequest:
    model = ModelInfo(LONG_MODEL, source="random init" if untrained else "weights", untrained=untrained)
    return AnalysisRequest("saliency", {"reduce": "max"}, None, "predicted class", LONG_INPUT, input_path="/data/" + LONG_INPUT, model=model)


def test_a_narrow_cell_cuts_its_title_keeps_the_untrained_mark_and_the_tooltip_has_everything(qtbot):
    grid = MapGrid()
    qtbot.addWidget(grid)
    grid.resize(330, 420)
    grid.show()
    qtbot.waitExposed(grid)
    cell = grid.add_cell(request(untrained=True))
    cell.set_result(explanation(), np.full((32, 48, 3), 0.5, np.float32), None)
    title = cell.title
    qtbot.waitUntil(lambda: 60 < title.width() < grid.width(), timeout=3000)  # as narrow as the grid's toolbar allows
    shown = title.displayed_lines()
    assert len(shown) == 2 and "…" in shown[1] and LONG_INPUT not in shown[1]
    assert shown[1].endswith("UNTRAINED")  # the mark is never cut
    metrics = QFontMetrics(title.font())
    assert all(metrics.horizontalAdvance(line) * 0.8 <= title.width() for line in shown)  # (the second line is small)
    full = title.text()
    assert LONG_INPUT in full and LONG_MODEL in full and "1.50 s on cpu" in full
    assert full in title.toolTip() and "random weights" in title.toolTip()
    # A wide cell shows everything, uncut.
    grid.resize(4000, 420)
    qtbot.waitUntil(lambda: "…" not in "".join(title.displayed_lines()), timeout=3000)
    assert title.displayed_lines()[1].startswith(LONG_INPUT)


def test_maps_fill_their_cells_again_after_the_grid_re_lays_out(qtbot):
    from gui.plotting import configure_pyqtgraph

    configure_pyqtgraph()  # row-major images, as in the app
    grid = MapGrid()
    qtbot.addWidget(grid)
    grid.resize(900, 700)
    grid.show()
    qtbot.waitExposed(grid)
    first = grid.add_cell(request())
    first.set_result(explanation(), np.full((32, 48, 3), 0.5, np.float32), None)
    for seed in (1, 2):
        cell = grid.add_cell(request())
        cell.set_result(explanation(seed), np.full((32, 48, 3), 0.5, np.float32), None)

    def fills() -> bool:
        (x0, x1), (y0, y1) = first.plot.getViewBox().viewRange()
        # Aspect locked: the image fills the cell when one side spans the view (never a small thumbnail).
        return (abs((x1 - x0) - 48) < 1.0 and y1 - y0 >= 31.5) or (abs((y1 - y0) - 32) < 1.0 and x1 - x0 >= 47.5)

    qtbot.waitUntil(fills, timeout=3000)
    grid.remove_cell(grid.cells[2])
    qtbot.waitUntil(fills, timeout=3000)


def test_long_progress_and_job_texts_stay_inside_with_the_whole_text_as_tooltip(qtbot):
    from gui.jobs import JobManager
    from gui.panels.jobs_panel import JobsPanel

    panel = AnalysisPanel()
    qtbot.addWidget(panel)
    panel.resize(240, 400)
    panel.show()
    qtbot.waitExposed(panel)
    message = "optimising the perturbation mask of " + LONG_INPUT
    panel.set_progress(0.5, message)
    bar = panel.progress
    assert bar.toolTip() == message and bar.text().endswith("(50%)") and "…" in bar.text()
    assert QFontMetrics(bar.font()).horizontalAdvance(bar.text()) < bar.contentsRect().width()
    jobs = JobManager()
    dock = JobsPanel(jobs)
    qtbot.addWidget(dock)
    try:
        job = jobs.submit(lambda progress, cancel: None, title=f"explain {LONG_INPUT}")
        qtbot.waitUntil(lambda: job.ended, timeout=10000)
        item = dock.tree.topLevelItem(0)
        assert item.text(0) == item.toolTip(0) == f"explain {LONG_INPUT}"
        assert dock.tree.textElideMode() == Qt.TextElideMode.ElideMiddle
    finally:
        assert jobs.shutdown(wait=True)


def test_an_open_advanced_group_is_open_again_in_the_next_window(make_window, qtbot):
    first = make_window()
    form = first.analysis_panel.form
    qtbot.waitUntil(lambda: bool(form.method) and not form.advanced_button.isHidden(), timeout=60_000)
    method = form.method
    assert not form.advanced_button.isChecked()
    form.advanced_button.setChecked(True)
    first.close()
    second = make_window()
    again = second.analysis_panel.form
    qtbot.waitUntil(lambda: again.method == method, timeout=60_000)
    assert again.advanced_button.isChecked() and again.advanced_box.isVisibleTo(second)
    again.advanced_button.setChecked(False)  # closed again: stays closed
    second.close()
    third = make_window()
    qtbot.waitUntil(lambda: third.analysis_panel.form.method == method, timeout=60_000)
    assert not third.analysis_panel.form.advanced_button.isChecked()
