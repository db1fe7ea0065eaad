"""Analysis panel: a method, its parameter form, the target class, Run and Cancel."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QFormLayout, QHBoxLayout, QLabel, QProgressBar, QPushButton, QScrollArea, QVBoxLayout, QWidget

from ..widgets.elided_label import elide
from ..widgets.map_view import METHOD_TITLES
from ..widgets.param_form import ParamForm

PREDICTED = "predicted class"
# Where the window's starting value differs from the method's: activation maximisation starts from
# the input, so that its map shows what had to change in this image (from noise it shows an image).
GUI_DEFAULTS = {"actmax": {"init": "input"}}


class AnalysisPanel(QWidget):
    run_requested = Signal(str, dict, object)  # method, params, target (None: predicted)
    cancel_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.methods: dict[str, object] = {}
        self.layer = ""
        self.method_box = QComboBox()
        self.method_box.currentIndexChanged.connect(self._method_changed)
        self.summary = QLabel()
        self.summary.setWordWrap(True)
        self.summary.setObjectName("hint")
        self.form = ParamForm()
        self.target_box = QComboBox()
        self.target_box.addItem(PREDICTED)
        self.target_box.setToolTip("The class whose evidence is explained")
        self.reset_button = QPushButton("Defaults")
        self.reset_button.setToolTip("Reset the parameters to their defaults")
        self.reset_button.clicked.connect(lambda: self._method_changed())
        self.run_button = QPushButton("Run")
        self.run_button.setDefault(True)
        self.run_button.setObjectName("runButton")
        self.run_button.clicked.connect(self._run)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel_requested)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setFormat("idle")
        self.progress.setValue(0)

        top = QFormLayout()
        top.addRow("Method", self.method_box)
        top.addRow("Target", self.target_box)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        holder = QWidget()
        holder_layout = QVBoxLayout(holder)
        holder_layout.setContentsMargins(0, 0, 4, 0)
        holder_layout.addWidget(self.form)
        holder_layout.addStretch(1)
        scroll.setWidget(holder)
        buttons = QHBoxLayout()
        buttons.addWidget(self.reset_button)
        buttons.addStretch(1)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.run_button)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(top)
        layout.addWidget(self.summary)
        params_label = QLabel("<b>Parameters</b>")
        layout.addWidget(params_label)
        layout.addWidget(scroll, 1)
        layout.addWidget(self.progress)
        layout.addLayout(buttons)
        self.setEnabled(False)

    def set_methods(self, methods: list, preferred: str = "gradcam") -> None:
        self.methods = {spec.name: spec for spec in methods}
        self.method_box.blockSignals(True)
        self.method_box.clear()
        for spec in methods:
            self.method_box.addItem(f"{METHOD_TITLES.get(spec.name, spec.name)} ({spec.name})", spec.name)
        self.method_box.blockSignals(False)
        names = list(self.methods)
        self.method_box.setCurrentIndex(names.index(preferred) if preferred in names else 0)
        self._method_changed()
        self.setEnabled(True)

    def set_labels(self, labels: list[str] | None, num_classes: int | None) -> None:
        self.target_box.clear()
        self.target_box.addItem(PREDICTED, None)
        names = labels or [f"class {i}" for i in range(num_classes or 0)]
        for index, name in enumerate(names):
            self.target_box.addItem(f"{index}: {name}", index)

    def set_layers(self, names: list[str]) -> None:
        """The loaded model's feature-map layers: the only ones the layer field offers."""
        self.form.layer_choices = list(names)
        if self.layer not in names:
            self.layer = ""
        self._method_changed()

    def set_layer(self, name: str) -> None:
        """The layer chosen in the model panel, used by methods that take one."""
        self.layer = name
        self.form.set_value("layer", name)

    def method(self) -> str:
        return self.method_box.currentData() or ""

    def select_method(self, name: str) -> None:
        index = self.method_box.findData(name)
        if index >= 0:
            self.method_box.setCurrentIndex(index)

    def _method_changed(self, *_args) -> None:
        spec = self.methods.get(self.method())
        if spec is None:
            return
        self.summary.setText(spec.summary)
        values = dict(GUI_DEFAULTS.get(spec.name, {}))
        if self.layer:
            values["layer"] = self.layer
        self.form.set_specs(spec.params(), values or None, method=spec.name)

    def target(self):
        return self.target_box.currentData()

    def _run(self) -> None:
        self.run_requested.emit(self.method(), self.form.values(), self.target())

    def set_running(self, running: bool, text: str = "") -> None:
        self.cancel_button.setEnabled(running)
        if text:
            self._set_progress_text(text)
        if not running:
            self.progress.setValue(0 if not text else self.progress.value())

    def set_progress(self, fraction: float, message: str, data: object = None) -> None:
        """A job's progress report (``job.signals.progress`` connects here); the payload is not shown."""
        self.progress.setValue(int(fraction * 1000))
        self._set_progress_text(message, percent=True)

    def _set_progress_text(self, text: str, percent: bool = False) -> None:
        """The bar's text cut to the bar (never spilling out of it), the whole message as its tooltip."""
        suffix = " (100%)" if text and percent else "100%" if percent else ""
        room = self.progress.contentsRect().width() - 12 - self.progress.fontMetrics().horizontalAdvance(suffix)
        shown = elide(text, self.progress.font(), room) if text else ""
        self.progress.setFormat(f"{shown} (%p%)" if shown and percent else shown or "%p%")
        self.progress.setToolTip(text)
