"""Qt models over a loaded CSV table (the rows, read lazily; per-column statistics) and small form helpers."""

from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QDoubleSpinBox, QFormLayout, QSpinBox, QTableView

MISSING_BRUSH = QBrush(QColor("#f6d7d7"))
TARGET_BRUSH = QBrush(QColor("#dfeaf7"))


def format_value(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{value:.6g}"
    return str(value)


class FrameModel(QAbstractTableModel):
    """The rows of a pandas frame; cells are formatted only when a view asks for them, so big tables open at once."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.names: list[str] = []
        self.columns: list[np.ndarray] = []
        self.missing: list[np.ndarray] = []
        self.rows = 0
        self.target = ""

    def set_frame(self, frame, target: str = "") -> None:
        self.beginResetModel()
        self.names = [str(c) for c in frame.columns]
        self.columns = [frame[c].to_numpy() for c in frame.columns]
        self.missing = [frame[c].isna().to_numpy() for c in frame.columns]
        self.rows = len(frame)
        self.target = target
        self.endResetModel()

    def set_target(self, target: str) -> None:
        self.target = target
        if self.rows:
            self.dataChanged.emit(self.index(0, 0), self.index(self.rows - 1, len(self.names) - 1))
            self.headerDataChanged.emit(Qt.Orientation.Horizontal, 0, len(self.names) - 1)

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt's name
        return 0 if parent.isValid() else self.rows

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt's name
        return 0 if parent.isValid() else len(self.names)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        row, column = index.row(), index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            return "" if self.missing[column][row] else format_value(self.columns[column][row])
        if role == Qt.ItemDataRole.BackgroundRole:
            if self.missing[column][row]:
                return MISSING_BRUSH
            if self.names[column] == self.target:
                return TARGET_BRUSH
        if role == Qt.ItemDataRole.TextAlignmentRole and np.issubdtype(self.columns[column].dtype, np.number):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):  # noqa: N802 - Qt's name
        if role != Qt.ItemDataRole.DisplayRole:
            return None
        if orientation == Qt.Orientation.Horizontal:
            name = self.names[section]
            return f"{name} (target)" if name == self.target else name
        return str(section + 1)


STAT_COLUMNS = ["Column", "Kind", "Missing", "Min", "Max", "Mean", "Std", "Categories"]


class StatsModel(QAbstractTableModel):
    """One row per column of the table: its kind, missing count and range or categories."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.infos: list = []  # engine.tables.ColumnInfo
        self.target = ""

    def set_columns(self, infos: list, target: str = "") -> None:
        self.beginResetModel()
        self.infos = list(infos)
        self.target = target
        self.endResetModel()

    def set_target(self, target: str) -> None:
        self.beginResetModel()
        self.target = target
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt's name
        return 0 if parent.isValid() else len(self.infos)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt's name
        return 0 if parent.isValid() else len(STAT_COLUMNS)

    def cell(self, row: int, column: int) -> str:
        info = self.infos[row]
        numeric = info.kind == "numeric"
        values = [
            info.name + ("  (target)" if info.name == self.target else ""),
            info.kind,
            str(info.missing),
            format_value(info.minimum) if numeric else "",
            format_value(info.maximum) if numeric else "",
            format_value(info.mean) if numeric else "",
            format_value(info.std) if numeric else "",
            "" if numeric else f"{len(info.categories)}: " + ", ".join(info.categories[:6]) + (" ..." if len(info.categories) > 6 else ""),
        ]
        return values[column]

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return self.cell(index.row(), index.column())
        if role == Qt.ItemDataRole.BackgroundRole:
            info = self.infos[index.row()]
            if index.column() == 2 and info.missing:
                return MISSING_BRUSH
            if info.name == self.target:
                return TARGET_BRUSH
        if role == Qt.ItemDataRole.TextAlignmentRole and 2 <= index.column() <= 6:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):  # noqa: N802 - Qt's name
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return STAT_COLUMNS[section]
        return None


def spin_box(low: int, high: int, value: int, tip: str) -> QSpinBox:
    spin = QSpinBox()
    spin.setRange(low, high)
    spin.setValue(value)
    spin.setToolTip(tip)
    return spin


def double_box(low: float, high: float, value: float, decimals: int, step: float, tip: str) -> QDoubleSpinBox:
    spin = QDoubleSpinBox()
    spin.setDecimals(decimals)
    spin.setRange(low, high)
    spin.setSingleStep(step)
    spin.setValue(value)
    spin.setToolTip(tip)
    return spin


def table_view(model) -> QTableView:
    view = QTableView()
    view.setModel(model)
    view.setAlternatingRowColors(True)
    view.setSelectionBehavior(QTableView.SelectionBehavior.SelectRows)
    view.verticalHeader().setDefaultSectionSize(22)
    view.horizontalHeader().setDefaultSectionSize(90)
    return view


def compact(form: QFormLayout) -> None:
    form.setContentsMargins(6, 4, 6, 6)
    form.setVerticalSpacing(3)
