from __future__ import annotations

import pytest


@pytest.fixture
def make_window(qtbot, monkeypatch):
    """Create the main window (modal message boxes recorded, not shown) and close it at teardown."""
    from PySide6.QtWidgets import QMessageBox

    from gui.app import configure_pyqtgraph
    from gui.main_window import MainWindow

    configure_pyqtgraph()
    messages = []
    monkeypatch.setattr(QMessageBox, "warning", lambda parent, title, text, *a: messages.append((title, text)))
    monkeypatch.setattr(QMessageBox, "about", lambda parent, title, text: messages.append((title, text)))

    def factory():
        window = MainWindow()
        window.messages = messages
        qtbot.addWidget(window)
        window.show()
        qtbot.waitExposed(window)
        return window

    return factory
