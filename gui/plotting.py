"""pyqtgraph's global settings for Sensiscope (row-major images, colours from the Qt palette)."""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication


def configure_pyqtgraph() -> None:
    # Images are stored row-major (H x W) everywhere in Sensiscope.
    pg.setConfigOptions(imageAxisOrder="row-major", antialias=True)
    app = QApplication.instance()
    if app is not None:  # plots blend with the window instead of pyqtgraph's black
        palette = app.palette()
        pg.setConfigOptions(background=palette.color(QPalette.ColorRole.Base), foreground=palette.color(QPalette.ColorRole.Text))
