"""Your own model in the window ("your own model" issue, item GUI), driven as a user would: a state
dict opened for the architecture chosen under Model, one that does not fit (one line, the loaded
model stays shown), a class of your own Python file through Open Python class..., and
`main.py gui IMAGE WEIGHTS` on the command line."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from gui.app import parse_args
from gui.panels.model_panel import ModelPanel
from gui.session_file import parse_session
from tests.gui.conftest import ENGINE_TIMEOUT_MS
from tests.gui.test_main_window import run_from_panel
from tests.models import tiny_cnn

NET = textwrap.dedent(
    """
    from pathlib import Path

    from torch import nn

    Path(__file__).with_name("net-ran").touch()  # proof that the file ran (it must not before the user confirms)


    class DigitNet(nn.Module):
        '''Grey-scale 1 x 32 x 32 digits.'''

        def __init__(self, num_classes=10, width=4):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
            self.head = nn.Linear(width * 16 * 16, num_classes)  # only 32 x 32 inputs fit

        def forward(self, x):
            return self.head(self.body(x).flatten(1))


    class Helper:  # not a model: not offered
        pass
    """
)


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory):
    """A resnet18 state dict with three classes, as .pth and as .safetensors (no sidecar)."""
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("resnet")
    state = torchvision.models.resnet18(num_classes=3).state_dict()
    torch.save(state, folder / "scans.pth")
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "scans.safetensors"))
    return folder


@pytest.fixture
def net_file(tmp_path):
    """net.py (DigitNet with 4 classes, width 4) and its state dict digits.pth."""
    path = tmp_path / "net.py"
    path.write_text(NET)
    namespace: dict = {"__file__": str(tmp_path / "scratch.py")}
    exec(compile(NET, str(path), "exec"), namespace)  # the test's own copy of the class, to save weights
    torch.save(namespace["DigitNet"](num_classes=4).state_dict(), tmp_path / "digits.pth")
    (tmp_path / "net-ran").unlink(missing_ok=True)
    return path


def _engine_window(make_window, qtbot):
    window = make_window()
    qtbot.waitUntil(lambda: window.workspace.info is not None, timeout=ENGINE_TIMEOUT_MS)
    return window


def _layer_names(panel) -> set[str]:
    return {item.data(0, Qt.ItemDataRole.UserRole) for item in panel.tree.findItems("*", Qt.MatchFlag.MatchWildcard | Qt.MatchFlag.MatchRecursive)}


def test_a_state_dict_opens_for_the_architecture_chosen_under_model(make_window, qtbot, resnet_weights, monkeypatch):
    window = _engine_window(make_window, qtbot)
    panel = window.model_panel
    panel.model_box.setCurrentText("resnet18")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(resnet_weights / "scans.pth"), ""))
    with qtbot.waitSignal(window.workspace.model_loaded, timeout=ENGINE_TIMEOUT_MS):
        qtbot.mouseClick(panel.open_button, Qt.MouseButton.LeftButton)
    model = window.workspace.model
    assert not window.errors
    assert model.loaded.num_classes == 3 and "with weights from scans.pth" in model.loaded.source
    assert model.ref["spec"] == "resnet18" and model.ref["weights"] == str(resnet_weights / "scans.pth")
    assert panel.model_box.currentText() == "resnet18 + scans.pth" and "layer4" in _layer_names(panel)
    assert "state dict" in panel.open_button.toolTip() and "trying" in panel.open_button.toolTip()


def test_weights_that_do_not_fit_give_one_line_and_the_loaded_model_stays_shown(make_window, qtbot, resnet_weights, net_file):
    window = _engine_window(make_window, qtbot)
    panel = window.model_panel
    panel.model_box.setCurrentText("resnet18")
    with qtbot.waitSignal(window.workspace.model_loaded, timeout=ENGINE_TIMEOUT_MS):
        panel.open_file(str(resnet_weights / "scans.pth"))
    loaded = window.workspace.model
    # Another architecture chosen, and weights of another network opened for it.
    panel.model_box.setCurrentText("resnet34")
    with qtbot.waitSignal(window.jobs.job_ended, timeout=ENGINE_TIMEOUT_MS):
        panel.open_file(str(net_file.parent / "digits.pth"))
    title, message = window.errors[-1]
    assert title == "Cannot load the model"
    assert "digits.pth do not fit resnet34" in message and "\n" not in message
    assert not any(word in message for word in ("Traceback", "RuntimeError", "state_dict", "--"))
    assert window.workspace.model is loaded  # still the model in use ...
    assert panel.model_box.currentText() == "resnet18 + scans.pth"  # ... and the one the Model box shows
    assert "Still using <b>resnet18 + scans.pth</b>" in panel.source_label.text()
    # A cancelled load also leaves the box on the loaded model.
    panel.model_box.setCurrentText("resnet50")
    with qtbot.waitSignal(window.jobs.job_ended, timeout=ENGINE_TIMEOUT_MS):
        qtbot.mouseClick(panel.load_button, Qt.MouseButton.LeftButton)
        window.jobs.cancel(next(job for job in window.jobs.running() if job.key == "model"))
    assert window.workspace.model is loaded and panel.model_box.currentText() == "resnet18 + scans.pth"
    assert not panel.busy.isVisible() and "resnet18 + scans.pth" in panel.source_label.text()


def test_open_python_class_lists_the_classes_asks_and_loads_the_model(make_window, qtbot, net_file, monkeypatch):
    window = _engine_window(make_window, qtbot)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40), np.uint8)).save(net_file.parent / "digit.png")
    window.workspace.open_dataset(net_file.parent / "digit.png")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(net_file), ""))
    window.open_class_action.trigger()
    dialog = window.class_dialog
    assert dialog is not None and dialog.isVisible()
    assert [dialog.class_box.itemText(i) for i in range(dialog.class_box.count())] == ["DigitNet"]  # read, not run
    assert "num_classes=10, width=4" in dialog.signature_label.text()
    assert "Loading runs net.py" in dialog.warning.text() and "Run net.py and load" == dialog.ok_button.text()
    assert not (net_file.parent / "net-ran").exists()
    dialog.weights_edit.setText(str(net_file.parent / "digits.pth"))
    dialog.args_edit.setText("{num_classes: 4}")
    assert not dialog.ok_button.isEnabled() and "not valid JSON" in dialog.error_label.text()
    dialog.args_edit.setText('{"num_classes": 4}')
    assert dialog.ok_button.isEnabled() and not dialog.error_label.isVisibleTo(dialog)
    with qtbot.waitSignal(window.workspace.model_loaded, timeout=ENGINE_TIMEOUT_MS):
        qtbot.mouseClick(dialog.ok_button, Qt.MouseButton.LeftButton)
    assert (net_file.parent / "net-ran").exists()
    model = window.workspace.model
    assert model.ref["spec"] == f"{net_file}:DigitNet" and model.ref["model_args"] == {"num_classes": 4}
    assert model.loaded.num_classes == 4 and model.input_shape == (1, 32, 32)
    panel = window.model_panel
    assert panel.model_box.currentText() == "DigitNet (net.py) + digits.pth"
    assert {"body", "body.0", "body.3", "head"} <= _layer_names(panel)
    # Grad-CAM on it, for the opened digit.
    qtbot.waitUntil(lambda: window.workspace.current is not None and tuple(window.workspace.current.tensor.shape) == (1, 32, 32), timeout=ENGINE_TIMEOUT_MS)
    layer = next(item for item in panel.tree.findItems("*", Qt.MatchFlag.MatchWildcard | Qt.MatchFlag.MatchRecursive) if item.data(0, Qt.ItemDataRole.UserRole) == "body.3")
    panel.tree.itemClicked.emit(layer, 0)  # the last convolution, clicked in the layer tree
    cell = run_from_panel(qtbot, window, "gradcam")
    qtbot.waitUntil(lambda: cell.state == "done", timeout=30000)
    assert cell.explanation.map.shape == (32, 32) and cell.explanation.params.layer == "body.3"
    # Load on the box's entry loads the class again, with its arguments; the session records them, never trust.
    assert not window.errors
    state, _ = window.session.state()
    assert state["model"] == {"spec": f"{net_file}:DigitNet", "weights": str(net_file.parent / "digits.pth"), "labels": "", "model_args": {"num_classes": 4}}
    assert parse_session({**state, "format": "sensiscope-session", "version": 1, "cells": []}, {}, {"gradcam"}).model.model_args == {"num_classes": 4}
    requests = []
    panel.model_requested.connect(lambda *args: requests.append(args))
    qtbot.mouseClick(panel.load_button, Qt.MouseButton.LeftButton)
    assert requests[-1] == (f"{net_file}:DigitNet", str(net_file.parent / "digits.pth"), "", {"num_classes": 4}, False)


def test_a_session_naming_a_class_asks_before_it_runs_the_file(make_window, qtbot, net_file, monkeypatch):
    window = _engine_window(make_window, qtbot)
    asked = []
    monkeypatch.setattr(ModelPanel, "confirm_run_code", lambda self, spec, why="": asked.append(spec) or False)
    state, arrays = window.session.state()
    state["model"] = {"spec": f"{net_file}:DigitNet", "weights": "", "labels": "", "model_args": {"num_classes": 4}, "trust": True}
    from gui.session_file import write_session

    write_session(net_file.parent / "class.sensiscope.zip", {**state, "format": "sensiscope-session", "version": 1}, arrays)
    with qtbot.waitSignal(window.session_restored, timeout=ENGINE_TIMEOUT_MS):
        window.session.open(net_file.parent / "class.sensiscope.zip")
    assert asked == [f"{net_file}:DigitNet"]
    assert window.workspace.model is None and not (net_file.parent / "net-ran").exists()


def test_gui_image_and_weights_on_the_command_line_load_both(qtbot, resnet_weights, tmp_path, monkeypatch):
    from PySide6.QtCore import QSettings

    from gui.app import open_window

    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), np.uint8)).save(tmp_path / "scan.png")
    monkeypatch.chdir(tmp_path)  # relative paths, as typed
    args, rest = parse_args(["scan.png", str(resnet_weights / "scans.safetensors")])  # main.py gui IMAGE WEIGHTS
    assert rest == [] and not args.model and not args.empty
    window = open_window(args, settings=QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    qtbot.addWidget(window)
    window.confirm_close = lambda: True
    try:
        qtbot.waitUntil(lambda: window.workspace.model is not None and window.workspace.current is not None or bool(window.errors), timeout=ENGINE_TIMEOUT_MS)
        assert not window.errors
        assert window.workspace.current.item.path == tmp_path / "scan.png"
        model = window.workspace.model
        assert model.ref["spec"] == "resnet18" and model.loaded.num_classes == 3  # no --model, no sidecar: resnet18
        assert window.model_panel.model_box.currentText() == "resnet18 + scans.safetensors"
        assert window.grid.cells == []  # not the demo
    finally:
        window.close()
        assert window.jobs.shutdown(wait=True)
    parsed = parse_args(["a.png", "w.pth", "--model", "net.py:Net", "--model-args", '{"num_classes": 4}'])[0]
    assert (parsed.model, parsed.model_args, parsed.paths) == ("net.py:Net", '{"num_classes": 4}', ["a.png", "w.pth"])


def test_command_line_weights_go_with_model_or_their_sidecar_and_a_model_file_loads_as_itself(make_window, qtbot, net_file, tmp_path):
    window = _engine_window(make_window, qtbot)
    weights = str(net_file.parent / "digits.pth")
    with qtbot.waitSignal(window.workspace.model_loaded, timeout=ENGINE_TIMEOUT_MS):
        window.open_paths([weights], f"{net_file}:DigitNet", {"num_classes": 4})
    assert window.model_panel.model_box.currentText() == "DigitNet (net.py) + digits.pth"
    # A whole model in a file (TorchScript here; .pt2 and ONNX alike) loads as that model, whatever the box shows.
    script = tmp_path / "scripted.pt"
    torch.jit.script(tiny_cnn(seed=0)).save(str(script))
    with qtbot.waitSignal(window.workspace.model_loaded, timeout=ENGINE_TIMEOUT_MS):
        window.open_paths([str(script)], "resnet18")
    assert window.workspace.model.ref["spec"] == str(script) and window.model_panel.model_box.currentText() == "scripted.pt"
    # A state dict whose sidecar names its class: the dialog opens filled in, nothing runs before Load.
    (net_file.parent / "net-ran").unlink(missing_ok=True)
    (net_file.parent / "digits.json").write_text(json.dumps({"model": "net.py:DigitNet", "model_args": {"num_classes": 4}}))
    window.model_panel.model_box.setCurrentText("resnet18")
    window.open_paths([weights])
    dialog = window.class_dialog
    assert dialog is not None and dialog.spec() == f"{net_file}:DigitNet" and dialog.weights() == weights
    assert json.loads(dialog.args_edit.text()) == {"num_classes": 4} and not (net_file.parent / "net-ran").exists()
    dialog.reject()
