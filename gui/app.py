"""Creating the QApplication and the main window."""

from __future__ import annotations

import sys
from collections.abc import Sequence

APP_NAME = "Sensiscope"


def configure_pyqtgraph() -> None:
    import pyqtgraph as pg

    # Images are stored row-major (H x W) everywhere in Sensiscope.
    pg.setConfigOptions(imageAxisOrder="row-major", antialias=True)


def create_app(argv: Sequence[str] | None = None):
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([sys.argv[0], *(argv or [])])
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(APP_NAME)
    configure_pyqtgraph()
    return app


def run_gui(argv: Sequence[str] | None = None) -> int:
    """Open the main window and run the event loop until it closes."""
    app = create_app(argv)
    from .main_window import MainWindow

    window = MainWindow()
    window.show()
    return app.exec()
