"""The main window: docks for model, data, analysis and jobs around the grid of maps."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, Qt, Signal
from PySide6.QtGui import QAction, QGuiApplication, QIcon, QKeySequence
from PySide6.QtWidgets import QDockWidget, QFileDialog, QLabel, QMainWindow, QMessageBox, QProgressBar, QTabWidget, QWidget

from engine.core.errors import UntrustedFile

from .jobs import JobManager, error_text
from .panels.analysis_panel import AnalysisPanel
from .panels.dataset_panel import IMAGE_FILTER, DatasetPanel
from .panels.jobs_panel import JobsPanel
from .panels.model_panel import ModelPanel
from .panels.tabular_panel import PIMA, TabularPanel
from .session import SessionActions
from .widgets.map_grid import MapGrid
from .widgets.map_view import AnalysisRequest, MapCell
from .window_actions import WindowActions
from .workspace import DEMO_MODEL, Workspace

# What the demo shows first: Grad-CAM and local sensitivity, side by side.
DEMO_ANALYSES = (("gradcam", {}), ("local", {"window": 16, "stride": 8}))
DEMO_CLASSES = ("benign", "malignant")
STYLE = """
QLabel#hint { color: #555; }
QLabel#placeholder { color: gray; font-size: 15px; }
QLabel#cellFooter { color: #555; font-family: monospace; }
QFrame#mapCell { border: 1px solid palette(mid); border-radius: 4px; }
QFrame#mapCell[selected="true"] { border: 2px solid palette(highlight); }
QPushButton#runButton { font-weight: bold; min-width: 70px; }
QGroupBox { font-weight: bold; margin-top: 14px; border: 1px solid palette(mid); border-radius: 4px; }
QGroupBox::title { subcontrol-origin: margin; subcontrol-position: top left; left: 8px; padding: 0 3px; }
QGroupBox > QWidget { font-weight: normal; }
"""


def icon_path() -> Path:
    return Path(__file__).resolve().parents[1] / "resources" / "icons" / "sensiscope.svg"


class MainWindow(QMainWindow):
    demo_ready = Signal()  # the demo's default maps are drawn
    demo_failed = Signal(str)
    session_restored = Signal(int)  # number of maps restored

    def __init__(self, demo: bool = False, demo_analyses: bool = True, settings: QSettings | None = None) -> None:
        super().__init__()
        self.version = ""
        self.setWindowTitle("Sensiscope")
        if icon_path().is_file():
            self.setWindowIcon(QIcon(str(icon_path())))
        self.setStyleSheet(STYLE)
        self.settings = settings or QSettings()
        self.errors: list[tuple[str, str]] = []
        self.jobs = JobManager(self)
        self.workspace = Workspace(self.jobs, self)
        self.cell_jobs: dict[int, object] = {}
        self._demo = demo
        self._demo_analyses = demo_analyses
        self._demo_cells: list[MapCell] = []
        self._message_box: QMessageBox | None = None

        self.grid = MapGrid()
        self.tabular_panel = TabularPanel(self.jobs)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.grid, "Images")
        self.tabs.addTab(self.tabular_panel, "Table")
        self.setCentralWidget(self.tabs)
        self.session = SessionActions(self)
        self._hidden_docks: list[QDockWidget] = []
        self.model_panel = ModelPanel()
        self.dataset_panel = DatasetPanel(self.jobs)
        self.analysis_panel = AnalysisPanel()
        self.jobs_panel = JobsPanel(self.jobs)
        self.model_dock = self._dock("Model", self.model_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self.dataset_dock = self._dock("Data", self.dataset_panel, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.analysis_dock = self._dock("Analysis", self.analysis_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self.jobs_dock = self._dock("Jobs", self.jobs_panel, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.splitDockWidget(self.model_dock, self.analysis_dock, Qt.Orientation.Vertical)
        # The preferred size, shrunk to fit smaller screens (laptops, 1280 x 800 displays).
        screen = QGuiApplication.primaryScreen()
        available = screen.availableGeometry() if screen is not None else None
        self.resize(min(1360, available.width()) if available else 1360, min(860, available.height()) if available else 860)
        self.resizeDocks([self.dataset_dock, self.model_dock], [290, 320], Qt.Orientation.Horizontal)
        self.resizeDocks([self.model_dock, self.analysis_dock], [400, 330], Qt.Orientation.Vertical)
        self.resizeDocks([self.jobs_dock], [110], Qt.Orientation.Vertical)

        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setMaximumWidth(120)
        self.busy.setMaximumHeight(14)
        self.busy_label = QLabel()
        self.device_label = QLabel("Device: (starting)")
        status = self.statusBar()
        status.addPermanentWidget(self.busy_label)
        status.addPermanentWidget(self.busy)
        status.addPermanentWidget(self.device_label)
        self.habits = WindowActions(self)
        self.setAcceptDrops(True)
        self._build_menus()
        self._connect()
        self._restore_settings()
        self._update_busy()
        status.showMessage("Starting the engine (importing torch)...")
        self.workspace.start_engine()

    def _dock(self, title: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(f"{title.lower()}Dock")
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetMovable | QDockWidget.DockWidgetFeature.DockWidgetFloatable | QDockWidget.DockWidgetFeature.DockWidgetClosable)
        self.addDockWidget(area, dock)
        return dock

    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.open_image_action = QAction("Open &image...", self, shortcut=QKeySequence.StandardKey.Open)
        self.open_image_action.triggered.connect(self._choose_image)
        self.open_folder_action = QAction("Open &folder...", self)
        self.open_folder_action.triggered.connect(self.dataset_panel._choose_folder)
        self.open_model_action = QAction("Open &model file...", self)
        self.open_model_action.triggered.connect(self.model_panel._choose_file)
        self.demo_action = QAction("Open the &demo", self)
        self.demo_action.triggered.connect(lambda: self.open_demo(analyses=True))
        for action in (self.open_image_action, self.open_folder_action, self.open_model_action, self.demo_action):
            file_menu.addAction(action)
        file_menu.addSeparator()
        self.open_table_action = QAction("Open &table...", self)
        self.open_table_action.triggered.connect(self.tabular_panel.choose_table)
        self.pima_action = QAction("Open the &Pima demo table", self)
        self.pima_action.triggered.connect(lambda: self.tabular_panel.open_table(PIMA))
        file_menu.addAction(self.open_table_action)
        file_menu.addAction(self.pima_action)
        file_menu.addSeparator()
        self.open_session_action = QAction("Open &session...", self)
        self.open_session_action.triggered.connect(lambda: self.session.open())
        self.save_session_action = QAction("&Save session...", self, shortcut=QKeySequence.StandardKey.Save)
        self.save_session_action.triggered.connect(lambda: self.session.save())
        file_menu.addAction(self.open_session_action)
        file_menu.addAction(self.save_session_action)
        export_menu = file_menu.addMenu("&Export")
        self.export_comparison_action = QAction("The &comparison as PNG...", self)
        self.export_comparison_action.triggered.connect(lambda: self.session.export_comparison())
        self.export_maps_action = QAction("Each &map as .npy and PNG...", self)
        self.export_maps_action.triggered.connect(lambda: self.session.export_maps())
        self.export_tables_action = QAction("&Tabular results (CSV, PNG, model)...", self)
        self.export_tables_action.triggered.connect(lambda: self.session.export_tables())
        for action in (self.export_comparison_action, self.export_maps_action, self.export_tables_action):
            export_menu.addAction(action)
        file_menu.addSeparator()
        self.quit_action = QAction("&Quit", self, shortcut=QKeySequence.StandardKey.Quit)
        self.quit_action.triggered.connect(self.close)
        file_menu.addAction(self.quit_action)

        view_menu = self.menuBar().addMenu("&View")
        self.fit_action = QAction("&Fit maps", self)
        self.fit_action.triggered.connect(self.grid.fit)
        view_menu.addAction(self.fit_action)
        view_menu.addSeparator()
        for dock in (self.dataset_dock, self.model_dock, self.analysis_dock, self.jobs_dock):
            view_menu.addAction(dock.toggleViewAction())

        help_menu = self.menuBar().addMenu("&Help")
        self.about_action = QAction("&About Sensiscope", self)
        self.about_action.triggered.connect(self.show_about)
        help_menu.addAction(self.about_action)
        self.habits.build(file_menu, view_menu, help_menu, self.quit_action, self.about_action)

    def _connect(self) -> None:
        ws = self.workspace
        ws.engine_ready.connect(self._engine_ready)
        ws.model_loaded.connect(self._model_loaded)
        ws.model_loaded.connect(self.habits.record_model)
        ws.dataset_opened.connect(self.habits.record_data)
        self.tabular_panel.table_opened.connect(self.habits.record_table)
        self.dataset_panel.predict_requested.connect(self.predict_all)
        ws.dataset_opened.connect(self._dataset_opened)
        ws.input_changed.connect(self._input_changed)
        ws.prediction_ready.connect(self.model_panel.show_prediction)
        ws.error.connect(self._workspace_error)
        ws.status.connect(lambda text: self.statusBar().showMessage(text, 8000))
        self.jobs.active_changed.connect(self._update_busy)
        self.jobs.job_changed.connect(self._update_busy)
        self.model_panel.load_requested.connect(self._load_model)
        self.model_panel.device_changed.connect(self._device_changed)
        self.model_panel.layer_chosen.connect(self._layer_chosen)
        self.dataset_panel.open_requested.connect(lambda path: ws.open_dataset(path))
        self.dataset_panel.item_selected.connect(ws.select_item)
        self.analysis_panel.run_requested.connect(self.run_analysis)
        self.analysis_panel.cancel_requested.connect(self.cancel_analyses)
        self.grid.rerun_requested.connect(self.rerun_cell)
        self.grid.cell_removed.connect(self._cell_removed)
        self.tabular_panel.error.connect(self.show_error)
        self.tabular_panel.status.connect(lambda text: self.statusBar().showMessage(text, 8000))
        self.tabular_panel.table_opened.connect(lambda _table: self.tabs.setCurrentWidget(self.tabular_panel))
        self.tabs.currentChanged.connect(self._tab_changed)

    def _tab_changed(self, index: int) -> None:
        """The Table tab needs the room: the docks step aside while it shows (View brings them back) and return after."""
        if self.tabs.widget(index) is self.tabular_panel:
            self._hidden_docks = [dock for dock in (self.dataset_dock, self.model_dock, self.analysis_dock, self.jobs_dock) if dock.isVisible() and not dock.isFloating()]
            for dock in self._hidden_docks:
                dock.hide()
        else:
            for dock in self._hidden_docks:
                dock.show()
            self._hidden_docks = []

    # ---------------------------------------------------------------- workspace events
    def _engine_ready(self, info) -> None:
        self.version = info.version
        self.setWindowTitle(f"Sensiscope {info.version}")
        self.device_label.setText(f"Device: {info.default_device}")
        self.model_panel.set_engine(info)
        self.analysis_panel.set_methods(info.methods)
        self.statusBar().showMessage("Engine ready", 4000)
        if self._demo:
            self.open_demo(self._demo_analyses)

    def open_demo(self, analyses: bool = True) -> None:
        """Load the demo model and images, select a lesion image and (optionally) explain it twice."""
        self._demo = True
        self._demo_analyses = analyses
        self._demo_cells = []
        self.model_panel.set_busy(True, "Loading the demo model...")
        self.workspace.load_model(DEMO_MODEL)
        self.workspace.open_dataset(demo=True)

    def _load_model(self, spec: str, weights: str, labels: str, trust: bool) -> None:
        self.model_panel.set_busy(True, f"Loading {Path(spec).name}...")
        job = self.workspace.load_model(spec, weights, labels, trust)
        job.signals.failed.connect(lambda error: self._model_failed(spec, weights, labels, trust, error))

    def _model_failed(self, spec: str, weights: str, labels: str, trust: bool, error: BaseException) -> None:
        self.model_panel.set_busy(False, error_text(error) if self.workspace.model is None else "")
        if not trust and isinstance(error, UntrustedFile) and self.model_panel.confirm_trust(spec):
            self._load_model(spec, weights, labels, True)

    def _model_loaded(self, state) -> None:
        self.dataset_panel.set_model_ready(True)
        self.model_panel.set_busy(False)
        self.model_panel.show_model(state)
        self.analysis_panel.set_labels(state.loaded.labels, state.loaded.num_classes)
        if state.conv_layers and self.analysis_panel.layer not in state.conv_layers:
            self.analysis_panel.set_layer("")

    def _dataset_opened(self, scan) -> None:
        self.dataset_panel.show_scan(scan)
        choice = self.session.choose_item(scan) or scan.items[0]
        if self._demo and self.session.pending is None:
            choice = next((item for item in scan.items if item.label in DEMO_CLASSES), choice)
        self.dataset_panel.select(choice)

    def predict_all(self, items: list) -> None:
        """Predict every listed input in a batched device-lane job; captions and tooltips show the results."""
        job = self.workspace.predict_items(items)
        if job is not None:
            self.dataset_panel.set_predicting(job)
            job.signals.finished.connect(self.dataset_panel.set_predictions)

    def _input_changed(self, state) -> None:
        self.statusBar().showMessage(f"Input {state.item.relative}" + (f" (class {state.item.label})" if state.item.label else ""), 6000)
        if self.session.skip_rerun(state):  # a restored session's maps are shown as saved
            return
        if self._demo and self._demo_analyses and not self._demo_cells:
            self._demo_analyses = False
            for method, params in DEMO_ANALYSES:
                self._demo_cells.append(self.run_analysis(method, params, None))
        elif self.grid.follow_box.isChecked():
            for cell in self.grid.cells:
                self.rerun_cell(cell)

    def _device_changed(self, spec: str) -> None:
        self.device_label.setText(f"Device: {spec}")
        self.workspace.set_device(spec)

    def _layer_chosen(self, name: str) -> None:
        self.analysis_panel.set_layer(name)
        self.model_panel.mark_layer(name)
        self.statusBar().showMessage(f"Layer {name} will be used by Grad-CAM and layer objectives", 6000)

    # ---------------------------------------------------------------- analyses
    def run_analysis(self, method: str, params: dict, target, cell: MapCell | None = None) -> MapCell | None:
        """Run a method on the current input into a new cell (or the given one); returns the cell."""
        ws = self.workspace
        if ws.model is None or ws.current is None:
            self.show_error("Nothing to explain", "Load a model and choose an input first.")
            return None
        spec = self.analysis_panel.methods.get(method)
        defaults = {p.name: p.default for p in spec.params()} if spec is not None else {}
        merged = {**defaults, **params}
        state = ws.current
        label = ws.label(target) if target is not None else "predicted"
        request = AnalysisRequest(method, merged, target, label, str(state.item.relative), defaults)
        if cell is None:
            cell = self.grid.add_cell(request)
        else:
            cell.request = request
            cell._update_title()
        cell.input_path = str(state.item.path)
        job = ws.analysis_job(method, params, target, key=f"cell:{cell.cell_id}", state=state)
        if job is None:
            return cell
        self.cell_jobs[cell.cell_id] = job
        cell.set_running(0.0, "queued")
        self.analysis_panel.set_running(True, f"{method}: queued")
        job.signals.started.connect(lambda: cell.set_running(0.0, "running"))
        job.signals.progress.connect(cell.set_running)
        job.signals.progress.connect(self.analysis_panel.set_progress)
        job.signals.finished.connect(lambda result: self._analysis_done(cell, state, result))
        job.signals.failed.connect(lambda error: self._analysis_failed(cell, error_text(error)))
        job.signals.cancelled.connect(lambda: self._analysis_cancelled(cell))
        return cell

    def _analysis_ended(self, cell: MapCell, text: str) -> None:
        self.cell_jobs.pop(cell.cell_id, None)
        running = [job for job in self.cell_jobs.values() if not job.ended]
        self.analysis_panel.set_running(bool(running), text)

    def _analysis_done(self, cell: MapCell, state, explanation) -> None:
        if cell not in self.grid.cells:
            return
        cell.set_result(explanation, state.image, state.mask, self.workspace.label)
        self.grid.refresh_display()
        self._analysis_ended(cell, f"{explanation.method}: done in {explanation.elapsed_s:.2f} s")
        if self._demo_cells and all(c is not None and c.explanation is not None for c in self._demo_cells):
            self._demo_cells = [None]  # report once
            self.demo_ready.emit()

    def _analysis_failed(self, cell: MapCell, message: str) -> None:
        cell.set_failed(message)
        self._analysis_ended(cell, "failed")
        self.show_error(f"{cell.request.method} failed", message)
        if cell in self._demo_cells:
            self.demo_failed.emit(message)

    def _analysis_cancelled(self, cell: MapCell) -> None:
        if cell in self.grid.cells:
            cell.set_cancelled()
        self._analysis_ended(cell, "cancelled")

    def rerun_cell(self, cell: MapCell) -> None:
        request = cell.request
        params = {name: value for name, value in request.params.items() if request.defaults.get(name) != value}
        self.run_analysis(request.method, params, request.target, cell)

    def cancel_analyses(self) -> None:
        for job in list(self.cell_jobs.values()):
            self.jobs.cancel(job)

    def _cell_removed(self, cell: MapCell) -> None:
        job = self.cell_jobs.pop(cell.cell_id, None)
        if job is not None:
            self.jobs.cancel(job)

    # ---------------------------------------------------------------- messages and state
    def _workspace_error(self, title: str, message: str) -> None:
        if self._demo and self._demo_cells != [None]:
            self.demo_failed.emit(f"{title}: {message}")
        self.show_error(title, message)

    def show_error(self, title: str, message: str | BaseException) -> None:
        """A readable message in the status bar and a non-modal box; never raises.

        A failed job's exception may be passed as it is (``job.signals.failed`` connects here directly).
        """
        if isinstance(message, BaseException):
            message = error_text(message)
        self.errors.append((title, message))
        self.statusBar().showMessage(f"{title}: {message}", 15000)
        if self._message_box is not None:
            self._message_box.close()
        box = QMessageBox(QMessageBox.Icon.Warning, title, message, QMessageBox.StandardButton.Ok, self)
        box.setModal(False)
        box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        box.show()
        self._message_box = box
        box.destroyed.connect(lambda *_: setattr(self, "_message_box", None) if self._message_box is box else None)

    def _update_busy(self, *_args) -> None:
        visible = [job for job in self.jobs.running() if not job.quiet]
        self.busy.setVisible(bool(visible))
        self.busy_label.setText(visible[0].title + ("..." if len(visible) == 1 else f" (+{len(visible) - 1} more)") if visible else "")

    def about_text(self) -> str:
        return (
            f"<b>Sensiscope {self.version}</b><br>"
            "Sensitivity analysis of neural networks: how a model's output responds to "
            "perturbations of its inputs."
        )

    def show_about(self) -> None:
        QMessageBox.about(self, "About Sensiscope", self.about_text())

    def _choose_image(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open image", "", IMAGE_FILTER)
        if path:
            self.workspace.open_dataset(path)

    def _restore_settings(self) -> None:
        geometry = self.settings.value("window/geometry")
        state = self.settings.value("window/state")
        if isinstance(geometry, QByteArray):
            self.restoreGeometry(geometry)
        if isinstance(state, QByteArray):
            self.restoreState(state)

    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if self.habits.dropped_paths(event.mimeData()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt's name
        paths = self.habits.dropped_paths(event.mimeData())
        for path in paths:
            self.habits.open_path(path)
        if paths:
            event.acceptProposedAction()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.tabs.setCurrentIndex(0)  # the docks the Table tab hid are saved as shown
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.jobs.shutdown(wait=True)
        if self._message_box is not None:
            self._message_box.close()
        super().closeEvent(event)
