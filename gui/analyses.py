"""The analyses of the main window: the document's analyses, their map cells and their jobs.

The document (gui/document.py) says what each analysis asks and where it stands; this controller
starts a job for an analysis, stamps it with the analysis's generation, and hands the result back
to the document, which drops it when the analysis changed meanwhile. Cells only draw what the
document says, so a cell never shows a map of another input or model than the one it names.
"""

from __future__ import annotations

from .document import DONE, PENDING, Analysis, AnalysisRequest, Document, Event, InputInfo, ModelInfo
from .jobs import error_text
from .panels.messages_panel import gui_words
from .widgets.map_view import MapCell


class AnalysisController:
    """Creates, runs, re-runs, cancels and removes analyses for a MainWindow."""

    def __init__(self, window) -> None:
        self.window = window
        self.document = Document()
        self.cell_jobs: dict[int, object] = {}  # cell id -> its running job
        self.document.subscribe(self._changed)

    # ---------------------------------------------------------------- lookups
    def cell_for(self, analysis: Analysis | int) -> MapCell | None:
        analysis_id = analysis if isinstance(analysis, int) else analysis.id
        return next((cell for cell in self.window.grid.cells if getattr(cell, "analysis_id", None) == analysis_id), None)

    def analysis_of(self, cell: MapCell) -> Analysis | None:
        return self.document.get(getattr(cell, "analysis_id", -1))

    # ---------------------------------------------------------------- the current model and input
    def model_loaded(self, state) -> None:
        self.document.set_model(ModelInfo.from_loaded(state.loaded, state.ref))

    def input_changed(self, state) -> None:
        item = state.item
        self.document.set_input(InputInfo(item.source, item.name, item.label or ""))

    def request(self, method: str, params: dict, target) -> AnalysisRequest | None:
        """The request for a method on the current input with the current model (None without both)."""
        ws, document = self.window.workspace, self.document
        if ws.model is None or ws.current is None or document.input is None:
            return None
        spec = self.window.analysis_panel.methods.get(method)
        defaults = {p.name: p.default for p in spec.params()} if spec is not None else {}
        label = ws.label(target) if target is not None else "predicted"
        info = document.input
        return AnalysisRequest(method, {**defaults, **params}, target, label, info.name, defaults, info.path, document.model)

    # ---------------------------------------------------------------- running
    def run(self, method: str, params: dict, target, cell: MapCell | None = None) -> MapCell | None:
        """Run a method on the current input into a new cell (or the given one); returns the cell."""
        request = self.request(method, params, target)
        if request is None:
            self.window.show_error("Nothing to explain", "Load a model and choose an input first.")
            return None
        if cell is None:
            same = self.document.find(request)
            if same is not None and same.status != PENDING and self.cell_for(same) is not None:
                existing = self.cell_for(same)
                self.window.grid.select(existing)
                self.window.statusBar().showMessage("That map is already in the grid (selected); change a parameter or the input for another one", 8000)
                return existing
            analysis = self.document.add(request)
            cell = self.window.grid.add_cell(request)
            cell.analysis_id = analysis.id
            self.window.undo.added(analysis)
        else:
            analysis = self.document.rerun(getattr(cell, "analysis_id", -1), request)
            if analysis is None:  # a cell the document did not know yet
                analysis = self.document.add(request)
                cell.analysis_id = analysis.id
        self._start(analysis, cell)
        return cell

    def _start(self, analysis: Analysis, cell: MapCell) -> None:
        window, ws = self.window, self.window.workspace
        request, state = analysis.request, ws.current
        params = {name: value for name, value in request.params.items() if request.defaults.get(name) != value}
        job = ws.analysis_job(request.method, params, request.target, key=f"cell:{cell.cell_id}", state=state)
        if job is None:
            return
        generation = self.document.start(analysis.id)
        self.cell_jobs[cell.cell_id] = job
        window.analysis_panel.set_running(True, f"{request.method}: queued")
        aid = analysis.id
        job.signals.started.connect(lambda: self.document.progress(aid, generation, 0.0, "running"))
        job.signals.progress.connect(lambda fraction, message, _data: self.document.progress(aid, generation, fraction, message))
        job.signals.progress.connect(window.analysis_panel.set_progress)
        job.signals.finished.connect(lambda result: self._finished(aid, generation, cell, state, result))
        job.signals.failed.connect(lambda error: self._failed(aid, generation, cell, error))
        job.signals.cancelled.connect(lambda: self._cancelled(aid, generation, cell))

    def run_pending(self) -> None:
        """Run every pending analysis whose cell is on screen, for the current model and input."""
        for analysis in self.document.pending():
            cell = self.cell_for(analysis)
            if cell is not None:
                self._start(analysis, cell)

    def rerun(self, cell: MapCell) -> None:
        """Run a cell again, for the current input and model."""
        analysis = self.analysis_of(cell)
        if analysis is None:
            return
        request = analysis.request
        params = {name: value for name, value in request.params.items() if request.defaults.get(name) != value}
        self.run(request.method, params, request.target, cell)

    def cancel_all(self) -> None:
        for job in list(self.cell_jobs.values()):
            self.window.jobs.cancel(job)

    # ---------------------------------------------------------------- job reports
    def _ended(self, cell: MapCell, text: str) -> None:
        self.cell_jobs.pop(cell.cell_id, None)
        running = [job for job in self.cell_jobs.values() if not job.ended]
        self.window.analysis_panel.set_running(bool(running), text)

    def _finished(self, analysis_id: int, generation: int, cell: MapCell, state, explanation) -> None:
        ws = self.window.workspace
        probability = explanation.target_probability
        label = ws.label(explanation.target) + (f" (p {probability:.2f})" if probability is not None else "")
        applied = self.document.finish(analysis_id, generation, explanation, state.image, state.mask, label)
        self._ended(cell, f"{explanation.method}: done in {explanation.elapsed_s:.2f} s" if applied else "result dropped: the input or model changed")
        if applied:
            self.window.analysis_done(cell)

    def _failed(self, analysis_id: int, generation: int, cell: MapCell, error: BaseException) -> None:
        message = gui_words(error_text(error))
        applied = self.document.fail(analysis_id, generation, message)
        self._ended(cell, "failed")
        if applied:
            self.window.analysis_failed(cell, message)

    def _cancelled(self, analysis_id: int, generation: int, cell: MapCell) -> None:
        self.document.cancelled(analysis_id, generation)
        self._ended(cell, "cancelled")

    # ---------------------------------------------------------------- cells
    def cell_removed(self, cell: MapCell) -> None:
        job = self.cell_jobs.pop(cell.cell_id, None)
        if job is not None:
            self.window.jobs.cancel(job)
        self.document.remove(getattr(cell, "analysis_id", -1))

    def order_changed(self) -> None:
        for index, cell in enumerate(self.window.grid.cells):
            self.document.move(getattr(cell, "analysis_id", -1), index)

    def reinsert(self, analysis: Analysis, index: int) -> MapCell:
        """An analysis back in the document and the grid at ``index`` (undo), as it was."""
        self.document.add(analysis.request, index, analysis=analysis)
        cell = self.window.grid.add_cell(analysis.request, index)
        cell.analysis_id = analysis.id
        self.draw(cell, analysis)
        self.window.grid.refresh_display()
        return cell

    def label_of(self, analysis: Analysis):
        """How a cell names its analysis's classes: the current model's labels, or for a stored
        analysis the label its store recorded (its model need not be the one loaded here)."""
        if analysis.origin is None:
            return self.window.workspace.label
        target, label = analysis.origin.get("target"), analysis.origin.get("label", "")
        return lambda index: label if index == target and label else f"class {index}"

    def draw(self, cell: MapCell, analysis: Analysis) -> None:
        """Draw what the document says in ``cell``; a stored analysis says where it was read from."""
        cell.show_analysis(analysis, self.label_of(analysis))
        origin = analysis.origin
        if origin is not None and analysis.result is not None:
            cell._update_title(f"{analysis.result.elapsed_s:.2f} s when computed · stored in {origin['store_name']}")
            cell.footer.setText(f"from the result store {origin['store_name']} (not recomputed)")
            cell.footer.setToolTip(origin.get("tooltip", ""))

    def add_stored(self, request: AnalysisRequest, explanation, image, mask, origin: dict) -> MapCell:
        """A result read from a store: in the document as done (no job), drawn in a new cell."""
        analysis = self.document.add_stored(request, explanation, image, mask, origin)
        cell = self.window.grid.add_cell(request)
        cell.analysis_id = analysis.id
        self.draw(cell, analysis)
        return cell

    def restore(self, request: AnalysisRequest, explanation, image, mask) -> MapCell:
        """A finished analysis from a session: in the document as done, drawn in a new cell."""
        analysis = self.document.add(request)
        analysis.status, analysis.result, analysis.image, analysis.mask = DONE, explanation, image, mask
        cell = self.window.grid.add_cell(request)
        cell.analysis_id = analysis.id
        cell.show_analysis(analysis, self.window.workspace.label)
        return cell

    def _changed(self, event: Event) -> None:
        if event.analysis is None:
            if event.kind == "modified":
                self.window.document_modified(self.document.modified)
            return
        cell = self.cell_for(event.analysis)
        if cell is None:
            return
        if event.kind == "progress":
            cell.set_running(event.analysis.fraction, event.analysis.message)
        elif event.kind == "changed":
            self.draw(cell, event.analysis)
            self.window.grid.refresh_display()
