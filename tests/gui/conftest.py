from __future__ import annotations

import pytest

ENGINE_TIMEOUT_MS = 60000


@pytest.fixture
def make_window(qtbot, monkeypatch, tmp_path):
    """Create main windows (QMessageBox.about recorded, settings in a temporary file); at teardown
    close them, which shuts their job managers down."""
    from PySide6.QtCore import QSettings
    from PySide6.QtWidgets import QMessageBox

    from gui.main_window import MainWindow
    from gui.plotting import configure_pyqtgraph

    configure_pyqtgraph()
    messages = []
    monkeypatch.setattr(QMessageBox, "about", lambda parent, title, text: messages.append((title, text)))
    windows = []

    def factory(demo: bool = False, demo_analyses: bool = True) -> MainWindow:
        settings = QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat)
        window = MainWindow(demo=demo, demo_analyses=demo_analyses, settings=settings)
        window.messages = messages
        window.confirm_close = lambda: True  # closing at teardown never waits on "Save the session?"
        windows.append(window)
        qtbot.addWidget(window)
        window.show()
        qtbot.waitExposed(window)
        return window

    yield factory
    for window in windows:
        window.close()
        assert window.jobs.shutdown(wait=True)


def wait_for_input(qtbot, window, timeout: int = ENGINE_TIMEOUT_MS) -> None:
    """Wait until the demo model is loaded and an input is prepared."""
    qtbot.waitUntil(lambda: window.workspace.model is not None and window.workspace.current is not None, timeout=timeout)
