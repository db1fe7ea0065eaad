"""Result stores in the main window: the Results dock, reading a store's maps into the grid, and
batch runs of the open folder (issue 18's GUI).

Opening a store reads its manifest and records in a file-lane job and shows them in the Results
dock (gui/panels/store_panel.py). Selecting a row reads that image's stored maps (every method of
the run) from the Zarr array, in a file-lane job, and puts them in the grid as *stored* analyses
of the document: done at once, with their result and no job, never recomputed, titled with the
store they come from. *Run batch on folder* runs ``engine.runs.run.run_batch`` (what ``main.py
batch`` runs) on the batch lane; the Results dock follows its store as records arrive, and closing
the window while it runs asks first. A cancelled or abandoned run leaves its finished pairs in the
store, and running it again with Resume computes only the rest.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QDialog, QFileDialog, QMessageBox

from .document import AnalysisRequest, ModelInfo
from .jobs import BATCH_LANE, FILE_LANE, Job
from .panels.batch_dialog import BatchDialog
from .panels.store_panel import StorePanel
from .store_data import BatchRequest, StoreData, StoredImage, batch_fn, explanation_of, metric_text, open_store, read_image

REFRESH_MS = 1500  # while a batch runs, the Results dock re-reads its store at most this often
DEFAULT_METHODS = ("gradcam", "saliency")


def looks_like_store(path: str | Path) -> bool:
    """A folder with a store's manifest (``main.py gui STOREDIR`` and drops open it as a store)."""
    folder = Path(path)
    manifest = folder / "manifest.json"
    if not folder.is_dir() or not manifest.is_file():
        return False
    if (folder / "records").is_dir() or (folder / "maps.zarr").is_dir():
        return True
    try:
        with open(manifest, "rb") as handle:
            return b"sensiscope-store" in handle.read(4096)
    except OSError:
        return False


class ResultsActions:
    """The Results dock, its menu actions and the batch job of a MainWindow."""

    def __init__(self, window) -> None:
        self.window = window
        self.panel = StorePanel()
        self.dock = window._dock("Results", self.panel, Qt.DockWidgetArea.BottomDockWidgetArea)
        window.tabifyDockWidget(window.messages_dock, self.dock)
        self.dock.hide()
        self.data: StoreData | None = None
        self.batch: Job | None = None
        self.batch_request: BatchRequest | None = None
        self._switch_to_store = False
        self.shown: tuple[str, int] | None = None  # (store folder, image index) in the grid
        self.refresh_timer = QTimer(window)
        self.refresh_timer.setSingleShot(True)
        self.refresh_timer.setInterval(REFRESH_MS)
        self.refresh_timer.timeout.connect(self.refresh)
        self.panel.image_selected.connect(self.show_image)
        self.panel.open_requested.connect(self.choose_store)
        self.panel.refresh_requested.connect(self.refresh)
        self.panel.batch_requested.connect(self.batch_dialog)

    def build_menus(self, file_menu, view_menu, before: QAction) -> None:
        w = self.window
        w.open_store_action = QAction("Open result &store...", w)
        w.open_store_action.setToolTip("Open the folder of a data-set run (main.py batch or evaluate --store)")
        w.open_store_action.triggered.connect(self.choose_store)
        w.batch_action = QAction("Run &batch on folder...", w)
        w.batch_action.setToolTip("Explain and score every image of the open folder into a result store")
        w.batch_action.triggered.connect(self.batch_dialog)
        file_menu.insertAction(before, w.open_store_action)
        file_menu.insertAction(before, w.batch_action)
        file_menu.insertSeparator(before)
        view_menu.addAction(self.dock.toggleViewAction())

    # ---------------------------------------------------------------- opening a store
    def choose_store(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.window, "Open result store (a folder with manifest.json)")
        if folder:
            self.open_store(folder)

    def open_store(self, folder: str | Path) -> Job:
        """Read a store in a job and show it; an unreadable one is a message, never a crash."""
        folder = str(folder)
        known = self.data
        job = self.window.jobs.submit(lambda progress, cancel: open_store(folder, known), f"Opening result store {Path(folder).name}", lane=FILE_LANE, key="store")
        job.signals.finished.connect(self._opened)
        job.signals.failed.connect(lambda error: self.window.show_error("Cannot open the result store", error))
        return job

    def refresh(self) -> None:
        if self.data is not None:
            self.open_store(self.data.folder)

    def _opened(self, data: StoreData) -> None:
        if self.data is not None and self.data.folder == data.folder:
            data.preprocess = self.data.preprocess
        first = self.data is None or self.data.folder != data.folder
        self.data = data
        self.panel.show_store(data)
        if first:
            self.dock.show()
            self.dock.raise_()
            self.window.resizeDocks([self.dock], [260], Qt.Orientation.Vertical)
            self.window.statusBar().showMessage(data.summary(), 8000)

    # ---------------------------------------------------------------- an image's stored maps
    def _model_preprocess(self, data: StoreData):
        """The loaded model's preprocessing when it is the store's model (then nothing is loaded)."""
        model, settings = self.window.workspace.model, data.settings
        if model is None:
            return None
        ref = model.ref
        same = (ref.get("spec"), ref.get("weights") or "", ref.get("labels") or "") == (settings["model"], settings.get("weights") or "", settings.get("labels") or "")
        return model.loaded.preprocess if same else None

    def show_image(self, index: int, method: str = "") -> Job | None:
        """Show every stored map of image ``index`` in the grid (read, not recomputed)."""
        data = self.data
        if data is None:
            return None
        if self.shown == (data.folder, index) and self._stored_cells():
            self._select(method)
            return None
        preprocess = self._model_preprocess(data)
        name = Path(str(data.settings["images"][index])).name
        job = self.window.jobs.submit(lambda progress, cancel: read_image(data, index, preprocess), f"Reading {name} from the store", lane=FILE_LANE, key="store-image")
        job.signals.finished.connect(lambda stored: self._image_read(data, stored, method))
        job.signals.failed.connect(lambda error: self.window.show_error("Cannot read the stored maps", error))
        return job

    def _stored_cells(self) -> list:
        analyses = self.window.analyses
        return [cell for cell in (analyses.cell_for(a) for a in analyses.document.stored()) if cell is not None]

    def _select(self, method: str) -> None:
        analyses = self.window.analyses
        for analysis in analyses.document.stored():
            if analysis.request.method == method:
                cell = analyses.cell_for(analysis)
                if cell is not None:
                    self.window.grid.select(cell)

    def _image_read(self, data: StoreData, stored: StoredImage, method: str) -> None:
        if self.data is None or self.data.folder != data.folder:
            return  # another store was opened meanwhile
        if data.preprocess is None and stored.preprocess is not None and self._model_preprocess(data) is None:
            data.preprocess = stored.preprocess
        window = self.window
        for cell in self._stored_cells():  # the previous image's stored maps make room
            window.grid.remove_cell(cell)
        for pair in stored.pairs:
            explanation = explanation_of(data, pair)
            request, origin = self._request(data, stored, pair, explanation)
            window.analyses.add_stored(request, explanation, stored.image, stored.mask, origin)
        self.shown = (data.folder, stored.index)
        window.grid.refresh_display()
        window.tabs.setCurrentWidget(window.grid)
        self._select(method)
        text = f"{stored.name}: {len(stored.pairs)} map(s) read from the store {data.name}"
        window.statusBar().showMessage(text + (f" ({stored.note})" if stored.note else ""), 8000)

    def _request(self, data: StoreData, stored: StoredImage, pair, explanation) -> tuple[AnalysisRequest, dict]:
        settings, record = data.settings, pair.record
        spec = self.window.analysis_panel.methods.get(pair.method)
        defaults = {p.name: p.default for p in spec.params()} if spec is not None else {}
        model = ModelInfo(str(settings["model"]), str(settings.get("weights") or ""), str(settings.get("labels") or ""), f"result store {data.folder}")
        folder = str(settings.get("data") or "")
        label = str(record.get("predicted") or "")
        request = AnalysisRequest(pair.method, dict(explanation.params), explanation.target, label, stored.name, defaults, str(Path(folder) / stored.name) if folder else "", model)
        params = ", ".join(f"{k}={v}" for k, v in explanation.params.items()) or "default parameters"
        tooltip = f"Read from the result store {data.folder} (not recomputed)\nmodel {data.model_text()}\n{pair.method}: {params}\n{metric_text(record)}\ncomputed in {explanation.elapsed_s:.2f} s"
        origin = {"store": data.folder, "store_name": data.name, "image_index": stored.index, "target": explanation.target, "label": label, "tooltip": tooltip}
        return request, origin

    # ---------------------------------------------------------------- batch runs
    def data_folder(self) -> str:
        """The open folder (the demo's images when the demo is open), or '' when none is."""
        ref = self.window.workspace.data_ref or {}
        if ref.get("demo"):
            from engine.app.data import demo_data_dir

            return str(demo_data_dir())
        path = ref.get("path") or ""
        return path if path and Path(path).is_dir() else ""

    def running(self) -> bool:
        return self.batch is not None and not self.batch.ended

    def batch_dialog(self) -> Job | None:
        """Ask for methods and a store, then start the batch (None when cancelled or impossible)."""
        w = self.window
        if self.running():
            w.show_error("A batch is running", f"Wait for it or cancel it in the Jobs dock (it writes to {self.batch_request.store}).")
            return None
        folder, model = self.data_folder(), w.workspace.model
        if model is None or not folder:
            w.show_error("Nothing to run a batch on", "Load a model and open a folder of images first: the batch explains every image of the open folder with the loaded model.")
            return None
        scan = w.workspace.scan
        methods = list(w.analysis_panel.methods.values())
        saved = w.settings.value("batch/methods")
        checked = [saved] if isinstance(saved, str) else [str(m) for m in (saved or DEFAULT_METHODS)]
        store = str(Path(folder).parent / f"{Path(folder).name}-results")
        dialog = BatchDialog(model.ref.get("spec", ""), folder, len(scan.items) if scan is not None else None, methods, store, checked, w)
        if dialog.exec() != QDialog.DialogCode.Accepted:
            return None
        values = dialog.values()
        w.settings.setValue("batch/methods", list(values["methods"]))
        ref = model.ref
        request = BatchRequest(
            ref.get("spec", ""), ref.get("weights") or None, ref.get("labels") or None, bool(ref.get("trust")), folder,
            values["methods"], values["store"], values["resume"], values["steps"], values["max_images"], w.workspace.device,
            batch=values["batch"], model_args=dict(ref.get("model_args") or {}), retry_failed=values.get("retry_failed", False),
        )
        return self.start_batch(request)

    def start_batch(self, request: BatchRequest) -> Job:
        """Run a batch on the batch lane; the Results dock follows its store."""
        name = Path(request.data).name
        job = self.window.jobs.submit(batch_fn(request), f"Batch: {', '.join(request.methods)} on {name}", lane=BATCH_LANE, key="batch")
        self.batch, self.batch_request = job, request
        self._switch_to_store = True  # the Results dock shows the batch's store once it exists
        job.signals.progress.connect(lambda _fraction, _message, data: self._batch_progress(request, data))
        job.signals.finished.connect(lambda summary: self._batch_finished(request, summary))
        job.signals.failed.connect(lambda error: self.window.show_error("The batch run failed", error))
        job.signals.cancelled.connect(lambda: self._batch_cancelled(request))
        self.window.jobs_dock.show()
        self.window.jobs_dock.raise_()
        return job

    def _follows(self, request: BatchRequest) -> bool:
        return self.data is not None and Path(self.data.folder).resolve() == Path(request.store).expanduser().resolve()

    def _batch_progress(self, request: BatchRequest, data) -> None:
        if data is None or not hasattr(data, "computed"):
            return
        if self._switch_to_store and request is self.batch_request:
            self._switch_to_store = False
            if not self._follows(request):
                self.open_store(request.store)
                return
        if self._follows(request) and not self.refresh_timer.isActive():
            self.refresh_timer.start()

    def _batch_finished(self, request: BatchRequest, summary) -> None:
        state = "complete" if summary.complete else f"{summary.skipped + summary.computed} of {summary.total} pairs"
        failed = f" ({summary.failed} failed: see Messages)" if summary.failed else ""
        self.window.statusBar().showMessage(f"Batch done: {summary.computed} pairs computed{failed}, {summary.skipped} already in the store, {state}; {summary.elapsed_s:.1f} s", 15000)
        self.skipped_images = skipped_images(summary)
        if self.skipped_images:
            listing = "; ".join(f"{image}: {reason}" for image, reason in self.skipped_images[:20])
            more = f" and {len(self.skipped_images) - 20} more" if len(self.skipped_images) > 20 else ""
            note = (f"{len(self.skipped_images)} image(s) could not be used and are recorded in the store as failed (the other images were run): {listing}{more}. "
                    "Mend or remove them, then Run batch with Resume and Retry failed.")
            if self.window.messages_panel.add("Batch: images skipped", note) and not self.window.messages_dock.isVisible():
                self.window.messages_dock.show()
        self.refresh_timer.stop()
        self.open_store(request.store)

    skipped_images: list[tuple[str, str]] = []

    def _batch_cancelled(self, request: BatchRequest) -> None:
        self.window.statusBar().showMessage("Batch cancelled: its finished pairs stay in the store; Run batch with Resume computes the rest", 15000)
        if self._follows(request):
            self.refresh()

    def confirm_abandon(self) -> bool:
        """Closing while a batch runs: ask before abandoning it (True: go on closing)."""
        if not self.running():
            return True
        job, request = self.batch, self.batch_request
        buttons = QMessageBox.StandardButton
        text = (
            f"A batch run is writing to {request.store} ({job.fraction:.0%} done). Abandon it and close?\n\n"
            "The pairs it has finished stay in the store: Run batch on folder with Resume (or main.py batch --resume) computes only the rest."
        )
        box = QMessageBox(QMessageBox.Icon.Question, "Abandon the batch run?", text, buttons.Yes | buttons.Cancel, self.window)
        box.button(buttons.Yes).setText("Abandon and close")
        box.setDefaultButton(buttons.Cancel)
        return box.exec() == buttons.Yes  # closing cancels every job (JobManager.shutdown), the batch too


def skipped_images(summary) -> list[tuple[str, str]]:
    """(image, reason) of each image a run could not use, once per image, in run order."""
    seen: dict[str, str] = {}
    for image, _method, reason in summary.failures:
        seen.setdefault(image, reason)
    return list(seen.items())
