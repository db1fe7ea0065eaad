"""Dataset panel: open an image or a folder; thumbnails made lazily in file-lane jobs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QAbstractListModel, QModelIndex, QSize, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPixmap
from PySide6.QtWidgets import QComboBox, QFileDialog, QHBoxLayout, QLabel, QListView, QPushButton, QSlider, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

from ..jobs import FILE_LANE, JobManager

THUMB = 64
OUTCOMES = ("all predictions", "correct", "incorrect")
IMAGE_FILTER = "Images, DICOM and tensors (*.png *.jpg *.jpeg *.bmp *.tif *.tiff *.dcm *.dicom *.dic *.npy);;All files (*)"


def make_thumbnail(item, size: int = THUMB) -> QImage:
    """A small RGB picture of an input with its mask outlined in green (runs in a worker thread)."""
    from PIL import Image

    from engine.app.data import display_from_tensor, read_image, read_tensor

    image = display_from_tensor(read_tensor(item.path)) if item.is_tensor else read_image(item.path, getattr(item, "frame", None))
    rgb = np.repeat(image, 3, axis=2) if image.shape[2] == 1 else image[:, :, :3]
    picture = Image.fromarray((np.clip(rgb, 0, 1) * 255).astype(np.uint8))
    picture.thumbnail((size, size))
    pixels = np.array(picture)
    if item.mask is not None:
        mask = Image.open(item.mask).convert("L").resize(picture.size, Image.NEAREST)
        inside = np.asarray(mask) > 127
        inner = inside.copy()
        inner[1:, :] &= inside[:-1, :]
        inner[:-1, :] &= inside[1:, :]
        inner[:, 1:] &= inside[:, :-1]
        inner[:, :-1] &= inside[:, 1:]
        pixels[inside & ~inner] = (40, 230, 90)
    pixels = np.ascontiguousarray(pixels)
    height, width = pixels.shape[:2]
    return QImage(pixels.data, width, height, 3 * width, QImage.Format.Format_RGB888).copy()


def _dicom_lines(meta: dict | None) -> list[str]:
    """What a DICOM input's tooltip adds: its frame, its window/level and its pixel spacing."""
    if not meta or meta.get("format") != "DICOM":
        return []
    lines = [f"DICOM frame {meta['frame'] + 1} of {meta['frames']}" if meta.get("frames", 1) > 1 else "DICOM"]
    window = meta.get("window")
    if window:
        lines.append(f"window/level: width {window['width']:g}, centre {window['center']:g} ({window['function'].lower()})")
    else:
        lines.append(f"window/level: {meta.get('voi', 'full range')}")
    if meta.get("pixel_spacing_mm"):
        lines.append("pixel spacing: " + " x ".join(f"{v:g}" for v in meta["pixel_spacing_mm"]) + " mm")
    if meta.get("series_description"):
        lines.append(f"series: {meta['series_description']}")
    return lines


def window_text(meta: dict | None) -> str:
    """The window/level line under the thumbnails for a DICOM input ("" for other inputs): the window
    centre and width the file gives (what the display and the model input both use), and the rescale
    slope and intercept when they are not the identity."""
    if not meta or meta.get("format") != "DICOM":
        return ""
    window = meta.get("window")
    if window:
        function = "" if window["function"] == "LINEAR" else f" ({window['function'].lower()})"
        text = f"Window centre {window['center']:g}, width {window['width']:g}{function}"
    else:
        text = f"Window: {meta.get('voi', 'full range')}"
    rescale = meta.get("rescale") or {}
    slope, intercept = rescale.get("slope", 1.0), rescale.get("intercept", 0.0)
    if (slope, intercept) != (1.0, 0.0):
        text += f"; rescale slope {slope:g}, intercept {intercept:g}"
    if meta.get("photometric_interpretation") == "MONOCHROME1":
        text += "; MONOCHROME1 (inverted)"
    return text


def _caption(item) -> str:
    """A thumbnail's caption: the file's stem, or ``stem#NNN`` for a frame of a multi-frame DICOM file."""
    return item.path.stem if getattr(item, "frame", None) is None else f"{item.path.stem}#{item.frame:03d}"


class ThumbnailModel(QAbstractListModel):
    """The inputs of a scan; a thumbnail is requested the first time a view asks for it."""

    def __init__(self, jobs: JobManager, parent=None) -> None:
        super().__init__(parent)
        self.jobs = jobs
        self.items: list = []
        self.predictions: dict[int, tuple[str, float]] = {}  # row: (predicted label, probability)
        self.thumbnails: dict[int, QPixmap] = {}
        self._requested: set[int] = set()
        self._generation = 0
        self.placeholder = QPixmap(THUMB, THUMB)
        self.placeholder.fill(QColor("#d8dce2"))

    def set_items(self, items: list) -> None:
        self.beginResetModel()
        self._generation += 1
        self.items = list(items)
        self.predictions.clear()
        self.thumbnails.clear()
        self._requested.clear()
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: B008, N802 - Qt's signature
        return 0 if parent.isValid() else len(self.items)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row = index.row()
        item = self.items[row]
        prediction = self.predictions.get(row)
        if role == Qt.ItemDataRole.DisplayRole:
            return _caption(item) + (f"\n{prediction[0]} {prediction[1]:.0%}" if prediction else "")
        if role == Qt.ItemDataRole.DecorationRole:
            if row not in self.thumbnails:
                self._request(row)
                return self.placeholder
            return self.thumbnails[row]
        if role == Qt.ItemDataRole.ToolTipRole:
            lines = [item.name, f"class: {item.label or '(none)'}", "mask: yes (outlined in green)" if item.mask else "mask: none"]
            lines += _dicom_lines(getattr(item, "meta", None))
            if prediction:
                verdict = "" if not item.label else (" (correct)" if self.correct(row) else " (incorrect)")
                lines.append(f"prediction: {prediction[0]}, confidence {prediction[1]:.1%}{verdict}")
            return "\n".join(lines)
        if role == Qt.ItemDataRole.UserRole:
            return item
        return None

    def correct(self, row: int) -> bool | None:
        """Whether the prediction of a row matches its class; None without either."""
        prediction, label = self.predictions.get(row), self.items[row].label
        return None if prediction is None or not label else prediction[0] == label

    def set_predictions(self, predictions: list) -> None:
        """One (label, probability) per item; None for an item that could not be read."""
        self.predictions = {row: p for row, p in enumerate(predictions) if p is not None}
        if self.items:
            self.dataChanged.emit(self.index(0), self.index(len(self.items) - 1), [Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.ToolTipRole])

    def _request(self, row: int) -> None:
        if row in self._requested:
            return
        self._requested.add(row)
        item, generation = self.items[row], self._generation
        job = self.jobs.submit(lambda progress, cancel: make_thumbnail(item), f"Thumbnail {item.name}", lane=FILE_LANE, key=f"thumb:{generation}:{row}", quiet=True)
        job.signals.finished.connect(lambda image, row=row, generation=generation: self._thumbnail_ready(row, generation, image))

    def _thumbnail_ready(self, row: int, generation: int, image: QImage) -> None:
        if generation != self._generation:
            return  # a thumbnail of a dataset that is no longer open
        self.thumbnails[row] = QPixmap.fromImage(image)
        index = self.index(row)
        self.dataChanged.emit(index, index, [Qt.ItemDataRole.DecorationRole])


class DatasetPanel(QWidget):
    open_requested = Signal(str)
    item_selected = Signal(object)  # engine.InputItem
    predict_requested = Signal(list)  # the listed inputs
    predictions_shown = Signal()

    def __init__(self, jobs: JobManager, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.open_image_button = QPushButton("Open image...")
        self.open_image_button.clicked.connect(self._choose_image)
        self.open_folder_button = QPushButton("Open folder...")
        self.open_folder_button.setToolTip("A folder of images, or an ImageFolder (one sub-folder per class); NAME_mask.png files are masks")
        self.open_folder_button.clicked.connect(self._choose_folder)
        self.class_box = QComboBox()
        self.class_box.setToolTip("Show only one class")
        self.class_box.currentIndexChanged.connect(self._filter)
        self.predict_button = QPushButton("Predict all")
        self.predict_button.setToolTip("Predict every listed input with the loaded model; the results show under the thumbnails")
        self.predict_button.setEnabled(False)
        self.predict_button.clicked.connect(lambda: self.predict_requested.emit(list(self.model.items)))
        self.outcome_box = QComboBox()
        self.outcome_box.addItems(OUTCOMES)
        self.outcome_box.setToolTip("After Predict all: show only the inputs whose prediction matches (or misses) their class")
        self.outcome_box.currentIndexChanged.connect(self._filter)
        self.outcome_box.setEnabled(False)
        self.summary = QLabel("No data open")
        self.summary.setObjectName("hint")
        self.summary.setWordWrap(True)

        self.scores_label = QLabel()
        self.scores_label.setWordWrap(True)
        self.scores_label.hide()
        self.confusion = QTableWidget()
        self.confusion.setToolTip("Confusion matrix of Predict all: rows are the true classes, columns the predicted ones")
        self.confusion.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.confusion.hide()
        self.model = ThumbnailModel(jobs, self)
        self.view = QListView()
        self.view.setViewMode(QListView.ViewMode.IconMode)
        self.view.setIconSize(QSize(THUMB, THUMB))
        self.view.setGridSize(QSize(THUMB + 16, THUMB + 22))
        self.view.setResizeMode(QListView.ResizeMode.Adjust)
        self.view.setMovement(QListView.Movement.Static)
        self.view.setUniformItemSizes(True)
        self.view.setLayoutMode(QListView.LayoutMode.Batched)
        self.view.setModel(self.model)
        self.view.selectionModel().currentChanged.connect(self._current_changed)
        # A multi-frame DICOM file (a cine loop): a slider through its frames, each its own input.
        self._frames: list = []  # the frames of the current input's file, in frame order
        self.frame_slider = QSlider(Qt.Orientation.Horizontal)
        self.frame_slider.setToolTip("Move through the frames of this multi-frame DICOM file; the chosen frame becomes the current input")
        self.frame_slider.setPageStep(1)
        self.frame_slider.valueChanged.connect(self._frame_chosen)
        self.frame_label = QLabel()
        self.window_label = QLabel()
        self.window_label.setObjectName("hint")
        self.window_label.setWordWrap(True)
        self.window_label.setToolTip("The DICOM window (VOI) and rescale applied to this input, for the display and the model input alike")

        buttons = QHBoxLayout()
        buttons.addWidget(self.open_image_button)
        buttons.addWidget(self.open_folder_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(buttons)
        layout.addWidget(self.summary)
        layout.addWidget(self.class_box)
        predict = QHBoxLayout()
        predict.addWidget(self.predict_button)
        predict.addWidget(self.outcome_box, 1)
        layout.addLayout(predict)
        layout.addWidget(self.scores_label)
        layout.addWidget(self.confusion)
        layout.addWidget(self.view, 1)
        frames = QHBoxLayout()
        frames.addWidget(self.frame_label)
        frames.addWidget(self.frame_slider, 1)
        layout.addLayout(frames)
        layout.addWidget(self.window_label)
        self.class_box.hide()
        self._show_frames(None)

    def _choose_image(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open an image", "", IMAGE_FILTER)
        if path:
            self.open_requested.emit(path)

    def _choose_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open a folder of images")
        if path:
            self.open_requested.emit(path)

    def show_scan(self, scan) -> None:
        self.scan = scan
        masks = sum(1 for item in scan.items if item.mask is not None)
        text = f"<b>{Path(scan.root).name}</b>: {len(scan.items)} input(s)"
        if scan.classes:
            text += f" in {len(scan.classes)} classes"
        if masks:
            text += f", {masks} with masks (green outline)"
        self.summary.setText(text)
        self.summary.setToolTip(str(scan.root))
        self.class_box.blockSignals(True)
        self.class_box.clear()
        self.class_box.addItem("all classes")
        self.class_box.addItems(scan.classes)
        self.class_box.blockSignals(False)
        self.class_box.setVisible(bool(scan.classes))
        self.model.set_items(scan.items)
        self._show_frames(None)
        self.scores_label.hide()
        self.confusion.hide()
        self.outcome_box.setCurrentIndex(0)
        self.outcome_box.setEnabled(False)

    def set_model_ready(self, ready: bool) -> None:
        self.predict_button.setEnabled(ready)

    def set_predicting(self, job) -> None:
        self.predict_button.setEnabled(False)
        self.predict_button.setText("Predicting...")
        job.signals.progress.connect(lambda fraction, _message, _data: self.predict_button.setText(f"Predicting {fraction:.0%}"))
        for signal in (job.signals.finished, job.signals.failed, job.signals.cancelled):
            signal.connect(self._predicting_ended)

    def _predicting_ended(self, *_args) -> None:
        self.predict_button.setText("Predict all")
        self.predict_button.setEnabled(True)

    def set_predictions(self, predictions) -> None:
        """Predict all's answer (gui.workspace.Predictions, or a plain list): captions, accuracy and confusion matrix."""
        results, skipped = (predictions.results, predictions.skipped) if hasattr(predictions, "results") else (list(predictions), [])
        self.model.set_predictions(results)
        self._show_scores(predictions if hasattr(predictions, "scores") else None, skipped)
        self.view.setGridSize(QSize(THUMB + 16, THUMB + 36))
        self.outcome_box.setEnabled(any(item.label for item in self.model.items))
        self._filter()
        self.predictions_shown.emit()

    def _show_scores(self, predictions, skipped: list[str]) -> None:
        accuracy, classes, matrix = predictions.scores([item.label for item in self.model.items]) if predictions is not None else (None, [], None)
        lines = []
        if accuracy is not None:
            total = int(matrix.sum())
            lines.append(f"<b>Accuracy {accuracy:.1%}</b> ({int(np.trace(matrix))} of {total} with a known class)")
        if skipped:
            lines.append(f"{len(skipped)} unreadable file(s) skipped")
        self.scores_label.setText("<br>".join(lines))
        self.scores_label.setToolTip("\n".join(skipped[:20]))
        self.scores_label.setVisible(bool(lines))
        self.confusion.setVisible(accuracy is not None)
        if accuracy is None:
            return
        self.confusion.setRowCount(len(classes))
        self.confusion.setColumnCount(len(classes))
        self.confusion.setHorizontalHeaderLabels([f"pred. {name}" for name in classes])
        self.confusion.setVerticalHeaderLabels([f"true {name}" for name in classes])
        for row in range(len(classes)):
            for column in range(len(classes)):
                cell = QTableWidgetItem(str(int(matrix[row, column])))
                cell.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                self.confusion.setItem(row, column, cell)
        self.confusion.resizeColumnsToContents()
        height = self.confusion.horizontalHeader().height() + sum(self.confusion.rowHeight(r) for r in range(len(classes))) + 4
        self.confusion.setFixedHeight(min(height, 160))

    def _filter(self) -> None:
        choice = self.class_box.currentIndex()
        wanted = self.class_box.currentText() if choice > 0 else None
        outcome = self.outcome_box.currentIndex()  # 0 all, 1 correct, 2 incorrect
        for row, item in enumerate(self.model.items):
            correct = self.model.correct(row)
            hidden = (wanted is not None and item.label != wanted) or (outcome and correct is None) or (outcome == 1 and correct is False) or (outcome == 2 and correct is True)
            self.view.setRowHidden(row, bool(hidden))

    def select(self, item) -> None:
        """Select an input in the view (which makes it the current input)."""
        if item in self.model.items:
            self.view.setCurrentIndex(self.model.index(self.model.items.index(item)))

    def _current_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if current.isValid():
            item = self.model.items[current.row()]
            self._show_frames(item)
            self.item_selected.emit(item)

    def _show_frames(self, item) -> None:
        """Show the frame slider for a frame of a multi-frame file (hidden otherwise) and the window/level of a DICOM input."""
        frames = [] if item is None or item.frame is None else sorted((other for other in self.model.items if other.frame is not None and other.path == item.path), key=lambda other: other.frame)
        self._frames = frames
        several = len(frames) > 1
        position = frames.index(item) if several else 0
        self.frame_slider.blockSignals(True)  # showing the current frame must not select it again
        self.frame_slider.setRange(0, max(len(frames) - 1, 0))
        self.frame_slider.setValue(position)
        self.frame_slider.blockSignals(False)
        self.frame_label.setText(f"frame {position + 1} / {len(frames)}" if several else "")
        self.frame_label.setToolTip(item.name if several else "")
        self.frame_slider.setVisible(several)
        self.frame_label.setVisible(several)
        text = window_text(getattr(item, "meta", None))
        self.window_label.setText(text)
        self.window_label.setVisible(bool(text))

    def _frame_chosen(self, position: int) -> None:
        """The slider moved: its frame becomes the current input, as if its thumbnail were clicked."""
        if 0 <= position < len(self._frames):
            item = self._frames[position]
            self.select(item)
            self.view.scrollTo(self.model.index(self.model.items.index(item)))
