"""The comparison grid: one MapCell per analysis, shared display settings, linked zoom and pan."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QCheckBox, QComboBox, QGridLayout, QHBoxLayout, QLabel, QMenu, QScrollArea, QSlider, QToolButton, QVBoxLayout, QWidget

from .. import colours
from .map_view import AnalysisRequest, MapCell, map_levels

SCALES = ("own scales", "shared scale", "shared, normalised")
OWN, SHARED, NORMALISED = range(3)
SCALE_TIP = (
    "Each map's own range; one absolute scale for every map (to compare values of one method); "
    "or each map divided by its largest absolute value, on one 0-1 scale (to compare methods whose values differ in size)"
)


class ColormapBox(QComboBox):
    """The colour map choice; a name an older session saved is shown as its nearest new one."""

    def setCurrentText(self, text: str) -> None:  # noqa: N802 - Qt's name
        super().setCurrentText(colours.choice_name(text))


class MapGrid(QWidget):
    """Cells laid out in a grid with a toolbar for the colour map, opacity and colour scale."""

    rerun_requested = Signal(object)  # MapCell
    export_requested = Signal(object)  # MapCell: export it as a figure
    cell_removed = Signal(object)  # MapCell
    order_changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cells: list[MapCell] = []
        self.selected: MapCell | None = None  # the cell last clicked (copy, remove)
        self._next_id = 1
        # How a click on a cell's close button or on Clear all removes cells: (cells, is_clear_all).
        # The window routes it through its undo stack; alone, the grid removes them at once.
        self.remover = lambda cells, _clear_all: [self.remove_cell(cell) for cell in cells]

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(self._build_toolbar())
        self.placeholder = QLabel("Maps appear here.\nChoose an input and a method, then press Run.")
        self.placeholder.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.placeholder.setObjectName("placeholder")
        self.grid_host = QWidget()
        self.grid = QGridLayout(self.grid_host)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(6)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(self.grid_host)
        # In shared-scale mode one colour bar beside the grid replaces the cells' identical ones.
        self.shared_bar = pg.ColorBarItem(values=(0.0, 1.0), colorMap=None, interactive=False, width=14)  # coloured when shown (see MapCell)
        self.shared_bar_host = pg.GraphicsLayoutWidget()
        self.shared_bar_host.setFixedWidth(78)
        self.shared_bar_host.setToolTip("The colour scale shared by every map")
        self.shared_bar_host.addItem(self.shared_bar)
        self.shared_bar_host.hide()
        body = QHBoxLayout()
        body.setContentsMargins(0, 0, 0, 0)
        body.addWidget(self.placeholder, 1)
        body.addWidget(scroll, 1)
        body.addWidget(self.shared_bar_host)
        layout.addLayout(body, 1)
        self.scroll = scroll
        self._relayout()

    def _build_toolbar(self) -> QHBoxLayout:
        """The display settings every cell shares, and Fit and Clear."""
        self.colormap_box = ColormapBox()
        self.colormap_box.addItems(colours.CHOICES)
        self.colormap_box.setToolTip(colours.TIP)
        self.opacity_slider = QSlider(Qt.Orientation.Horizontal)
        self.opacity_slider.setRange(0, 100)
        self.opacity_slider.setValue(60)
        self.opacity_slider.setMinimumWidth(90)
        self.opacity_slider.setMaximumWidth(160)
        self.opacity_slider.setToolTip("Opacity of the maps over their images")
        self.scale_box = QComboBox()
        self.scale_box.addItems(SCALES)
        self.scale_box.setToolTip(SCALE_TIP)
        self.mask_box = QCheckBox("mask outline")
        self.mask_box.setChecked(True)
        self.mask_box.setToolTip("Draw the ground-truth mask's outline where the input has one")
        self.regions_box = QCheckBox("regions")
        self.regions_box.setChecked(True)
        self.regions_box.setToolTip("Draw the outlines of the regions a Sobol map was computed on")
        self.regions_box.toggled.connect(self.refresh_display)
        self.follow_box = QCheckBox("follow input")
        self.follow_box.setChecked(True)
        self.follow_box.setToolTip("Run every map again when another input is selected")
        self.fit_button = QToolButton()
        self.fit_button.setText("Fit")
        self.fit_button.setToolTip("Reset zoom and pan of all maps")
        self.fit_button.clicked.connect(self.fit)
        self.clear_button = QToolButton()
        self.clear_button.setText("Clear all")
        self.clear_button.setToolTip("Remove every map")
        self.clear_button.clicked.connect(lambda: self.remover(list(self.cells), True))
        for widget in (self.colormap_box, self.scale_box):
            widget.currentIndexChanged.connect(self.refresh_display)
        self.opacity_slider.valueChanged.connect(self.refresh_display)
        self.mask_box.toggled.connect(self.refresh_display)
        toolbar = QHBoxLayout()
        toolbar.addWidget(QLabel("Colour map"))
        toolbar.addWidget(self.colormap_box)
        toolbar.addSpacing(8)
        toolbar.addWidget(QLabel("Opacity"))
        toolbar.addWidget(self.opacity_slider)
        toolbar.addSpacing(8)
        toolbar.addWidget(self.scale_box)
        toolbar.addWidget(self.mask_box)
        toolbar.addWidget(self.regions_box)
        toolbar.addWidget(self.follow_box)
        toolbar.addStretch(1)
        toolbar.addWidget(self.fit_button)
        toolbar.addWidget(self.clear_button)
        return toolbar

    def add_cell(self, request: AnalysisRequest, index: int | None = None) -> MapCell:
        cell = MapCell(self._next_id, request)
        self._next_id += 1
        cell.remove_requested.connect(lambda cell: self.remover([cell], False))
        cell.rerun_requested.connect(self.rerun_requested)
        cell.move_requested.connect(self.move_cell)
        cell.clicked.connect(self.select)
        cell.menu_requested.connect(self._show_menu)
        cell.show_colorbar = self.scale_box.currentIndex() != 1
        cell.colorbar.setVisible(cell.show_colorbar and cell.has_map())
        self.cells.insert(len(self.cells) if index is None else min(index, len(self.cells)), cell)
        self._relayout()
        return cell

    def cell_menu(self, cell: MapCell) -> QMenu:
        """The right-click menu of a cell: export, its own colour map, run again, remove."""
        menu = QMenu(self)
        export = menu.addAction("Export this map as a figure...")
        export.setEnabled(cell.explanation is not None)
        export.triggered.connect(lambda: self.export_requested.emit(cell))
        colour_menu = menu.addMenu("Colour map of this map")
        for name in ("", *colours.CHOICES):
            action = colour_menu.addAction(name or "as the grid", lambda name=name: self.set_cell_colormap(cell, name))
            action.setCheckable(True)
            action.setChecked(cell.colormap_choice == name)
        menu.addSeparator()
        menu.addAction("Run again", lambda: self.rerun_requested.emit(cell))
        menu.addAction("Remove", lambda: self.remover([cell], False))
        return menu

    def _show_menu(self, cell: MapCell, position) -> None:
        self.select(cell)
        self.cell_menu(cell).exec(position)

    def set_cell_colormap(self, cell: MapCell, name: str) -> None:
        """A colour map for one cell only (empty: follow the grid's)."""
        cell.colormap_choice = name
        self.refresh_display()

    def remove_cell(self, cell: MapCell) -> None:
        if cell not in self.cells:
            return
        self.cells.remove(cell)
        if self.selected is cell:
            self.selected = None
        self.grid.removeWidget(cell)
        cell.hide()
        cell.deleteLater()
        self.cell_removed.emit(cell)
        self._relayout()
        self.refresh_display()

    def select(self, cell: MapCell | None) -> None:
        self.selected = cell
        for other in self.cells:
            other.set_selected(other is cell)

    def move_cell(self, cell: MapCell, step: int) -> bool:
        """Move a cell left (-1) or right (+1) in the grid; False at either end."""
        if cell not in self.cells:
            return False
        index = self.cells.index(cell)
        target = index + step
        if not 0 <= target < len(self.cells):
            return False
        self.cells.insert(target, self.cells.pop(index))
        self._relayout()
        self.order_changed.emit()
        return True

    def clear(self) -> None:
        for cell in list(self.cells):
            self.remove_cell(cell)

    def finished_cells(self) -> list[MapCell]:
        return [cell for cell in self.cells if cell.explanation is not None]

    def _relayout(self) -> None:
        for cell in self.cells:
            self.grid.removeWidget(cell)
        count = len(self.cells)
        columns = max(1, min(3, math.ceil(math.sqrt(count)))) if count != 2 else 2
        for index, cell in enumerate(self.cells):
            self.grid.addWidget(cell, index // columns, index % columns)
            cell.link_to(self.cells[0] if index else None)
            cell.left_button.setEnabled(index > 0)
            cell.right_button.setEnabled(index < count - 1)
        for column in range(3):
            self.grid.setColumnStretch(column, 1 if column < columns else 0)
        self.placeholder.setVisible(not count)
        self.scroll.setVisible(bool(count))
        QTimer.singleShot(0, self.fit)  # once the new layout has its sizes: maps fill their cells again

    def refresh_display(self, *_args) -> None:
        shared = self.scale_box.currentIndex() in (SHARED, NORMALISED)
        normalise = self.scale_box.currentIndex() == NORMALISED
        done = [cell for cell in self.finished_cells() if cell.has_map()]
        levels = None
        if shared and done:
            levels = map_levels([cell.explanation.map for cell in done]) if not normalise else (-1.0, 1.0) if any(float(np.nanmin(c.explanation.map)) < 0 for c in done) else (0.0, 1.0)
        name = self.colormap_box.currentText()
        for cell in done:
            cell.apply_display(name, self.opacity_slider.value() / 100, levels, self.mask_box.isChecked(), normalise, self.regions_box.isChecked())
        for cell in self.cells:
            cell.show_colorbar = not shared
            cell.colorbar.setVisible(not shared and cell.has_map())
        self.shared_bar_host.setVisible(levels is not None)
        if levels is not None:
            self.shared_bar.setColorMap(colours.colormap(colours.resolve(name, levels[0] < 0 < levels[1])))
            self.shared_bar.setLevels(levels)
            colours.label_bar(self.shared_bar, *levels, "map / max |map| (each map)" if normalise else "map value (all maps)")

    def visible_colour_bars(self) -> list:
        """The colour bars on screen: the shared one, or each finished cell's own."""
        bars = [cell.colorbar for cell in self.cells if cell.isVisible() and cell.colorbar.isVisible()]
        return bars + ([self.shared_bar] if self.shared_bar_host.isVisible() and self.shared_bar.isVisible() else [])

    def fit(self) -> None:
        if self.cells:
            self.cells[0].plot.autoRange(padding=0)
