"""Model panel: choose or open a model, labels and device; the layer tree; the current prediction."""

from __future__ import annotations

import json
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

from engine.core.vocab import MODEL_FILE_SUFFIXES, WEIGHT_SUFFIXES

from ..document import UNTRAINED_WORDS
from ..model_names import class_spec_parts, model_title
from ..widgets.elided_label import ElidedComboBox, elide
from ..workspace import DEMO_MODEL
from .messages_panel import gui_words

# The files the engine loads; torch.export programs (.pt2) too, in a filter of their own while the
# engine's list of suffixes lacks them.
_EXPORTED = "" if ".pt2" in MODEL_FILE_SUFFIXES else ";;torch.export programs (*.pt2)"
MODEL_FILTER = f"Models and weights ({' '.join('*' + suffix for suffix in MODEL_FILE_SUFFIXES)}){_EXPORTED};;All files (*)"
OPEN_TIP = (
    "A model file (TorchScript, ONNX, torch.export .pt2), or weights for the architecture chosen above: "
    "a state dict (.pt/.pth, read without unpickling objects) or .safetensors. Which one a .pt file holds is "
    "found by trying: a state dict loads as weights. Weights whose sidecar .json names their architecture "
    "load for that one."
)
CLASS_TIP = "A model class of your own code (net.py:ClassName) with optional weights and constructor arguments; loading runs that Python file"
MAX_SIDECAR_BYTES = 2**20
MAX_CUSTOM = 6  # models opened from files or classes, kept at the top of the Model box
LABELS_TIP = "Class names: a text file (one a line) or JSON; applied when the model is next loaded"
LABELS_FILTER = "Labels (*.txt *.json);;All files (*)"
TRUST_WARNING = (
    "The file <b>{name}</b> (in {folder}) is a pickle: it holds Python objects, not only weights.<br><br>"
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
    # spec, weights, labels, model_args, file_fallback (the weights are tried as a model file when no state dict)
    model_requested = Signal(str, str, str, object, bool)
    class_requested = Signal(str, str, str, object)  # Python file, class name, weights, model_args: asks first (runs code)
    device_changed = Signal(str)
    layer_chosen = Signal(str)

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.device_specs: list[str] = []
        self.conv_layers: set[str] = set()
        self.labels_path = ""
        self.last_file = ""
        self.loaded_ref: dict | None = None  # how the loaded model was loaded (the box returns to it)
        self.loaded_html = None  # the source text of the loaded model (shown again after a failed or cancelled load)
        self.loaded_tip = ""
        self.pending_files: list[tuple] = []  # files opened before the engine listed the models

        self.model_box = QComboBox()
        self.model_box.setToolTip(
            "The model: the ultrasound demo, a torchvision architecture (random weights unless its ImageNet weights are cached; "
            "Open file... loads weights for it), or one opened from a file or a Python class (at the top)"
        )
        self.model_box.setMinimumContentsLength(14)
        self.load_button = QPushButton("Load")
        self.load_button.clicked.connect(self._load_builtin)
        self.open_button = QPushButton("Open file...")
        self.open_button.setToolTip(OPEN_TIP)
        self.open_button.clicked.connect(self._choose_file)
        self.class_button = QPushButton("Python class...")
        self.class_button.setToolTip(CLASS_TIP)
        self.class_button.clicked.connect(lambda: self.class_requested.emit("", "", "", None))
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
        files.addWidget(self.class_button)
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

        self._build_trees()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(form)
        layout.addWidget(self.busy)
        layout.addWidget(self.source_label)
        layout.addWidget(self.untrained_label)
        layout.addWidget(self.prediction)
        layout.addWidget(self.tree, 1)
        self.set_enabled(False)

    def _build_trees(self) -> None:
        """The layer tree and the prediction list."""
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

    def set_enabled(self, enabled: bool) -> None:
        for widget in (self.model_box, self.load_button, self.open_button, self.class_button, self.labels_button, self.device_box):
            widget.setEnabled(enabled)

    def set_busy(self, busy: bool, text: str = "") -> None:
        self.busy.setVisible(busy)
        if text:
            self.source_html = None
            self.source_label.setText(text)
            self.source_label.setToolTip("")

    def load_failed(self, spec: str, weights: str, labels: str, message: str, current: str = "") -> None:
        """Leave "Loading..." for what happened; a labels file or a model file that failed is set aside,
        so that it does not come back with the next load (Labels... or Load). The Model box shows the
        model still loaded again."""
        self.set_busy(False)
        self.select_loaded()
        notes = []
        if labels and labels == self.labels_path:
            self.labels_path = ""
            self.labels_button.setToolTip(LABELS_TIP)
            notes.append(f"The labels file {Path(labels).name} was set aside; choose it again with Labels... if it was not the cause.")
        if self.last_file and self.last_file in (spec, weights):
            self.last_file = ""
        name = Path(weights).name if weights else model_title(spec)

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

    def load_cancelled(self) -> None:
        """A load was cancelled (and none follows it): the panel shows the loaded model again."""
        self.set_busy(False)
        self.select_loaded()
        if self.loaded_html is not None:
            self._set_source(self.loaded_html, self.loaded_tip)
        else:
            self.set_busy(False, "Loading was cancelled. Choose a model and press Load.")

    def set_engine(self, info) -> None:
        self.model_box.clear()
        self.model_box.addItems(info.models)
        if self.loaded_ref is not None:
            self.select_loaded()
        self.device_box.blockSignals(True)
        self.device_box.clear()
        self.device_specs = [d.spec for d in info.devices]
        self.device_box.addItems([d.label() for d in info.devices])
        if info.default_device in self.device_specs:
            self.device_box.setCurrentIndex(self.device_specs.index(info.default_device))
        self.device_box.blockSignals(False)
        self.set_enabled(True)
        self.set_busy(False, "Choose a model and press Load.")
        pending, self.pending_files = self.pending_files, []
        for args in pending:
            self.open_file(*args)

    # ---------------------------------------------------------------- requests
    def _load_builtin(self) -> None:
        """Load: the model chosen in the box (one opened from a file or class loads as it was opened)."""
        ref = self.model_box.currentData()
        if isinstance(ref, dict):
            self.model_requested.emit(ref["spec"], ref.get("weights", ""), self.labels_path, dict(ref.get("model_args") or {}), False)
        else:
            self.load_requested.emit(self.model_box.currentText(), "", self.labels_path, False)

    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open a model or weights file", "", MODEL_FILTER)
        if path:
            self.open_file(path)

    def chosen_architecture(self) -> tuple[str, dict] | None:
        """The model a weights file opened now goes with: the architecture chosen in the box, or the
        class (with its arguments) or architecture of a model opened before; None for the demo and
        for model files, which hold their own weights."""
        ref = self.model_box.currentData()
        if isinstance(ref, dict):
            if class_spec_parts(ref["spec"]) is not None:
                return ref["spec"], dict(ref.get("model_args") or {})
            return (ref["spec"], {}) if ref.get("weights") else None
        text = self.model_box.currentText()
        return (text, {}) if text and not text.startswith("demo:") else None

    def plan_file(self, path: str, architecture: str = "", model_args: dict | None = None, trust: bool = False) -> tuple:
        """What opening ``path`` does: ("class", file.py, class name, weights, model_args) for a Python file
        or weights whose sidecar names a class of the user's code (asked first: loading runs it), ("weights", architecture, path,
        model_args) for a weights file and an architecture chosen above (or ``architecture``), else
        ("file", path): a model file, or weights whose sidecar names their architecture."""
        if Path(path).suffix.lower() == ".py":  # the user's code: its class is chosen in the dialog, which asks first
            return ("class", path, "", "", None)
        sidecar = self._sidecar(path)
        chosen = (architecture, dict(model_args or {})) if architecture else self.chosen_architecture()
        if Path(path).suffix.lower() in WEIGHT_SUFFIXES and not trust and not sidecar.get("arch"):
            source = self._sidecar_class(path, sidecar)
            if source is not None and (chosen is None or chosen[0] != f"{source[0]}:{source[1]}"):
                args = sidecar.get("model_args") if isinstance(sidecar.get("model_args"), dict) else None
                return ("class", source[0], source[1], path, args)
            if chosen is not None:
                return ("weights", chosen[0], path, chosen[1])
        return ("file", path)

    def open_file(self, path: str, trust: bool = False, architecture: str = "", model_args: dict | None = None) -> None:
        """A model file, or weights for the architecture chosen above (or ``architecture``): decided by
        trying, a state dict is a weights file (see plan_file)."""
        if self.model_box.count() == 0:  # the engine has not listed the models yet: opened once it has
            self.pending_files.append((path, trust, architecture, model_args))
            return
        self.last_file = path
        plan = self.plan_file(path, architecture, model_args, trust)
        if plan[0] == "class":
            self.class_requested.emit(*plan[1:])
        elif plan[0] == "weights":
            self.model_requested.emit(plan[1], plan[2], self.labels_path, plan[3], True)
        else:
            self.load_requested.emit(path, "", self.labels_path, trust)

    @staticmethod
    def _sidecar(path: str) -> dict:
        """The JSON beside a file, when there is a readable one (the engine checks it field by field)."""
        sidecar = Path(path).with_suffix(".json")
        try:
            if sidecar.is_file() and sidecar.stat().st_size <= MAX_SIDECAR_BYTES:
                data = json.loads(sidecar.read_text(encoding="utf-8"))
                return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            pass
        return {}

    @staticmethod
    def _sidecar_class(path: str, sidecar: dict) -> tuple[str, str] | None:
        """(Python file, class name) of the class the sidecar says built the weights, when that file exists
        (a relative path: beside the sidecar, else from the current folder)."""
        model = sidecar.get("model")
        parts = class_spec_parts(model) if isinstance(model, str) else None
        if parts is None or not parts[0].lower().endswith(".py"):
            return None
        source = Path(parts[0]).expanduser()
        for candidate in ((source,) if source.is_absolute() else (Path(path).parent / source, source)):
            if candidate.is_file():
                return str(candidate.resolve()), parts[1]
        return None

    def confirm_trust(self, path: str) -> bool:
        """Ask before unpickling a file, naming the file that would be opened; the default answer is No."""
        file = Path(path)
        text = TRUST_WARNING.format(name=escape(file.name), folder=escape(str(file.parent.resolve()) if str(file.parent) else "."))
        box = QMessageBox(QMessageBox.Icon.Warning, f"Load the pickled file {file.name}?", text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self)
        box.setDefaultButton(QMessageBox.StandardButton.No)
        box.button(QMessageBox.StandardButton.Yes).setText("Load it, I trust this file")
        return box.exec() == QMessageBox.StandardButton.Yes

    def confirm_run_code(self, spec: str, why: str = "") -> bool:
        """Ask before running a Python file that something other than the user's own choice names (a
        session file: it may come from anyone); the default answer is No."""
        parts = class_spec_parts(spec)
        source, name = parts if parts is not None else (spec, "")
        text = (
            f"{escape(why)}<br><br>" if why else ""
        ) + (
            f"The model is the class <b>{escape(name)}</b> of <b>{escape(source)}</b>.<br><br>"
            "Loading it runs that Python file, as running the script yourself would: code from an untrusted "
            "source can do anything your user account can (read, change or delete files).<br><br>"
            "Load it only if you wrote it or trust its author."
        )
        box = QMessageBox(QMessageBox.Icon.Warning, "Run a Python file?", text, QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, self)
        box.setDefaultButton(QMessageBox.StandardButton.No)
        box.button(QMessageBox.StandardButton.Yes).setText(f"Run {Path(source).name} and load")
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
        notes = "".join(f"<br><i>{escape(gui_words(note))}</i>" for note in loaded.notes)
        rest = f"{classes}, {params:,} parameters, input {format_shape((1, *state.input_shape))}{notes}"
        ref = dict(state.ref) if state.ref else {"spec": loaded.spec, "weights": "", "model_args": {}}
        title = model_title(ref["spec"], ref.get("weights", ""))
        self.loaded_html = lambda width: f"<b>{self._fit(title, width)}</b>: {rest}"
        self.loaded_tip = f"{loaded.spec}\n{loaded.source}"
        self._set_source(self.loaded_html, self.loaded_tip)
        self.untrained_label.setVisible(UNTRAINED_WORDS in loaded.source)
        self.loaded_ref = ref
        self.select_loaded()
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

    # ---------------------------------------------------------------- the Model box
    def _builtin(self, ref: dict) -> bool:
        """A model the box lists by name: no weights file, no arguments."""
        return not ref.get("weights") and not ref.get("model_args") and (ref["spec"] == DEMO_MODEL or self.index_of_name(ref["spec"]) >= 0)

    def index_of_name(self, name: str) -> int:
        return next((i for i in range(self.model_box.count()) if self.model_box.itemData(i) is None and self.model_box.itemText(i) == name), -1)

    @staticmethod
    def _same(a: dict, b: dict) -> bool:
        key = ("spec", "weights", "model_args")
        return all((a.get(k) or None) == (b.get(k) or None) for k in key)

    def select_loaded(self) -> None:
        """Show the loaded model in the box: its name, or an entry at the top for a model opened from
        a file or a class (``DigitNet (net.py)``, ``resnet18 + weights.pth``); nothing when none is loaded."""
        ref = self.loaded_ref
        if ref is None:
            return
        box = self.model_box
        box.blockSignals(True)
        try:
            if self._builtin(ref):
                index = self.index_of_name(ref["spec"])
                if index >= 0:
                    box.setCurrentIndex(index)
                return
            custom = [i for i in range(box.count()) if isinstance(box.itemData(i), dict)]
            index = next((i for i in custom if self._same(box.itemData(i), ref)), -1)
            if index < 0:
                entry = {"spec": ref["spec"], "weights": ref.get("weights", ""), "model_args": dict(ref.get("model_args") or {})}
                box.insertItem(0, model_title(entry["spec"], entry["weights"]), entry)
                tip = "\n".join(part for part in (entry["spec"], entry["weights"] and f"weights: {entry['weights']}", entry["model_args"] and f"arguments: {json.dumps(entry['model_args'])}") if part)
                box.setItemData(0, tip, Qt.ItemDataRole.ToolTipRole)
                index = 0
                for extra in [i + 1 for i in custom][MAX_CUSTOM - 1:][::-1]:  # the oldest go
                    box.removeItem(extra)
            box.setCurrentIndex(index)
        finally:
            box.blockSignals(False)

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
