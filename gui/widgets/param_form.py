"""A form built from a method's parameter specs (engine.params.ParamSpec): one editor per field, the
few a user changes first in a "Basic" group, the rest in a collapsible "Advanced" group."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QValidator
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QLabel,
    QLineEdit,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

INT_LIMIT = 2**31 - 1
FLOAT_LIMIT = 1e12

# The parameters a user changes first, per method (shown in the dataclass's order); the rest go under "Advanced".
# A method not listed shows its first BASIC_FALLBACK fields as basic.
_CAM = ("layer",)
BASIC_PARAMS: dict[str, tuple[str, ...]] = {
    "actmax": ("targets", "init", "steps", "lr", "objective"),
    "local": ("window", "stride", "mode", "baseline"),
    "pertmap": ("steps", "patch", "lr", "repeats"),
    "ig": ("steps", "baseline"),
    "smoothgrad": ("base", "samples", "sigma"),
    "sobol": ("regions", "grid", "n", "index"),
    "rise": ("masks", "grid", "p"),
    "kernelshap": ("segmentation", "n_segments", "samples", "baseline"),
    "extremal": ("areas", "variant", "steps"),
    "ablationcam": _CAM,
    "eigencam": _CAM,
    "gradcam": _CAM,
    "gradcam++": _CAM,
    "guided-gradcam": _CAM,
    "hirescam": _CAM,
    "layercam": _CAM,
    "scorecam": _CAM,
    "xgradcam": _CAM,
}
BASIC_FALLBACK = 4


def basic_names(method: str, names: list[str]) -> list[str]:
    """The basic fields of ``method`` among its parameter ``names`` (the table's, or the first few)."""
    listed = [name for name in BASIC_PARAMS.get(method, ()) if name in names]
    return listed or names[:BASIC_FALLBACK]


def _decimals(spec) -> int:
    """Enough decimals to show the default and the lower bound (lr 1e-9, delta 1e-6 ...)."""
    values = [abs(v) for v in (spec.default, spec.low) if isinstance(v, (int, float)) and v]
    smallest = min(values) if values else 1.0
    digits = 3
    while smallest < 10 ** -digits and digits < 10:
        digits += 1
    return digits


class WheelOnFocus:
    """A wheel over an editor changes its value only once it has focus (clicked or tabbed into);
    otherwise the wheel scrolls the form, as users of long forms expect."""

    def wheelEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if self.hasFocus():
            super().wheelEvent(event)
        else:
            event.ignore()


class SpinBox(WheelOnFocus, QSpinBox):
    pass


class ChoiceBox(WheelOnFocus, QComboBox):
    pass


class NumberBox(WheelOnFocus, QDoubleSpinBox):
    """A spin box for floats that shows values compactly (0.02, 1e-09, 100), any magnitude."""

    def __init__(self) -> None:
        super().__init__()
        self.setDecimals(12)  # precision of the stored value; the text uses %g

    def textFromValue(self, value: float) -> str:  # noqa: N802 - Qt's name
        return f"{value:.6g}"

    def valueFromText(self, text: str) -> float:  # noqa: N802 - Qt's name
        try:
            return float(text)
        except ValueError:
            return self.value()

    def validate(self, text: str, pos: int):
        try:
            value = float(text)
        except ValueError:
            return QValidator.State.Intermediate, text, pos
        if self.minimum() <= value <= self.maximum():
            return QValidator.State.Acceptable, text, pos
        return QValidator.State.Intermediate, text, pos


class ParamForm(QWidget):
    """Editors for a list of ParamSpec; :meth:`values` gives a mapping ready for build_params.

    The basic fields (:data:`BASIC_PARAMS`) sit in the "Basic" group; the others in "Advanced", which
    starts collapsed and remembers, per method, whether the user opened it."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.specs: list = []
        self.editors: dict[str, QWidget] = {}
        self.layer_choices: list[str] = []  # the loaded model's layers: the layer field offers only these
        self.method = ""
        self.expanded: dict[str, bool] = {}  # method -> the Advanced group was left open
        self.basic_box = QGroupBox("Basic")
        self.basic_layout = self._form_layout(self.basic_box)
        self.advanced_button = QToolButton()
        self.advanced_button.setObjectName("advancedToggle")
        self.advanced_button.setCheckable(True)
        self.advanced_button.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.advanced_button.setAutoRaise(True)
        self.advanced_button.toggled.connect(self._toggle_advanced)
        self.advanced_box = QGroupBox()
        self.advanced_layout = self._form_layout(self.advanced_box)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.basic_box)
        layout.addWidget(self.advanced_button)
        layout.addWidget(self.advanced_box)
        self._toggle_advanced(False)

    @staticmethod
    def _form_layout(host: QWidget) -> QFormLayout:
        form = QFormLayout(host)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setRowWrapPolicy(QFormLayout.RowWrapPolicy.WrapLongRows)  # a narrow dock puts the editor under its label
        return form

    def set_specs(self, specs: list, values: dict[str, Any] | None = None, method: str = "") -> None:
        for form in (self.basic_layout, self.advanced_layout):
            while form.rowCount():
                form.removeRow(0)
        self.method = method
        self.specs = list(specs)
        self.editors = {}
        basic = set(basic_names(method, [spec.name for spec in self.specs]))
        for spec in self.specs:
            editor = self._editor_for(spec)
            editor.setToolTip(spec.help)
            editor.setObjectName(f"param_{spec.name}")
            label = QLabel(spec.name.replace("_", " "))
            label.setToolTip(spec.help)
            (self.basic_layout if spec.name in basic else self.advanced_layout).addRow(label, editor)
            self.editors[spec.name] = editor
        advanced = len(self.specs) - len(basic)
        self.basic_box.setVisible(bool(self.specs))
        self.advanced_button.setVisible(advanced > 0)
        self.advanced_button.setText(f"Advanced ({advanced})")
        self.advanced_button.setToolTip(f"{advanced} more parameter(s): " + ", ".join(s.name for s in self.specs if s.name not in basic))
        self.advanced_button.blockSignals(True)
        self.advanced_button.setChecked(self.expanded.get(method, False))
        self.advanced_button.blockSignals(False)
        self._show_advanced(advanced > 0 and self.advanced_button.isChecked())
        for name, value in (values or {}).items():
            self.set_value(name, value)

    def restore_expanded(self, methods) -> None:
        """Open the Advanced group of these methods (as the app was left), the shown one too."""
        self.expanded.update({str(name): True for name in methods})
        if self.method in self.expanded and not self.advanced_button.isHidden():
            self.advanced_button.setChecked(True)

    def expanded_methods(self) -> list[str]:
        return sorted(name for name, shown in self.expanded.items() if shown)

    def _toggle_advanced(self, checked: bool) -> None:
        if self.method:
            self.expanded[self.method] = checked
        self._show_advanced(checked)

    def _show_advanced(self, shown: bool) -> None:
        self.advanced_box.setVisible(shown)
        self.advanced_button.setArrowType(Qt.ArrowType.DownArrow if shown else Qt.ArrowType.RightArrow)

    def is_basic(self, name: str) -> bool:
        """The field sits in the Basic group (always visible)."""
        editor = self.editors.get(name)
        return editor is not None and self.basic_box.isAncestorOf(editor)

    def _editor_for(self, spec) -> QWidget:
        editor = self._strict_editor(spec)
        for_focus = editor if editor is not None else self._plain_editor(spec)
        if not isinstance(for_focus, (QLineEdit, QCheckBox)):
            for_focus.setFocusPolicy(Qt.FocusPolicy.StrongFocus)  # the wheel alone does not focus it
        return for_focus

    def _strict_editor(self, spec) -> QWidget | None:
        """The layer field as a list of the model's layers (never free text that fails at run time)."""
        if spec.name != "layer" or spec.choices or not self.layer_choices:
            return None
        editor = ChoiceBox()
        editor.addItem("(automatic)", "")
        for name in self.layer_choices:
            editor.addItem(name, name)
        editor.currentIndexChanged.connect(self.changed)
        return editor

    def _plain_editor(self, spec) -> QWidget:
        if spec.choices:
            editor = ChoiceBox()
            editor.addItems([str(c) for c in spec.choices])
            editor.setCurrentText(str(spec.default))
            editor.currentIndexChanged.connect(self.changed)
            return editor
        if spec.type is bool:
            editor = QCheckBox()
            editor.setChecked(bool(spec.default))
            editor.toggled.connect(self.changed)
            return editor
        if spec.type is int:
            editor = SpinBox()
            editor.setRange(int(spec.low) if spec.low is not None else -INT_LIMIT, int(min(spec.high, INT_LIMIT)) if spec.high is not None else INT_LIMIT)
            editor.setValue(int(spec.default))
            editor.valueChanged.connect(self.changed)
            return editor
        if spec.type is float:
            editor = NumberBox()
            editor.setRange(spec.low if spec.low is not None else -FLOAT_LIMIT, spec.high if spec.high is not None else FLOAT_LIMIT)
            editor.setValue(float(spec.default))
            editor.setSingleStep(abs(float(spec.default)) / 10 if spec.default else 10 ** -_decimals(spec))
            editor.valueChanged.connect(self.changed)
            return editor
        editor = QLineEdit(str(spec.default))
        editor.setPlaceholderText("(automatic)" if spec.default == "" else "")
        editor.textChanged.connect(self.changed)
        return editor

    def set_value(self, name: str, value: Any) -> bool:
        editor = self.editors.get(name)
        if editor is None:
            return False
        if isinstance(editor, QComboBox):
            index = editor.findData(str(value)) if editor.itemData(0) == "" else editor.findText(str(value))
            if index < 0:
                return False
            editor.setCurrentIndex(index)
        elif isinstance(editor, QCheckBox):
            editor.setChecked(bool(value))
        elif isinstance(editor, (QSpinBox, QDoubleSpinBox)):
            editor.setValue(value)
        else:
            editor.setText(str(value))
        return True

    def value(self, name: str) -> Any:
        editor = self.editors[name]
        if isinstance(editor, QComboBox):
            spec = next(s for s in self.specs if s.name == name)
            return spec.choices[editor.currentIndex()] if spec.choices else (editor.currentData() or "")
        if isinstance(editor, QCheckBox):
            return editor.isChecked()
        if isinstance(editor, (QSpinBox, QDoubleSpinBox)):
            return editor.value()
        return editor.text().strip()

    def values(self) -> dict[str, Any]:
        return {spec.name: self.value(spec.name) for spec in self.specs}

    def reset(self) -> None:
        for spec in self.specs:
            self.set_value(spec.name, spec.default)
