"""The dialog of *Run batch on folder*: which methods, which store, resume or not."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.app.runs import MANIFEST

METHOD_COLUMNS = 3


def holds_store(folder: str) -> bool:
    return bool(folder) and (Path(folder).expanduser() / MANIFEST).is_file()


class BatchDialog(QDialog):
    """Methods as checkboxes (from the registry), the store folder, resume, curve steps and an
    image cap; :meth:`values` is what was chosen."""

    def __init__(self, model: str, data: str, images: int | None, methods: list, store: str, checked: list[str], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Run batch on folder")
        count = f" ({images} images)" if images else ""
        about = QLabel(
            f"Explain and score every image of <b>{data}</b>{count} with <b>{model}</b>, into a result store (Parquet records, Zarr maps). "
            "It runs in the Jobs dock; the Results dock shows what it has finished."
        )
        about.setWordWrap(True)
        self.method_boxes: dict[str, QCheckBox] = {}
        group = QGroupBox("Methods")
        grid = QGridLayout(group)
        for index, spec in enumerate(methods):
            box = QCheckBox(spec.name)
            box.setToolTip(getattr(spec, "summary", ""))
            box.setChecked(spec.name in checked)
            self.method_boxes[spec.name] = box
            grid.addWidget(box, index // METHOD_COLUMNS, index % METHOD_COLUMNS)
        self.store_edit = QLineEdit(store)
        self.store_edit.setToolTip("A new or empty folder, or an existing store to resume")
        self.store_edit.textChanged.connect(self._store_changed)
        choose = QPushButton("Choose...")
        choose.clicked.connect(self._choose_store)
        row = QHBoxLayout()
        row.addWidget(self.store_edit, 1)
        row.addWidget(choose)
        self.resume_box = QCheckBox("Resume: keep the finished (image, method) pairs of this store and compute the rest")
        self.retry_box = QCheckBox("Retry failed: compute again the images that could not be used before")
        self.retry_box.setToolTip("Images a run could not read or explain are recorded as failed and skipped on resume; tick to try them again (main.py batch --retry-failed)")
        self.resume_box.toggled.connect(self.retry_box.setEnabled)
        self.steps_box = QSpinBox()
        self.steps_box.setRange(2, 10_000)
        self.steps_box.setValue(50)
        self.steps_box.setToolTip("Steps of the deletion and insertion curves (as main.py batch --steps)")
        self.images_box = QSpinBox()
        self.images_box.setRange(0, 10**8)
        self.images_box.setSpecialValueText("all")
        self.images_box.setToolTip("Use only this many images, taken in turn from each class (as main.py batch --n)")
        self.batch_box = QSpinBox()
        self.batch_box.setRange(1, 256)
        self.batch_box.setValue(16)
        self.batch_box.setToolTip(
            "Images explained and scored together (as main.py batch --batch): the one-pass methods take them in one forward and backward, "
            "and their deletion and insertion curves share forwards; 1 runs them one by one. The maps are the same either way."
        )
        form = QFormLayout()
        form.addRow("Store folder:", row)
        form.addRow("", self.resume_box)
        form.addRow("", self.retry_box)
        form.addRow("Curve steps:", self.steps_box)
        form.addRow("Images:", self.images_box)
        form.addRow("Images per pass:", self.batch_box)
        self.problem = QLabel()
        self.problem.setWordWrap(True)
        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Run")
        self.buttons.accepted.connect(self._accept)
        self.buttons.rejected.connect(self.reject)
        layout = QVBoxLayout(self)
        layout.addWidget(about)
        layout.addWidget(group)
        layout.addLayout(form)
        layout.addWidget(self.problem)
        layout.addWidget(self.buttons)
        self._store_changed(store)

    def _choose_store(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Store folder (new, empty, or a store to resume)", self.store_edit.text())
        if folder:
            self.store_edit.setText(folder)

    def _store_changed(self, text: str) -> None:
        existing = holds_store(text.strip())
        self.resume_box.setEnabled(existing)
        self.resume_box.setChecked(existing)
        self.retry_box.setEnabled(existing)

    def values(self) -> dict:
        return {
            "methods": tuple(name for name, box in self.method_boxes.items() if box.isChecked()),
            "store": self.store_edit.text().strip(),
            "resume": self.resume_box.isChecked() and self.resume_box.isEnabled(),
            "steps": self.steps_box.value(),
            "max_images": self.images_box.value(),
            "batch": self.batch_box.value(),
            "retry_failed": self.retry_box.isChecked() and self.retry_box.isEnabled(),
        }

    def check(self) -> str:
        """What is missing ('' when the choice can run)."""
        values = self.values()
        if not values["methods"]:
            return "Choose at least one method."
        if not values["store"]:
            return "Choose a folder for the store."
        if holds_store(values["store"]) and not values["resume"]:
            return "That folder holds a run already: tick Resume to continue it, or choose another folder."
        return ""

    def _accept(self) -> None:
        problem = self.check()
        self.problem.setText(problem)
        if not problem:
            self.accept()
