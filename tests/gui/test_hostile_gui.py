"""Hostile inputs in the GUI (issue 30): the trust question names the pickle it would open, and the
Table tab opens Parquet tables from its dialog, with the CSV checks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from PySide6.QtWidgets import QFileDialog, QMessageBox

from tests.gui.conftest import ENGINE_TIMEOUT_MS
from tests.models import tiny_cnn


def test_the_trust_question_names_the_pickle_not_the_architecture(make_window, qtbot, tmp_path, monkeypatch):
    window = make_window(demo=False)
    qtbot.waitUntil(lambda: window.workspace.info is not None, timeout=ENGINE_TIMEOUT_MS)
    pickled = tmp_path / "my-weights.pt"
    torch.save(tiny_cnn(seed=0), pickled)  # a whole pickled model where weights were expected
    asked = []

    def answer_no(box):
        asked.append((box.windowTitle(), box.text()))
        return QMessageBox.StandardButton.No

    monkeypatch.setattr(QMessageBox, "exec", answer_no)
    window._load_model("resnet18", str(pickled), "", False)
    qtbot.waitUntil(lambda: bool(asked), timeout=ENGINE_TIMEOUT_MS)
    ((title, text),) = asked
    assert "my-weights.pt" in title and "<b>my-weights.pt</b>" in text and str(tmp_path) in text
    assert "resnet18" not in text and "resnet18" not in title
    assert window.workspace.model is None and pickled.exists()  # refused: nothing loaded, the file untouched


def test_the_table_dialog_offers_and_opens_parquet(make_window, qtbot, tmp_path, monkeypatch):
    window = make_window(demo=False)
    panel = window.tabular_panel
    rng = np.random.default_rng(0)
    table = tmp_path / "study.parquet"
    pd.DataFrame({"age": rng.normal(50, 9, 40), "dose": rng.normal(size=40), "outcome": rng.choice(["yes", "no"], 40)}).to_parquet(table)
    filters = []

    def choose(parent, caption, folder, file_filter):
        filters.append(file_filter)
        return str(table), file_filter.split(";;")[0]

    monkeypatch.setattr(QFileDialog, "getOpenFileName", choose)
    with qtbot.waitSignal(panel.table_opened, timeout=ENGINE_TIMEOUT_MS):
        window.open_table_action.trigger()
    assert "*.parquet" in filters[0].split(";;")[0]  # the first, default filter shows Parquet files
    assert panel.table.path == table and panel.table.n_rows == 40
    assert [c.name for c in panel.table.columns] == ["age", "dose", "outcome"]
    assert "study.parquet: 40 rows, 3 columns" in panel.path_label.text()
