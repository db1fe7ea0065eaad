"""Results dock: the records of a result store, images x methods with their metrics, sortable by
any column and filtered by method; selecting a row shows that image's stored maps in the grid."""

from __future__ import annotations

import math

from PySide6.QtCore import QAbstractTableModel, QItemSelectionModel, QModelIndex, QSortFilterProxyModel, Qt, Signal
from PySide6.QtWidgets import QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView, QLabel, QPushButton, QTableView, QVBoxLayout, QWidget

from ..store_data import COLUMN_TITLES, METRIC_COLUMNS, StoreData

SORT_ROLE = Qt.ItemDataRole.UserRole
RECORD_ROLE = Qt.ItemDataRole.UserRole + 1
ALL_METHODS = "All methods"
HINT = "No result store is open. File > Open result store... opens one (a folder made by main.py batch or evaluate --store); File > Run batch on folder... makes one from the open folder."
TIPS = {
    "pointing": "Pointing game: 1 when the map's maximum falls in the lesion mask (empty without a mask)",
    "energy": "Share of the map's positive mass inside the mask",
    "iou": "Intersection over union of the map's top pixels and the mask",
    "deletion_auc": "Area under the deletion curve: lower is better (the score falls fast as top pixels go)",
    "insertion_auc": "Area under the insertion curve: higher is better",
    "road_morf": "ROAD, most relevant first: lower is better",
    "road_lerf": "ROAD, least relevant first: higher is better",
    "stability": "Spearman correlation of the maps of a stochastic method's repeated runs (pertmap with repeats >= 2)",
    "time_s": "Seconds the method took for this image when it ran",
}


def cell_text(column: str, value) -> str:
    if value is None:
        return ""
    if column == "pointing":
        return "hit" if value >= 0.5 else "miss"
    if column == "time_s":
        return f"{value:.2f}"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


class RecordsModel(QAbstractTableModel):
    """One row per stored (image, method) pair."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.rows: list[dict] = []
        self.columns: list[str] = []

    def set_records(self, rows: list[dict], columns: list[str]) -> None:
        self.beginResetModel()
        self.rows, self.columns = list(rows), list(columns)
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802, B008 - Qt's names
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: N802, B008 - Qt's names
        return 0 if parent.isValid() else len(self.columns)

    def data(self, index: QModelIndex, role: int = Qt.ItemDataRole.DisplayRole):
        if not index.isValid():
            return None
        record, column = self.rows[index.row()], self.columns[index.column()]
        value = record.get(column)
        if role == Qt.ItemDataRole.DisplayRole:
            return cell_text(column, value)
        if role == SORT_ROLE:
            return value
        if role == RECORD_ROLE:
            return record
        if role == Qt.ItemDataRole.TextAlignmentRole and column in METRIC_COLUMNS:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def headerData(self, section: int, orientation: Qt.Orientation, role: int = Qt.ItemDataRole.DisplayRole):  # noqa: N802 - Qt's name
        if orientation != Qt.Orientation.Horizontal or not 0 <= section < len(self.columns):
            return None
        column = self.columns[section]
        if role == Qt.ItemDataRole.DisplayRole:
            return COLUMN_TITLES.get(column, column)
        if role == Qt.ItemDataRole.ToolTipRole:
            return TIPS.get(column)
        return None


class RecordsProxy(QSortFilterProxyModel):
    """Sorts numbers as numbers (a missing value last either way round) and keeps one method's rows."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.method = ""
        self.setSortRole(SORT_ROLE)

    def set_method(self, method: str) -> None:
        self.beginFilterChange()
        self.method = method
        self.endFilterChange(QSortFilterProxyModel.Direction.Rows)

    def filterAcceptsRow(self, source_row: int, source_parent: QModelIndex) -> bool:  # noqa: N802 - Qt's name
        return not self.method or self.sourceModel().rows[source_row].get("method") == self.method

    def lessThan(self, left: QModelIndex, right: QModelIndex) -> bool:  # noqa: N802 - Qt's name
        a, b = left.data(SORT_ROLE), right.data(SORT_ROLE)
        missing_a = a is None or (isinstance(a, float) and math.isnan(a))
        missing_b = b is None or (isinstance(b, float) and math.isnan(b))
        if missing_a or missing_b:
            ascending = self.sortOrder() == Qt.SortOrder.AscendingOrder
            return (not missing_a and missing_b) == ascending and missing_a != missing_b
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return a < b
        return str(a) < str(b)


class StorePanel(QWidget):
    image_selected = Signal(int, str)  # image index in the store, method of the row
    open_requested = Signal()
    refresh_requested = Signal()
    batch_requested = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.data: StoreData | None = None
        self.current: tuple[int, str] | None = None
        self.model = RecordsModel(self)
        self.proxy = RecordsProxy(self)
        self.proxy.setSourceModel(self.model)
        self.summary = QLabel(HINT)
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.method_box = QComboBox()
        self.method_box.setToolTip("Show the rows of one method")
        self.method_box.addItem(ALL_METHODS)
        self.method_box.currentTextChanged.connect(lambda text: self.proxy.set_method("" if text == ALL_METHODS else text))
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.sortByColumn(-1, Qt.SortOrder.AscendingOrder)  # the store's order until a header is clicked
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Interactive)
        self.table.horizontalHeader().setStretchLastSection(False)
        self.table.selectionModel().currentRowChanged.connect(self._row_changed)
        self.open_button = QPushButton("Open store...")
        self.open_button.clicked.connect(self.open_requested)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("Read the store again (a run writes its results as they finish)")
        self.refresh_button.clicked.connect(self.refresh_requested)
        self.batch_button = QPushButton("Run batch...")
        self.batch_button.setToolTip("Explain and score every image of the open folder into a result store")
        self.batch_button.clicked.connect(self.batch_requested)
        bar = QHBoxLayout()
        bar.addWidget(QLabel("Show:"))
        bar.addWidget(self.method_box)
        bar.addStretch(1)
        for button in (self.open_button, self.refresh_button, self.batch_button):
            bar.addWidget(button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.summary)
        layout.addLayout(bar)
        layout.addWidget(self.table, 1)
        self.refresh_button.setEnabled(False)

    # ---------------------------------------------------------------- showing a store
    def show_store(self, data: StoreData) -> None:
        """Show a store's records; the same store again (a refresh) keeps the sort, filter and row."""
        same = self.data is not None and self.data.folder == data.folder
        self.data = data
        self.summary.setText(data.summary())
        self.summary.setToolTip(data.folder)
        methods = data.methods
        chosen = self.method_box.currentText() if same else ALL_METHODS
        self.method_box.blockSignals(True)
        self.method_box.clear()
        self.method_box.addItems([ALL_METHODS, *methods])
        self.method_box.setCurrentText(chosen if chosen in methods else ALL_METHODS)
        self.method_box.blockSignals(False)
        self.proxy.set_method("" if self.method_box.currentText() == ALL_METHODS else self.method_box.currentText())
        if not same:
            self.current = None
        self.model.set_records(data.rows, data.columns())
        self.table.resizeColumnsToContents()
        self.refresh_button.setEnabled(True)
        if self.current is not None:
            self._select_quietly(self.current)

    def _select_quietly(self, key: tuple[int, str]) -> None:
        for row in range(self.proxy.rowCount()):
            record = self.proxy.index(row, 0).data(RECORD_ROLE)
            if (record["image_index"], record["method"]) == key:
                self.table.selectionModel().blockSignals(True)
                self.table.selectionModel().setCurrentIndex(self.proxy.index(row, 0), QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
                self.table.selectionModel().blockSignals(False)
                return

    def select_row(self, row: int) -> None:
        """Select a row of the table as it is sorted and filtered now (as a click does)."""
        self.table.selectionModel().setCurrentIndex(self.proxy.index(row, 0), QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)

    def shown_records(self) -> list[dict]:
        """The rows in the order and filter on screen."""
        return [self.proxy.index(row, 0).data(RECORD_ROLE) for row in range(self.proxy.rowCount())]

    def column_of(self, name: str) -> int:
        return self.model.columns.index(name)

    def _row_changed(self, current: QModelIndex, _previous: QModelIndex) -> None:
        if not current.isValid():
            return
        record = current.data(RECORD_ROLE)
        key = (int(record["image_index"]), str(record["method"]))
        self.current = key
        self.image_selected.emit(*key)
