"""Model > Open Python class...: a model class of the user's own code, with optional weights and
constructor arguments.

The file is only read and parsed here (Python's ``ast``), never run: the classes it defines and
their constructors' arguments are listed from its text. Loading the model runs the file, as
running the user's own script would; the dialog says so before the user confirms.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox,
    QDialog,
    QDialogButtonBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QStyle,
    QVBoxLayout,
    QWidget,
)

from engine.core.errors import UserError
from engine.core.requests import parse_model_args

PYTHON_FILTER = "Python files (*.py);;All files (*)"
WEIGHTS_FILTER = "Weights (*.pth *.pt *.safetensors *.bin *.ckpt);;All files (*)"
MAX_SOURCE_BYTES = 4 * 2**20  # a model definition, not a data file
# Base classes that make a torch module (by their last name: nn.Module, torch.nn.Module,
# pl.LightningModule, nn.Sequential ...).
MODULE_BASES = {"Module", "Sequential", "ModuleList", "ModuleDict", "LightningModule"}
# Bases that certainly do not (a class deriving only from these is not offered).
PLAIN_BASES = {"object", "Exception", "Enum", "IntEnum", "NamedTuple", "TypedDict", "Protocol", "ABC", "Dataset", "IterableDataset", "Generic"}
WARNING = (
    "<b>Loading runs {name}.</b> Its code runs in Sensiscope exactly as it would if you ran the "
    "script yourself: it can do anything your user account can (read, change or delete files). "
    "Open only code you wrote or trust. Nothing in it has run yet."
)


@dataclass(frozen=True)
class ClassInfo:
    """A class the file defines: its name, whether it is surely a torch module, its constructor."""

    name: str
    module: bool  # derives from nn.Module (directly or through classes of the same file)
    signature: str  # the constructor's arguments as written, e.g. "num_classes=10, width=16"
    required: tuple[str, ...]  # arguments without a default
    bases: str  # as written, e.g. "nn.Module"


def _base_name(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Subscript):  # Generic[T], nn.Module[...] in stubs
        return _base_name(node.value)
    return ""


def _signature(node: ast.ClassDef) -> tuple[str, tuple[str, ...]]:
    init = next((item for item in node.body if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == "__init__"), None)
    if init is None:
        return "", ()
    args = init.args
    positional = [*args.posonlyargs, *args.args][1:]  # without self
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    parts, required = [], []
    for arg, default in zip(positional, defaults, strict=True):
        parts.append(arg.arg if default is None else f"{arg.arg}={ast.unparse(default)}")
        if default is None:
            required.append(arg.arg)
    if args.vararg is not None:
        parts.append(f"*{args.vararg.arg}")
    elif args.kwonlyargs:
        parts.append("*")
    for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
        parts.append(arg.arg if default is None else f"{arg.arg}={ast.unparse(default)}")
        if default is None:
            required.append(arg.arg)
    if args.kwarg is not None:
        parts.append(f"**{args.kwarg.arg}")
    return ", ".join(parts), tuple(required)


def read_classes(path: str | Path) -> list[ClassInfo]:
    """The classes a Python file defines at its top level that may be models: the nn.Module
    subclasses first, then the classes whose bases come from elsewhere (not known here). Read
    and parsed, never run; a file that cannot be parsed raises UserError naming the line."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_SOURCE_BYTES:
            raise UserError(f"{path.name}: {size / 2**20:.1f} MB is too large for a Python file defining a model")
        source = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        tree = ast.parse(source, filename=path.name)
    except SyntaxError as exc:
        raise UserError(f"{path.name}, line {exc.lineno}: {exc.msg}; fix the file, then open it again") from None
    except ValueError as exc:  # null bytes: not a Python file
        raise UserError(f"{path.name}: not a Python source file ({exc})") from None
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}

    def is_module(name: str, seen: frozenset = frozenset()) -> bool:
        for base in classes[name].bases:
            base_name = _base_name(base)
            if base_name in MODULE_BASES:
                return True
            if base_name in classes and base_name not in seen and is_module(base_name, seen | {name}):
                return True
        return False

    def unknown_base(name: str) -> bool:
        bases = [_base_name(base) for base in classes[name].bases]
        return any(b and b not in PLAIN_BASES and b not in classes for b in bases)

    def signature_of(name: str, seen: frozenset = frozenset()) -> tuple[str, tuple[str, ...]] | None:
        """The constructor's arguments; a class without __init__ has its first base's of this file."""
        node = classes[name]
        if any(isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name == "__init__" for item in node.body):
            return _signature(node)
        for base in node.bases:
            base_name = _base_name(base)
            if base_name in classes and base_name not in seen:
                return signature_of(base_name, seen | {name})
        return None

    found = []
    for name in classes:
        module = is_module(name)
        if module or unknown_base(name):
            # No __init__ in this file: nn.Module's takes nothing; another base's is not known here.
            plain = all(_base_name(base) == "Module" for base in classes[name].bases)
            signature, required = signature_of(name) or ("" if plain else "...", ())
            node = classes[name]
            found.append(ClassInfo(name, module, signature, required, ", ".join(ast.unparse(base) for base in node.bases)))
    return sorted(found, key=lambda info: not info.module)  # stable: file order within each group


def sidecar_args(weights: str) -> dict | None:
    """The ``model_args`` of the sidecar JSON beside a weights file, when it has them."""
    if not weights:
        return None
    sidecar = Path(weights).with_suffix(".json")
    try:
        if not sidecar.is_file() or sidecar.stat().st_size > 2**20:
            return None
        value = json.loads(sidecar.read_text(encoding="utf-8")).get("model_args")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, dict) and value else None


class ClassDialog(QDialog):
    """Choose a .py file, one of its classes, optional weights and constructor arguments."""

    def __init__(self, parent: QWidget | None = None, path: str = "", class_name: str = "", weights: str = "", model_args: dict | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Open a model class of your code")
        self.setStyleSheet("QLabel#error { color: palette(bright-text); font-weight: bold; }")
        self.classes: list[ClassInfo] = []
        self.model_args: dict = {}
        self.file_error = ""  # the file cannot be read or parsed, or defines no model class
        self.args_error = ""  # the arguments are no JSON object of names and values

        warning_row = self._warning_row()
        self.file_edit = QLineEdit()
        self.file_edit.setPlaceholderText("path/to/net.py")
        self.file_edit.setToolTip("The Python file that defines your model class; it is read here and run only when you press Load")
        self.file_edit.editingFinished.connect(lambda: self.set_file(self.file_edit.text()))
        self.file_button = QPushButton("Browse...")
        self.file_button.clicked.connect(self._choose_file)
        file_row = QHBoxLayout()
        file_row.addWidget(self.file_edit, 1)
        file_row.addWidget(self.file_button)

        self.class_box = QComboBox()
        self.class_box.setToolTip("The classes the file defines that derive from torch.nn.Module (classes whose base comes from another file are listed after them)")
        self.class_box.currentIndexChanged.connect(self._class_chosen)
        self.signature_label = QLabel()
        self.signature_label.setObjectName("hint")
        self.signature_label.setWordWrap(True)

        weights_row = self._weights_row()
        self.args_edit = QLineEdit()
        self.args_edit.setPlaceholderText('{"num_classes": 10}')
        self.args_edit.setToolTip("Constructor arguments as a JSON object of names and values; empty: the defaults (or the model_args of the sidecar JSON beside the weights)")
        self.args_edit.textChanged.connect(self._update)
        self.args_label = QLabel()
        self.args_label.setWordWrap(True)
        self.args_label.setObjectName("hint")
        self.error_label = QLabel()  # what keeps Load disabled
        self.error_label.setWordWrap(True)
        self.error_label.setObjectName("error")
        self.error_label.hide()

        form = QFormLayout()
        form.addRow("File", file_row)
        form.addRow("Class", self.class_box)
        form.addRow("", self.signature_label)
        form.addRow("Weights", weights_row)
        form.addRow("Arguments", self.args_edit)
        form.addRow("", self.args_label)

        self.buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        self.ok_button = self.buttons.button(QDialogButtonBox.StandardButton.Ok)
        self.buttons.accepted.connect(self.accept)
        self.buttons.rejected.connect(self.reject)

        layout = QVBoxLayout(self)
        layout.addLayout(warning_row)
        layout.addSpacing(6)
        layout.addLayout(form)
        layout.addWidget(self.error_label)
        layout.addWidget(self.buttons)
        self.resize(560, self.sizeHint().height())

        if weights:
            self.weights_edit.setText(weights)
        if model_args:
            self.args_edit.setText(json.dumps(model_args))
        self.set_file(path, class_name)

    def _warning_row(self) -> QHBoxLayout:
        """The warning icon and the sentence that loading runs the file."""
        icon = QLabel()
        icon.setPixmap(self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxWarning).pixmap(32, 32))
        icon.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.warning = QLabel()
        self.warning.setWordWrap(True)
        self.warning.setTextFormat(Qt.TextFormat.RichText)
        row = QHBoxLayout()
        row.addWidget(icon)
        row.addWidget(self.warning, 1)
        return row

    def _weights_row(self) -> QHBoxLayout:
        self.weights_edit = QLineEdit()
        self.weights_edit.setPlaceholderText("optional: a state dict (.pth/.pt) or .safetensors; none: random weights")
        self.weights_edit.setToolTip("Weights for the class: a state dict saved with torch.save(model.state_dict(), ...) (read without unpickling objects) or a .safetensors file")
        self.weights_edit.textChanged.connect(self._update)
        self.weights_button = QPushButton("Browse...")
        self.weights_button.clicked.connect(self._choose_weights)
        self.clear_weights_button = QPushButton("Clear")
        self.clear_weights_button.clicked.connect(self.weights_edit.clear)
        row = QHBoxLayout()
        row.addWidget(self.weights_edit, 1)
        row.addWidget(self.weights_button)
        row.addWidget(self.clear_weights_button)
        return row

    # ---------------------------------------------------------------- choices
    def _choose_file(self) -> None:
        start = str(Path(self.file_edit.text()).parent) if self.file_edit.text() else ""
        path, _ = QFileDialog.getOpenFileName(self, "Open the Python file of your model class", start, PYTHON_FILTER)
        if path:
            self.set_file(path)

    def _choose_weights(self) -> None:
        start = str(Path(self.weights_edit.text() or self.file_edit.text()).parent) if (self.weights_edit.text() or self.file_edit.text()) else ""
        path, _ = QFileDialog.getOpenFileName(self, "Weights for the class", start, WEIGHTS_FILTER)
        if path:
            self.weights_edit.setText(path)

    def set_file(self, path: str, class_name: str = "") -> None:
        """Read the file's classes (parsed, not run) into the class box; ``class_name`` is chosen when listed."""
        path = path.strip()
        self.file_edit.setText(path)
        self.classes = []
        self.class_box.blockSignals(True)
        self.class_box.clear()
        self.file_error = ""
        if path:
            try:
                self.classes = read_classes(path)
            except UserError as exc:
                self.file_error = str(exc)
            else:
                if not self.classes:
                    self.file_error = f"{Path(path).name} defines no class deriving from torch.nn.Module"
        for info in self.classes:
            self.class_box.addItem(info.name if info.module else f"{info.name} (base {info.bases}: not checked)", info.name)
            self.class_box.setItemData(self.class_box.count() - 1, f"class {info.name}({info.bases})", Qt.ItemDataRole.ToolTipRole)
        names = [info.name for info in self.classes]
        if class_name in names:
            self.class_box.setCurrentIndex(names.index(class_name))
        self.class_box.blockSignals(False)
        name = Path(path).name if path else "the file"
        self.warning.setText(WARNING.format(name=name))
        self.ok_button.setText(f"Run {name} and load" if path else "Load")
        self._class_chosen()

    def _class_chosen(self, *_args) -> None:
        info = self.chosen_class()
        if info is None:
            self.signature_label.setText("" if self.file_error else "Choose the Python file that defines your model.")
        else:
            required = f"; needs {', '.join(info.required)}" if info.required else ""
            self.signature_label.setText(f"{info.name}({info.signature}){required}")
        self._update()

    def chosen_class(self) -> ClassInfo | None:
        index = self.class_box.currentIndex()
        return self.classes[index] if 0 <= index < len(self.classes) else None

    def _update(self, *_args) -> None:
        """Check the arguments (a JSON object, as the engine reads them) and enable Load when all is set."""
        text = self.args_edit.text().strip()
        self.model_args, self.args_error = {}, ""
        try:
            self.model_args = parse_model_args(text, "Arguments")
        except UserError as exc:
            self.args_error = str(exc)
        from_sidecar = sidecar_args(self.weights_edit.text().strip())
        if not text and from_sidecar:
            self.args_label.setText(f"Empty: the sidecar beside the weights gives {json.dumps(from_sidecar)}")
        elif not text:
            self.args_label.setText("Empty: the constructor's defaults")
        else:
            self.args_label.setText("")
        error = self.file_error or self.args_error
        self.error_label.setText(error)
        self.error_label.setVisible(bool(error))
        self.ok_button.setEnabled(self.chosen_class() is not None and not error)

    # ---------------------------------------------------------------- result
    def spec(self) -> str:
        """``/absolute/path/net.py:ClassName`` for the chosen class ("" when none)."""
        info = self.chosen_class()
        if info is None or not self.file_edit.text().strip():
            return ""
        return f"{Path(self.file_edit.text().strip()).expanduser().resolve()}:{info.name}"

    def weights(self) -> str:
        text = self.weights_edit.text().strip()
        return str(Path(text).expanduser().resolve()) if text else ""

    def accept(self) -> None:
        self._update()
        if self.ok_button.isEnabled():
            super().accept()
