"""Undo and redo of the map grid as commands on the document (a QUndoStack).

Removing maps (one, the selection or Clear all) and adding one by Run are commands: undoing a
removal puts the very analyses back where they were, results included, so a 35-second map is never
lost to a slip; undoing an addition removes the cell (and cancels its job).
"""

from __future__ import annotations

from PySide6.QtGui import QUndoCommand, QUndoStack
from PySide6.QtWidgets import QMessageBox

from .document import DONE, FAILED, PENDING, Analysis


class RemoveAnalyses(QUndoCommand):
    """Remove analyses (with their cells); undo puts them back at their places."""

    def __init__(self, controller, analyses: list[Analysis], text: str) -> None:
        super().__init__(text)
        self.controller = controller
        document = controller.document
        self.entries = sorted(((document.analyses.index(a), a) for a in analyses), key=lambda entry: entry[0])

    def redo(self) -> None:
        for _index, analysis in reversed(self.entries):
            cell = self.controller.cell_for(analysis)
            if cell is not None:
                self.controller.window.grid.remove_cell(cell)  # the grid tells the controller, which removes it from the document

    def undo(self) -> None:
        for index, analysis in self.entries:
            if analysis.status not in (DONE, FAILED):
                analysis.status = PENDING  # a run that was stopped by the removal runs again
            self.controller.reinsert(analysis, index)
        self.controller.run_pending()


class AddAnalysis(QUndoCommand):
    """A cell that Run added; its first redo happened already (the run itself)."""

    def __init__(self, controller, analysis: Analysis, text: str) -> None:
        super().__init__(text)
        self.controller = controller
        self.analysis = analysis
        self.index = controller.document.analyses.index(analysis)
        self.first = True

    def redo(self) -> None:
        if self.first:
            self.first = False
            return
        if self.analysis.status not in (DONE, FAILED):
            self.analysis.status = PENDING
        self.controller.reinsert(self.analysis, self.index)
        self.controller.run_pending()

    def undo(self) -> None:
        cell = self.controller.cell_for(self.analysis)
        if cell is not None:
            self.controller.window.grid.remove_cell(cell)


class UndoActions:
    """The window's undo stack and the removals that go through it."""

    def __init__(self, window) -> None:
        self.window = window
        self.stack = QUndoStack(window)

    def added(self, analysis: Analysis) -> None:
        self.stack.push(AddAnalysis(self.window.analyses, analysis, f"Add {analysis.request.method}"))

    def remove(self, cells: list, ask: bool = False) -> bool:
        """Remove the cells' analyses as one undoable step; with ``ask`` (Clear all) the user confirms first."""
        controller = self.window.analyses
        analyses = [a for a in (controller.analysis_of(cell) for cell in cells) if a is not None]
        loose = [cell for cell in cells if controller.analysis_of(cell) is None]
        for cell in loose:  # a cell the document never knew (nothing to undo)
            self.window.grid.remove_cell(cell)
        if not analyses:
            return bool(loose)
        if ask and not self.confirm_clear(len(analyses)):
            return False
        text = "Clear all maps" if ask else (f"Remove {analyses[0].request.method}" if len(analyses) == 1 else f"Remove {len(analyses)} maps")
        self.stack.push(RemoveAnalyses(controller, analyses, text))
        return True

    def confirm_clear(self, count: int) -> bool:
        buttons = QMessageBox.StandardButton
        box = QMessageBox(QMessageBox.Icon.Question, "Clear all maps?", f"Remove all {count} map(s)? Edit > Undo brings them back.", buttons.Yes | buttons.No, self.window)
        box.setDefaultButton(buttons.No)
        box.button(buttons.Yes).setText("Remove them")
        return box.exec() == buttons.Yes
