"""Model panel: choose or open a model, labels and device; the layer tree; the current prediction."""

from __future__ import annotations

from html import escape
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from engine.core.vocab import MODEL_FILE_SUFFIXES

from ..document import UNTRAINED_WORDS
from ..widgets.elided_label import ElidedComboBox, elide

MODEL_FILTER = f"Models and weights ({' '.join('*' + suffix for suffix in MODEL_FILE_SUFFIXES)});;All files (*)"
LABELS_TIP = "Class names: a text file (one a line) or JSON; applied when the model is next loaded"
LABELS_FILTER = "Labels (*.txt *.json);;All files (*)"
TRUST_WARNING = (
    "<b>{name}</b> is a whole pickled model, not only weights.<br><br>"
    "Loading it runs Python code stored in the file: a file from an untrusted source can do "
    "anything your user account can (read, change or delete files, install programs).<br><br>"
    "Load it only if you made it yourself or trust its author. Safer: save a state dict or "
    "safetensors file and open it with its architecture."
)


UNTRAINED_TEXT = "UNTRAINED: random weights. Its predictions and maps show an untrained network, not a real classifier."


def format_shape(shape) -> str:
    return " x ".join(str(v) for v in shape[1:]) if shape else ""


class ModelPanel(QWidget):
    load_requested = Signal(str, str, str, bool)  # spec, weights, labels, trust
    device_changed = Signal(str)
    layer_chosen = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.device_specs: list[str] = []
        self.conv_layers: set[str] = set()
        self.labels_path = ""
        self.last_file = ""

        self.model_box = QComboBox()
        self.model_box.setToolTip("A built-in model: the ultrasound demo, or a torchvision architecture (random weights unless its ImageNet weights are cached)")
        self.model_box.setMinimumContentsLength(14)
        self.load_button = QPushButton("Load")
        self.load_button.clicked.connect(self._load_builtin)
        self.open_button = QPushButton("Open file...")
        self.open_button.setToolTip("A TorchScript model, or weights (.pt/.safetensors) with a metadata .json beside them")
        self.open_button.clicked.connect(self._choose_file)
        self.labels_button = QPushButton("Labels...")
        self.labels_button.setToolTip(LABELS_TIP)
        self.labels_button.clicked.connect(self._choose_labels)
        self.device_box = ElidedComboBox()  # a long device name ends in "..." with the full name as tooltip
        self.device_box.setToolTip("The device the model and every analysis run on")
        self.device_box.currentIndexChanged.connect(self._device_chosen)

        row = QHBoxLayout()
        row.addWidget(self.model_box, 1)
        row.addWidget(self.load_button)
        files = QHBoxLayout()
        files.addWidget(self.open_button)
        files.addWidget(self.labels_button)
        form = QFormLayout()
        form.addRow("Model", row)
        form.addRow("", files)
        form.addRow("Device", self.device_box)

        self.source_html = None  # width -> the source text, its file and model names cut to the width
        self.source_label = QLabel("Starting the engine...")
        self.source_label.setWordWrap(True)
        # Its names are cut to its width: the text must not set the width in turn (or it never shrinks).
        self.source_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.source_label.setMinimumWidth(100)
        self.source_label.setObjectName("hint")
        self.untrained_label = QLabel(UNTRAINED_TEXT)
        self.untrained_label.setObjectName("untrained")
        self.untrained_label.setWordWrap(True)
        self.untrained_label.setToolTip("No trained weights were found for this architecture, so it was built with random weights. Open a weights file to explain a trained model.")
        self.untrained_label.hide()
        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setMaximumHeight(6)
        self.busy.setTextVisible(False)

        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Layer", "Type", "Output"])
        self.tree.setToolTip("Layers with their output shapes; click a feature-map layer to use it for Grad-CAM")
        self.tree.setUniformRowHeights(True)
        self.tree.setTextElideMode(Qt.TextElideMode.ElideMiddle)
        self.tree.itemClicked.connect(self._layer_activated)  # one click chooses a layer (Enter too)
        self.tree.itemActivated.connect(self._layer_activated)
        self.prediction = QTreeWidget()
        self.prediction.setHeaderLabels(["Prediction", "Probability"])
        self.prediction.setRootIsDecorated(False)
        self.prediction.setMaximumHeight(118)

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(form)
        layout.addWidget(self.busy)
        layout.addWidget(self.source_label)
        layout.addWidget(self.untrained_label)
        layout.addWidget(self.prediction)
        layout.addWidget(self.tree, 1)
        self.set_enabled(False)

    def set_enabled(self, enabled: bool) -> None:
        for widget in (self.model_box, self.load_button, self.open_button, self.labels_button, self.device_box):
            widget.setEnabled(enabled)

    def set_busy(self, busy: bool, text: str = "") -> None:
        self.busy.setVisible(busy)
        if text:
            self.source_html = None
            self.source_label.setText(text)
            self.source_label.setToolTip("")

    def load_failed(self, spec: str, weights: str, labels: str, message: str, current: str = "") -> None:
        """Leave "Loading..." for what happened; a labels file or a model file that failed is set aside,
        so that it does not come back with the next load (Labels... or Load)."""
        self.set_busy(False)
        notes = []
        if labels and labels == self.labels_path:
            self.labels_path = ""
            self.labels_button.setToolTip(LABELS_TIP)
            notes.append(f"The labels file {Path(labels).name} was set aside; choose it again with Labels... if it was not the cause.")
        if self.last_file and self.last_file in (spec, weights):
            self.last_file = ""
        name = Path(weights or spec).name

        def text(width: int) -> str:
            html = f"<b>Could not load {self._fit(name, width)}</b>: {escape(message)}"
            if current:
                html += f"<br>Still using <b>{self._fit(current, width)}</b>."
            return html + "".join(f"<br><i>{escape(note)}</i>" for note in notes)

        self._set_source(text, "\n".join(part for part in (f"Could not load {weights or spec}", message, f"Still using {current}" if current else "") if part))

    def _fit(self, name: str, width: int) -> str:
        """A file or model name (no spaces to wrap at) cut in the middle to the label's width, escaped."""
        font = self.source_label.font()
        font.setBold(True)
        return escape(elide(name, font, width, Qt.TextElideMode.ElideMiddle))

    def _set_source(self, html, tip: str) -> None:
        """The source label's text from ``html(width)``, redrawn when the panel's width changes."""
        self.source_html = html
        self.source_label.setToolTip(tip)
        self._render_source()

    def _render_source(self) -> None:
        if self.source_html is not None:
            width = max(120, self.source_label.contentsRect().width() - 20)
            self.source_label.setText(self.source_html(width))

    def resizeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        self._render_source()

    def set_engine(self, info) -> None:
        self.model_box.clear()
        self.model_box.addItems(info.models)
        self.device_box.blockSignals(True)
        self.device_box.clear()
        self.device_specs = [d.spec for d in info.devices]
        self.device_box.addItems([d.label() for d in info.devices])
        if info.default_device in self.device_specs:
            self.device_box.setCurrentIndex(self.device_specs.index(info.default_device))
        self.device_box.blockSignals(False)
        self.set_enabled(True)
        self.set_busy(False, "Choose a model and press Load.")

    # ---------------------------------------------------------------- requests
    def _load_builtin(self) -> None:
        self.load_requested.emit(self.model_box.currentText(), "", self.labels_path, False)

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a model or weights file", "", MODEL_FILTER)
        if path:
            self.open_file(path)

    def open_file(self, path: str, trust: bool = False) -> None:
        """A model file; .safetensors and state dicts go with the architecture chosen above."""
        self.last_file = path
        if path.lower().endswith(".safetensors") and not self._has_sidecar(path):
            self.load_requested.emit(self.model_box.currentText(), path, self.labels_path, False)
        else:
            self.load_requested.emit(path, "", self.labels_path, trust)

    @staticmethod
    def _has_sidecar(path: str) -> bool:
        return Path(path).with_suffix(".json").is_file()

    def confirm_trust(self, path: str) -> bool:
        """Ask before unpickling a whole model; the default answer is No."""
        box = QMessageBox(QMessageBox.Icon.Warning, "Load a pickled model?", TRUST_WARNING.format(name=Path(path).name), QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self)
        box.setDefaultButton(QMessageBox.StandardButton.No)
        box.button(QMessageBox.StandardButton.Yes).setText("Load it, I trust this file")
        return box.exec() == QMessageBox.StandardButton.Yes

    def _choose_labels(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open class names", "", LABELS_FILTER)
        if path:
            self.labels_path = path
            self.labels_button.setToolTip(f"Labels: {path}")
            self._load_builtin() if not self.last_file else self.open_file(self.last_file)

    def _device_chosen(self, index: int) -> None:
        if 0 <= index < len(self.device_specs):
            self.device_changed.emit(self.device_specs[index])

    def _layer_activated(self, item: QTreeWidgetItem, _column: int) -> None:
        name = item.data(0, Qt.ItemDataRole.UserRole)
        if name in self.conv_layers:
            self.layer_chosen.emit(name)

    # ---------------------------------------------------------------- results
    def show_model(self, state) -> None:
        loaded = state.loaded
        params = sum(p.numel() for p in loaded.module.parameters())
        classes = f"{loaded.num_classes} classes" if loaded.num_classes else "classes unknown"
        notes = "".join(f"<br><i>{escape(note)}</i>" for note in loaded.notes)
        rest = f"{classes}, {params:,} parameters, input {format_shape((1, *state.input_shape))}{notes}"
        self._set_source(lambda width: f"<b>{self._fit(loaded.spec, width)}</b>: {rest}", f"{loaded.spec}\n{loaded.source}")
        self.untrained_label.setVisible(UNTRAINED_WORDS in loaded.source)
        if loaded.spec in [self.model_box.itemText(i) for i in range(self.model_box.count())]:
            self.model_box.setCurrentText(loaded.spec)
        self.conv_layers = set(state.conv_layers)
        self.tree.clear()
        parents: dict[str, QTreeWidgetItem] = {}
        for layer in state.layers:
            if not layer.name:
                continue
            parent_name = layer.name.rpartition(".")[0]
            short = layer.name.rpartition(".")[2]
            grid = f" ({layer.grid})" if layer.grid and not layer.grid[0].isdigit() else ""  # token and channels-last layers: their grid
            item = QTreeWidgetItem([short, layer.type, format_shape(layer.output_shape) + grid])
            item.setData(0, Qt.ItemDataRole.UserRole, layer.name)
            item.setToolTip(0, f"{layer.name} ({layer.parameters:,} parameters)" + (" - click to use for Grad-CAM" if layer.name in self.conv_layers else ""))
            for column in (1, 2):  # cut columns keep their full text in the tooltip
                item.setToolTip(column, item.text(column))
            parent = parents.get(parent_name)
            (parent.addChild(item) if parent is not None else self.tree.addTopLevelItem(item))
            parents[layer.name] = item
        self.tree.expandToDepth(0)
        for column in range(3):
            self.tree.resizeColumnToContents(column)
        self.prediction.clear()

    def mark_layer(self, name: str) -> None:
        for item in self.tree.findItems("*", Qt.MatchFlag.MatchWildcard | Qt.MatchFlag.MatchRecursive):
            font = item.font(0)
            font.setBold(item.data(0, Qt.ItemDataRole.UserRole) == name)
            item.setFont(0, font)

    def show_prediction(self, top: list[tuple[str, float]]) -> None:
        self.prediction.clear()
        for index, (label, probability) in enumerate(top):
            item = QTreeWidgetItem([label, f"{probability:.1%}"])
            if index == 0:
                font = item.font(0)
                font.setBold(True)
                item.setFont(0, font)
                item.setFont(1, font)
            self.prediction.addTopLevelItem(item)
        self.prediction.resizeColumnToContents(0)
        rows = max(1, len(top))
        height = self.prediction.header().sizeHint().height() + rows * max(self.prediction.sizeHintForRow(0), 16) + 2 * self.prediction.frameWidth() + 2
        self.prediction.setMaximumHeight(height)
