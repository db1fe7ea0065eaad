"""The main window: docks for model, data, analysis and jobs around the grid of maps."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings, Qt, Signal
from PySide6.QtGui import QAction, QGuiApplication, QIcon, QKeySequence
from PySide6.QtWidgets import QDockWidget, QFileDialog, QLabel, QMainWindow, QMessageBox, QProgressBar, QTabWidget, QWidget

from .analyses import AnalysisController
from .jobs import JobManager, error_text
from .model_actions import ModelActions
from .panels.analysis_panel import AnalysisPanel
from .panels.dataset_panel import IMAGE_FILTER, DatasetPanel
from .panels.jobs_panel import JobsPanel
from .panels.messages_panel import MessagesPanel, gui_words
from .panels.model_panel import ModelPanel
from .panels.tabular_panel import PIMA, TabularPanel
from .results import ResultsActions
from .session import SessionActions
from .undo import UndoActions
from .widgets.map_grid import MapGrid
from .widgets.map_view import MapCell
from .window_actions import WindowActions
from .workspace import DEMO_MODEL, Workspace

# What the demo shows first: Grad-CAM and local sensitivity, side by side.
DEMO_ANALYSES = (("gradcam", {}), ("local", {"window": 16, "stride": 8}))
DEMO_CLASSES = ("benign", "malignant")
STYLE = """
QLabel#hint { color: palette(window-text); }
QLabel#placeholder { color: palette(window-text); font-size: 15px; }
QLabel#cellFooter { color: palette(window-text); font-family: monospace; }
QLabel#untrained { color: palette(bright-text); font-weight: bold; }
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
        self.session_path = ""
        self._close_confirmed = False
        self.jobs = JobManager(self)
        self.workspace = Workspace(self.jobs, self)
        self._demo = demo
        self._demo_analyses = demo_analyses
        self._demo_cells: list[MapCell] = []

        self.grid = MapGrid()
        self.analyses = AnalysisController(self)
        self.undo = UndoActions(self)
        self.grid.remover = self.undo.remove
        self.document = self.analyses.document
        self.tabular_panel = TabularPanel(self.jobs)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(self.grid, "Images")
        self.tabs.addTab(self.tabular_panel, "Table")
        self.setCentralWidget(self.tabs)
        self.session = SessionActions(self)
        self.models = ModelActions(self)
        self._hidden_docks: list[QDockWidget] = []
        self.model_panel = ModelPanel()
        self.dataset_panel = DatasetPanel(self.jobs)
        self.analysis_panel = AnalysisPanel()
        self.jobs_panel = JobsPanel(self.jobs)
        self.model_dock = self._dock("Model", self.model_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self.dataset_dock = self._dock("Data", self.dataset_panel, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.analysis_dock = self._dock("Analysis", self.analysis_panel, Qt.DockWidgetArea.RightDockWidgetArea)
        self.jobs_dock = self._dock("Jobs", self.jobs_panel, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.messages_panel = MessagesPanel()
        self.messages_dock = self._dock("Messages", self.messages_panel, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.tabifyDockWidget(self.jobs_dock, self.messages_dock)
        self.results = ResultsActions(self)  # the Results dock (result stores) and batch runs
        self.jobs_dock.raise_()
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
        # The menu bar stays File, Edit, View, Help: the model's own actions sit beside Open model file.
        self.open_class_action = QAction("Open &Python class...", self)
        self.open_class_action.setToolTip("A model class of your own code, with optional weights and constructor arguments; loading runs that Python file")
        self.open_class_action.triggered.connect(lambda: self.open_python_class())
        self.demo_action = QAction("Open the &demo", self)
        self.demo_action.triggered.connect(lambda: self.open_demo(analyses=True))
        for action in (self.open_image_action, self.open_folder_action, self.open_model_action, self.open_class_action, self.demo_action):
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
        self.export_comparison_action = QAction("The &comparison as a figure (PNG, SVG, PDF)...", self)
        self.export_comparison_action.triggered.connect(lambda: self.session.export_comparison())
        self.export_maps_action = QAction("Each &map as .npy and PNG...", self)
        self.export_maps_action.triggered.connect(lambda: self.session.export_maps())
        self.export_tables_action = QAction("&Tabular results (CSV, PNG, model)...", self)
        self.export_tables_action.triggered.connect(lambda: self.session.export_tables())
        self.export_report_action = QAction("A &report of the session (HTML)...", self)
        self.export_report_action.triggered.connect(lambda: self.session.export_report())
        for action in (self.export_comparison_action, self.export_maps_action, self.export_report_action, self.export_tables_action):
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
        for dock in (self.dataset_dock, self.model_dock, self.analysis_dock, self.jobs_dock, self.messages_dock):
            view_menu.addAction(dock.toggleViewAction())

        help_menu = self.menuBar().addMenu("&Help")
        self.about_action = QAction("&About Sensiscope", self)
        self.about_action.triggered.connect(self.show_about)
        help_menu.addAction(self.about_action)
        self.results.build_menus(file_menu, view_menu, self.open_table_action)
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
        self.model_panel.model_requested.connect(lambda spec, weights, labels, args, fallback: self._load_model(spec, weights, labels, False, args, fallback))
        self.model_panel.class_requested.connect(self.open_python_class)
        self.model_panel.device_changed.connect(self._device_changed)
        self.model_panel.layer_chosen.connect(self._layer_chosen)
        self.dataset_panel.open_requested.connect(lambda path: ws.open_dataset(path))
        self.dataset_panel.item_selected.connect(ws.select_item)
        self.analysis_panel.run_requested.connect(self.run_analysis)
        self.analysis_panel.cancel_requested.connect(self.cancel_analyses)
        self.grid.rerun_requested.connect(self.rerun_cell)
        self.grid.cell_removed.connect(self.analyses.cell_removed)
        self.grid.order_changed.connect(self.analyses.order_changed)
        self.grid.export_requested.connect(lambda cell: self.session.export_cell(cell))
        self.grid.follow_box.toggled.connect(lambda on: setattr(self.document, "follow", on))
        self.tabular_panel.error.connect(self.show_error)
        self.tabular_panel.status.connect(lambda text: self.statusBar().showMessage(text, 8000))
        self.tabular_panel.table_opened.connect(lambda _table: self.tabs.setCurrentWidget(self.tabular_panel))
        self.tabs.currentChanged.connect(self._tab_changed)

    def _tab_changed(self, index: int) -> None:
        """The Table tab needs the room: the docks step aside while it shows (View brings them back) and return after."""
        if self.tabs.widget(index) is self.tabular_panel:
            docks = (self.dataset_dock, self.model_dock, self.analysis_dock, self.jobs_dock, self.messages_dock, self.results.dock)
            self._hidden_docks = [dock for dock in docks if dock.isVisible() and not dock.isFloating()]
            for dock in self._hidden_docks:
                dock.hide()
        else:
            for dock in self._hidden_docks:
                dock.show()
            self._hidden_docks = []

    # ---------------------------------------------------------------- workspace events
    def _engine_ready(self, info) -> None:
        self.version = info.version
        self.update_title()
        self.device_label.setText(f"Device: {info.default_device}")
        self.model_panel.set_engine(info)
        self.analysis_panel.set_methods(info.methods)
        self.statusBar().showMessage("Engine ready", 4000)
        if self._demo:
            self.open_demo(self._demo_analyses)
        self.models.engine_ready()

    def open_demo(self, analyses: bool = True) -> None:
        """Load the demo model and images, select a lesion image and (optionally) explain it twice."""
        self._demo = True
        self._demo_analyses = analyses
        self._demo_cells = []
        self.model_panel.set_busy(True, "Loading the demo model...")
        self.models.watch(self.workspace.load_model(DEMO_MODEL))
        self.workspace.open_dataset(demo=True)

    # The model's loading, the user's own model and the command line's files: gui/model_actions.py.
    def _load_model(self, spec: str, weights: str, labels: str, trust: bool, model_args: dict | None = None, file_fallback: bool = False, note: str = "") -> None:
        self.models.load(spec, weights, labels, trust, model_args, file_fallback, note)

    def open_python_class(self, path: str = "", class_name: str = "", weights: str = "", model_args: dict | None = None):
        return self.models.open_python_class(path, class_name, weights, model_args)

    def open_paths(self, paths: list[str], model: str = "", model_args: dict | None = None) -> None:
        self.models.open_paths(paths, model, model_args)

    @property
    def class_dialog(self):
        """The Open Python class dialog while it is open."""
        return self.models.dialog

    def _model_loaded(self, state) -> None:
        self.analyses.model_loaded(state)
        self.dataset_panel.set_model_ready(True)
        self.model_panel.set_busy(False)
        self.model_panel.show_model(state)
        self.analysis_panel.set_labels(state.loaded.labels, state.loaded.num_classes)
        self.analysis_panel.set_layers(state.conv_layers)
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
            job.signals.finished.connect(self._predictions_skipped)

    def _predictions_skipped(self, predictions) -> None:
        if predictions.skipped:
            names = "; ".join(predictions.skipped[:3]) + (f"; and {len(predictions.skipped) - 3} more" if len(predictions.skipped) > 3 else "")
            self.show_error(f"Predict all skipped {len(predictions.skipped)} unreadable file(s)", names)

    def _input_changed(self, state) -> None:
        """A prepared input is current: following analyses of another input or model run for it."""
        self.statusBar().showMessage(f"Input {state.item.name}" + (f" (class {state.item.label})" if state.item.label else ""), 6000)
        self.session.skip_rerun(state)  # a restored session's maps belong to this input: the document keeps them
        self.document.follow = self.grid.follow_box.isChecked()
        self.analyses.input_changed(state)
        model = self.workspace.model
        if self._demo and self._demo_analyses and not self._demo_cells and model is not None and model.ref.get("spec") == DEMO_MODEL:
            self._demo_analyses = False
            for method, params in DEMO_ANALYSES:
                self._demo_cells.append(self.run_analysis(method, params, None))
        self.analyses.run_pending()

    def _device_changed(self, spec: str) -> None:
        self.device_label.setText(f"Device: {spec}")
        self.workspace.set_device(spec)

    def _layer_chosen(self, name: str) -> None:
        self.analysis_panel.set_layer(name)
        self.model_panel.mark_layer(name)
        self.statusBar().showMessage(f"Layer {name} will be used by Grad-CAM and layer objectives", 6000)

    # ---------------------------------------------------------------- analyses
    @property
    def cell_jobs(self) -> dict[int, object]:
        return self.analyses.cell_jobs

    def run_analysis(self, method: str, params: dict, target, cell: MapCell | None = None) -> MapCell | None:
        """Run a method on the current input into a new cell (or the given one); returns the cell."""
        return self.analyses.run(method, params, target, cell)

    def analysis_done(self, cell: MapCell) -> None:
        if self._demo_cells and all(c is not None and c.explanation is not None for c in self._demo_cells):
            self._demo_cells = [None]  # report once
            self.document.mark_saved()  # the demo's own maps are nobody's unsaved work
            self.demo_ready.emit()

    def analysis_failed(self, cell: MapCell, message: str) -> None:
        """Shown in the cell (by the document) and once in the messages; never a dialog per failure."""
        self.show_error(f"{cell.request.method} failed", message)
        if cell in self._demo_cells:
            self.demo_failed.emit(message)

    def rerun_cell(self, cell: MapCell) -> None:
        self.analyses.rerun(cell)

    def cancel_analyses(self) -> None:
        self.analyses.cancel_all()

    def document_modified(self, modified: bool) -> None:
        self.setWindowModified(modified)
        self.update_title()

    def update_title(self, session_path: str | None = None) -> None:
        """The session's name (when it was saved or opened) and Qt's modified mark ([*] shows as *)."""
        if session_path is not None:
            self.session_path = session_path
        app = f"Sensiscope {self.version}".strip()
        self.setWindowTitle(f"{Path(self.session_path).name}[*] - {app}" if self.session_path else f"{app}[*]")
        self.setWindowModified(self.document.modified)

    def session_saved(self, path: str) -> None:
        """A session was saved to or opened from ``path``: the document matches the file."""
        self.document.mark_saved()
        self.update_title(str(path))

    # ---------------------------------------------------------------- messages and state
    def _workspace_error(self, title: str, message: str) -> None:
        if self._demo and self._demo_cells != [None]:
            self.demo_failed.emit(f"{title}: {message}")
        self.show_error(title, message)

    def show_error(self, title: str, message: str | BaseException) -> None:
        """A readable message, in the GUI's words, in the status bar and once in the Messages dock
        (a repeat only counts up); never a modal dialog, never raises.

        A failed job's exception may be passed as it is (``job.signals.failed`` connects here directly).
        """
        if isinstance(message, BaseException):
            message = error_text(message)
        message = gui_words(message)
        self.errors.append((title, message))
        self.statusBar().showMessage(f"{title}: {message}", 15000)
        if self.messages_panel.add(title, message) and not self.messages_dock.isVisible():
            self.messages_dock.show()
        self.messages_dock.raise_()

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
        opened = self.settings.value("forms/advanced_open")
        if opened:
            self.analysis_panel.form.restore_expanded([opened] if isinstance(opened, str) else list(opened))

    def dragEnterEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if self.habits.dropped_paths(event.mimeData()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:  # noqa: N802 - Qt's name
        paths = self.habits.dropped_paths(event.mimeData())
        for path in paths:
            self.habits.open_path(path)
        if paths:
            event.acceptProposedAction()

    def confirm_close(self) -> bool:
        """Unsaved maps: ask Save, Discard or Cancel before they are lost; True to go on closing."""
        if not self.document.modified or not self.grid.finished_cells():
            return True
        buttons = QMessageBox.StandardButton
        box = QMessageBox(QMessageBox.Icon.Question, "Save the session?", "The maps of this session were not saved. Save them before quitting?", buttons.Save | buttons.Discard | buttons.Cancel, self)
        box.setDefaultButton(buttons.Save)
        answer = box.exec()
        if answer == buttons.Save:
            return self.session.save()
        return answer == buttons.Discard

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt's name
        if not self._close_confirmed:
            if not self.results.confirm_abandon() or not self.confirm_close():
                event.ignore()
                return
            self._close_confirmed = True
        self.tabs.setCurrentIndex(0)  # the docks the Table tab hid are saved as shown
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState())
        self.settings.setValue("forms/advanced_open", self.analysis_panel.form.expanded_methods())
        self.jobs.shutdown(wait=True)
        super().closeEvent(event)
