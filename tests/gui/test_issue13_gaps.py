"""Issue 13, item 1 (second half), driven on the model panel as a user would: a weights file that
failed to load is set aside, so pressing Labels... afterwards loads the chosen model with the new
labels instead of trying the failing file again."""

from __future__ import annotations

from types import SimpleNamespace

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from gui.panels.model_panel import ModelPanel


def test_a_failed_weights_file_does_not_come_back_with_labels(qtbot, tmp_path, monkeypatch):
    panel = ModelPanel()
    qtbot.addWidget(panel)
    device = SimpleNamespace(spec="cpu", label=lambda: "cpu")
    panel.set_engine(SimpleNamespace(models=["demo:ultrasound", "resnet18"], devices=[device], default_device="cpu"))
    requests = []
    panel.load_requested.connect(lambda *args: requests.append(args))
    bad = str(tmp_path / "bad.pt")
    panel.open_file(bad)
    assert requests[-1][0] == bad
    panel.load_failed(bad, "", "", "bad.pt: not a model or weights file", current="demo:ultrasound")
    assert "Could not load bad.pt" in panel.source_label.text() and "Still using" in panel.source_label.text()
    labels = tmp_path / "names.txt"
    labels.write_text("benign\nmalignant\nnormal\n")
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *args, **kwargs: (str(labels), ""))
    qtbot.mouseClick(panel.labels_button, Qt.MouseButton.LeftButton)
    assert requests[-1] == ("demo:ultrasound", "", str(labels), False)  # not bad.pt again
    assert len(requests) == 2
