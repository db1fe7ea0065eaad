"""The main window: menus, an image view and a status bar showing the compute device."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QFileDialog, QLabel, QMainWindow, QMessageBox

from engine import UserError, app_version, read_image, select_device
from engine.device import describe_device

IMAGE_FILTER = "Images (*.png *.jpg *.jpeg *.bmp *.tif *.tiff)"


class MainWindow(QMainWindow):
    def __init__(self) -> None:
        super().__init__()
        self.setWindowTitle(f"Sensiscope {app_version()}")
        self.resize(1100, 750)
        self.image_view = pg.ImageView()
        self.image_view.ui.roiBtn.hide()
        self.image_view.ui.menuBtn.hide()
        self.setCentralWidget(self.image_view)
        self.current_image: np.ndarray | None = None
        self._build_menus()
        device = describe_device(select_device("auto"))
        self.device_label = QLabel(f"Device: {device.label()}")
        self.statusBar().addPermanentWidget(self.device_label)
        self.statusBar().showMessage("Open an image with File > Open image", 0)

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.open_image_action = QAction("Open &image...", self, shortcut=QKeySequence.StandardKey.Open)
        self.open_image_action.triggered.connect(self._choose_image)
        file_menu.addAction(self.open_image_action)
        file_menu.addSeparator()
        quit_action = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit)
        quit_action.triggered.connect(self.close)
        file_menu.addAction(quit_action)

        view_menu = self.menuBar().addMenu("&View")
        fit_action = QAction("&Fit image", self)
        fit_action.triggered.connect(lambda: self.image_view.autoRange())
        view_menu.addAction(fit_action)

        help_menu = self.menuBar().addMenu("&Help")
        self.about_action = QAction("&About Sensiscope", self)
        self.about_action.triggered.connect(self.show_about)
        help_menu.addAction(self.about_action)

    def about_text(self) -> str:
        return (
            f"<b>Sensiscope {app_version()}</b><br>"
            "Sensitivity analysis of neural networks: how a model's output responds to "
            "perturbations of its inputs."
        )

    def show_about(self) -> None:
        QMessageBox.about(self, "About Sensiscope", self.about_text())

    def _choose_image(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open image", "", IMAGE_FILTER)
        if path:
            self.open_image(path)

    def open_image(self, path: str | Path) -> bool:
        """Show an image; a file that cannot be read gives a message and changes nothing."""
        try:
            image = read_image(path)
        except UserError as exc:
            self.statusBar().showMessage(str(exc), 10000)
            QMessageBox.warning(self, "Cannot open image", str(exc))
            return False
        self.current_image = image
        shown = image[:, :, 0] if image.shape[2] == 1 else image
        self.image_view.setImage(shown, levels=(0.0, 1.0), autoRange=True)
        self.statusBar().showMessage(f"{Path(path).name}: {image.shape[1]} x {image.shape[0]}, {image.shape[2]} channel(s)", 0)
        return True
