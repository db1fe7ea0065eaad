"""The tabular workspace: a CSV table with column statistics, training a network, its Sobol indices and input reduction.

Every engine call runs in a job (gui/jobs.py): loading on the file lane, training, Sobol and reduction on the
device lane. One tabular job runs at a time; Cancel stops it through the job's CancelToken.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from engine.core.progress import EpochLosses
from engine.core.vocab import ACTIVATIONS, DISTRIBUTIONS, MISSING_POLICIES, TABLE_SUFFIXES, TABULAR_TRAINING

from ..jobs import DEVICE_LANE, FILE_LANE, Job, JobManager, error_text
from ..tabular_results import TableResults, analysis_job, ensemble_metrics_html, export_results, reduction_job, restore_networks, training_job
from ..widgets.table_model import FrameModel, StatsModel, compact, double_box, spin_box, table_view
from ..widgets.tabular_plots import LossPlot, MethodsView, ReductionView, SobolView, metrics_html

PIMA = "demo:pima"
TABLE_FILTER = f"Tables ({' '.join('*' + suffix for suffix in TABLE_SUFFIXES)});;CSV tables (*.csv *.tsv *.txt);;Parquet tables (*.parquet);;All files (*)"
SOBOL_SIZES = [2**k for k in range(6, 17)]
# engine.stats.screening.MEASURES, without importing the engine's numerics here (a test checks they agree).
METHODS = ("sobol", "morris", "fast", "rbd_fast", "delta", "pawn", "dgsm")
DEFAULT_NETWORKS = 5
TARGET_NAMES = ("type", "target", "class", "label", "outcome", "y")
# A fast training finishes an epoch every few milliseconds; the loss curve is redrawn at most this often.
LOSS_REDRAW_MS = 100


def default_target(columns: list[str]) -> str:
    lower = {c.lower(): c for c in columns}
    for name in TARGET_NAMES:
        if name in lower:
            return lower[name]
    rest = [c for c in columns if c.lower() != "split"]
    return rest[-1] if rest else columns[-1]


def parse_hidden(text: str) -> tuple[int, ...]:
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    if not parts or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"hidden layer widths are positive integers separated by commas, not '{text}'")
    return tuple(int(p) for p in parts)


def form_box(title: str, rows: list) -> QGroupBox:
    """A titled group of form rows: (label, widget or layout) pairs, or a widget or layout spanning the row."""
    box = QGroupBox(title)
    form = QFormLayout(box)
    compact(form)
    for row in rows:
        if isinstance(row, tuple):
            form.addRow(*row)
        else:
            form.addRow(row)
    return box


def run_button(text: str, slot: Callable[[], object]) -> QPushButton:
    button = QPushButton(text)
    button.setObjectName("runButton")
    button.clicked.connect(slot)
    return button


class TabularPanel(QWidget):
    error = Signal(str, str)  # title, message
    status = Signal(str)
    table_opened = Signal(object)  # engine.tables.Table
    trained = Signal(object)  # TrainedModel
    sobol_done = Signal(object)  # SobolResult (the ensemble's mean)
    methods_done = Signal(object)  # list of EnsembleResult, one per method run
    reduction_done = Signal(object)  # ReductionResult

    def __init__(self, jobs: JobManager, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.jobs = jobs
        self.table = None
        self.model_result = None  # TrainedModel: the ensemble's first network (its loss curve and metrics are shown)
        self.networks: list = []  # every TrainedModel of the ensemble
        self.ensembles: dict = {}  # method -> EnsembleResult
        self.prepared: dict = {}  # how the table became the networks' data (target, missing, seed)
        self.saved_networks: dict | None = None  # a restored session's networks, rebuilt once its table is open
        self.workers: int | None = None  # processes for the reduction's retrainings (None: the cores available)
        self.sobol = None
        self.reduction = None
        self.job: Job | None = None
        self.pending_target: str | None = None  # a restored session's target, chosen when its table opens
        self.pending_results: tuple | None = None  # a restored session's (Sobol, reduction), kept when its table opens
        self.losses: list[EpochLosses] = []  # the running training's epochs, as the engine reports them
        self._training_job: Job | None = None  # only its epochs feed the loss curve (a reduction trains too)
        self._reduction_job: Job | None = None
        self._loss_redraw = QTimer(self)
        self._loss_redraw.setSingleShot(True)
        self._loss_redraw.setInterval(LOSS_REDRAW_MS)
        self._loss_redraw.timeout.connect(self._draw_losses)

        layout = QHBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self._build_controls())
        layout.addWidget(self._build_results(), 1)
        self._update_buttons()

    # ---------------------------------------------------------------- building
    def _build_controls(self) -> QWidget:
        """The left column: the four groups of settings in a scroll area, then progress and Cancel."""
        controls = QWidget()
        controls_layout = QVBoxLayout(controls)
        controls_layout.setContentsMargins(0, 0, 4, 0)
        controls_layout.setSpacing(4)
        for box in (self._build_data_box(), self._build_network_box(), self._build_sobol_box(), self._build_reduction_box()):
            controls_layout.addWidget(box)
        controls_layout.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(controls)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setFormat("idle")
        self.progress.setValue(0)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        left = QWidget()
        left_layout = QVBoxLayout(left)
        left_layout.setContentsMargins(0, 0, 0, 0)
        left_layout.addWidget(scroll, 1)
        left_layout.addWidget(self.progress)
        left_layout.addWidget(self.cancel_button)
        left.setMinimumWidth(250)
        left.setMaximumWidth(330)
        return left

    def _build_data_box(self) -> QGroupBox:
        self.path_label = QLabel("No table open")
        self.path_label.setObjectName("hint")
        self.path_label.setWordWrap(True)
        self.open_button = QPushButton("Open table...")
        self.open_button.clicked.connect(self.choose_table)
        self.demo_button = QPushButton("Pima demo")
        self.demo_button.setToolTip("The Pima Indians diabetes table shipped with Sensiscope (532 rows, 7 features, target 'type')")
        self.demo_button.clicked.connect(lambda: self.open_table(PIMA))
        self.target_box = QComboBox()
        self.target_box.setToolTip("The column the network predicts")
        self.target_box.currentTextChanged.connect(self._target_changed)
        self.missing_box = QComboBox()
        self.missing_box.addItems(MISSING_POLICIES)
        self.missing_box.setToolTip("Missing values: refuse (error), drop the rows, or impute (median / most frequent category)")
        buttons = QHBoxLayout()
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.demo_button)
        return form_box("Data", [buttons, self.path_label, ("Target", self.target_box), ("Missing", self.missing_box)])

    def _build_network_box(self) -> QGroupBox:
        defaults = TABULAR_TRAINING
        self.hidden_edit = QLineEdit(", ".join(str(width) for width in defaults["hidden"]))
        self.hidden_edit.setToolTip("Widths of the hidden layers, comma separated")
        self.activation_box = QComboBox()
        self.activation_box.addItems(ACTIVATIONS)
        self.activation_box.setCurrentText(defaults["activation"])
        self.activation_box.setToolTip("Activation after each hidden layer")
        self.epochs_spin = spin_box(1, 5000, defaults["epochs"], "Maximum epochs (training stops early when the validation loss stalls)")
        self.lr_spin = double_box(1e-5, 1.0, defaults["lr"], 5, 1e-3, "Learning rate (AdamW)")
        self.dropout_spin = double_box(0.0, 0.9, defaults["dropout"], 2, 0.05, "Dropout after each hidden layer")
        self.patience_spin = spin_box(1, 5000, defaults["patience"], "Early stopping: epochs without a better validation loss before training stops")
        self.seed_spin = spin_box(0, 2**31 - 1, defaults["seed"], "Seed of the initialisation, the batches and the validation split")
        self.networks_spin = spin_box(1, 50, DEFAULT_NETWORKS, "Networks trained with seeds s, s+1, ... on the same split; every analysis runs on each and reports their mean and spread")
        self.train_button = run_button("Train", self.train)
        rows = [("Hidden", self.hidden_edit), ("Activation", self.activation_box), ("Epochs", self.epochs_spin), ("Learning rate", self.lr_spin)]
        rows += [("Dropout", self.dropout_spin), ("Patience", self.patience_spin), ("Seed", self.seed_spin), ("Networks", self.networks_spin), self.train_button]
        return form_box("Network", rows)

    def _build_sobol_box(self) -> QGroupBox:
        self.n_box = QComboBox()
        for n in SOBOL_SIZES:
            self.n_box.addItem(str(n), n)
        self.n_box.addItem("auto", "auto")
        self.n_box.setCurrentText("1024")
        self.n_box.setToolTip("Base sample size N (a power of two); the model is evaluated N (D + 2) times, N (2D + 2) with S2. "
                              "auto: N doubles until the widest ST interval is below 0.02 or 2,000,000 evaluations")
        self.dist_box = QComboBox()
        self.dist_box.addItems(DISTRIBUTIONS)
        self.dist_box.setToolTip("How inputs are drawn: the data's own (empirical, the default), uniform on the observed range, or normal / truncated normal")
        self.method_box = QComboBox()
        self.method_box.addItems([*METHODS, "all"])
        self.method_box.setToolTip("Sobol, Morris, FAST, RBD-FAST, DGSM (sampled), delta and PAWN (on the table's rows); 'all' runs every method and compares their rankings")
        self.s2_box = QCheckBox("second order (S2)")
        self.sobol_button = run_button("Run analysis", self.run_sobol)
        return form_box("Sensitivity", [("Method", self.method_box), ("N", self.n_box), ("Inputs", self.dist_box), self.s2_box, self.sobol_button])

    def _build_reduction_box(self) -> QGroupBox:
        self.seeds_spin = spin_box(1, 20, 3, "Trainings per k (their mean and spread are plotted)")
        self.tolerance_spin = double_box(0.0, 0.5, 0.01, 3, 0.005, "Largest accepted loss of accuracy against the full model")
        self.reduce_epochs_spin = spin_box(1, 5000, TABULAR_TRAINING["epochs"], "Maximum epochs of each retraining")
        self.reduce_button = run_button("Run reduction", self.run_reduction)
        return form_box("Input reduction", [("Seeds", self.seeds_spin), ("Tolerance", self.tolerance_spin), ("Epochs", self.reduce_epochs_spin), self.reduce_button])

    def _build_results(self) -> QTabWidget:
        """The right side: the table and its statistics, the training curves and metrics, Sobol and reduction."""
        self.frame_model = FrameModel(self)
        self.stats_model = StatsModel(self)
        self.table_view = table_view(self.frame_model)
        self.stats_view = table_view(self.stats_model)
        self.stats_view.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.stats_view.horizontalHeader().setStretchLastSection(True)
        data_split = QSplitter(Qt.Orientation.Vertical)
        data_split.addWidget(self.stats_view)
        data_split.addWidget(self.table_view)
        data_split.setSizes([260, 400])
        self.loss_plot = LossPlot()
        self.metrics_label = QLabel("Train a network to see its test metrics.")
        self.metrics_label.setTextFormat(Qt.TextFormat.RichText)
        self.metrics_label.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self.metrics_label.setMinimumWidth(260)
        self.metrics_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        training = QWidget()
        training_layout = QHBoxLayout(training)
        training_layout.addWidget(self.loss_plot, 1)
        training_layout.addWidget(self.metrics_label)
        self.sobol_view = SobolView()
        self.methods_view = MethodsView()
        self.reduction_view = ReductionView()
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(data_split, "Data")
        self.tabs.addTab(training, "Training")
        self.tabs.addTab(self.sobol_view, "Sobol")
        self.tabs.addTab(self.reduction_view, "Reduction")
        self.tabs.addTab(self.methods_view, "Methods")
        return self.tabs

    def _update_buttons(self) -> None:
        busy = self.job is not None and not self.job.ended
        self.train_button.setEnabled(not busy and self.table is not None)
        self.sobol_button.setEnabled(not busy and self.model_result is not None)
        self.reduce_button.setEnabled(not busy and self.sobol is not None and self.model_result is not None)
        self.open_button.setEnabled(not busy)
        self.demo_button.setEnabled(not busy)
        self.cancel_button.setEnabled(busy)

    # ---------------------------------------------------------------- jobs
    def _start(self, fn, title: str, lane: str, on_done) -> Job:
        job = self.jobs.submit(fn, title, lane=lane, key="tabular")
        self.job = job
        self.progress.setValue(0)
        self.progress.setFormat(f"{title}: queued")
        job.signals.progress.connect(lambda fraction, message, data: self._progress(job, fraction, message, data))
        job.signals.finished.connect(lambda result: self._ended(job, f"{title}: done", on_done, result))
        job.signals.failed.connect(lambda exc: self._ended(job, f"{title}: failed") or self.error.emit(f"{title} failed", error_text(exc)))
        job.signals.cancelled.connect(lambda: self._ended(job, f"{title}: cancelled"))
        self._update_buttons()
        return job

    def _progress(self, job: Job, fraction: float, message: str, data: object = None) -> None:
        self.progress.setValue(int(fraction * 1000))
        self.progress.setFormat(f"{message} (%p%)" if message else "%p%")
        if job is self._reduction_job:
            self.reduction_view.show_running(message)
        if isinstance(data, EpochLosses) and job is self._training_job:
            if data.epoch == 1:  # the next network of the ensemble: its own curve
                self.losses = []
            self.losses.append(data)
            if not self._loss_redraw.isActive():
                self._loss_redraw.start()

    def _ended(self, job: Job, text: str, on_done=None, result=None) -> None:
        if job is self.job:
            self.job = None
            self.progress.setValue(1000 if on_done is not None else 0)
            self.progress.setFormat(text)
        self.status.emit(text)
        if on_done is not None:
            on_done(result)
        self._update_buttons()

    def cancel(self) -> None:
        if self.job is not None:
            self.jobs.cancel(self.job)

    # ---------------------------------------------------------------- table
    def choose_table(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open table", "", TABLE_FILTER)
        if path:
            self.open_table(path)

    def open_table(self, spec: str) -> Job:
        self.table_spec = str(spec)  # recorded in File > Recent tables once it opens
        def load(progress, cancel):
            from engine.app.data import load_table, resolve_table

            progress(0.05, "reading")
            return load_table(resolve_table(str(spec)), progress=lambda fraction, message="", data=None: progress(0.05 + 0.9 * fraction, message), cancel=cancel)

        name = "the Pima demo" if spec == PIMA else Path(spec).name
        return self._start(load, f"Opening {name}", FILE_LANE, self.show_table)

    def show_table(self, table) -> None:
        self.table = table
        self.model_result = self.sobol = self.reduction = None
        self.networks, self.ensembles = [], {}
        names = [c.name for c in table.columns]
        target = self.pending_target if self.pending_target in names else default_target(names)
        self.pending_target = None
        self.path_label.setText(f"{table.path.name}: {table.n_rows} rows, {len(names)} columns" + (f"<br>{'<br>'.join(table.warnings[:3])}" if table.warnings else ""))
        self.path_label.setToolTip(str(table.path))
        self.frame_model.set_frame(table.frame, target)
        self.stats_model.set_columns(table.columns, target)
        self.target_box.blockSignals(True)
        self.target_box.clear()
        self.target_box.addItems(names)
        self.target_box.setCurrentText(target)
        self.target_box.blockSignals(False)
        self.table_view.resizeColumnsToContents()
        self.losses = []
        self._loss_redraw.stop()
        self.loss_plot.reset()
        self.metrics_label.setText("Train a network to see its test metrics.")
        self.tabs.setCurrentIndex(0)
        if self.pending_results is not None:
            self.restore_results(*self.pending_results)
        self._update_buttons()
        self.table_opened.emit(table)

    def restore_results(self, results, reduction) -> None:
        """Show a session's saved results as they were (nothing is recomputed); its networks, loss
        curve and metrics come back once the table is open, so an analysis can run again."""
        self.pending_results = None
        if not isinstance(results, TableResults):
            results = TableResults(sobol=results)
        self.sobol, self.reduction = results.sobol, reduction
        self.ensembles = dict(results.ensembles)
        sobol_ensemble = self.ensembles.get("sobol")
        if results.sobol is not None:
            spread = sobol_ensemble.spread if sobol_ensemble is not None and len(sobol_ensemble.runs) > 1 else None
            self.sobol_view.show_result(results.sobol, spread)
        if self.ensembles:
            self.methods_view.show_results(self.ensembles)
        if reduction is not None:
            self.reduction_view.show_result(reduction)
        self.saved_networks = results.networks
        if self.table is not None and results.networks:
            self._restore_networks(results.networks)
        self._update_buttons()

    def _restore_networks(self, record: dict) -> None:
        from engine.core.errors import UserError

        try:
            networks = restore_networks(self.table, record)
        except (UserError, ValueError, KeyError, TypeError) as exc:
            self.status.emit(f"The session's networks were not restored: {exc}")
            return
        self.networks, self.prepared, self.saved_networks = networks, dict(record.get("prepared") or {}), None
        self._trained(networks)

    def _target_changed(self, target: str) -> None:
        self.frame_model.set_target(target)
        self.stats_model.set_target(target)

    def target(self) -> str:
        return self.target_box.currentText()

    # ---------------------------------------------------------------- training
    def train_settings(self, epochs: int | None = None) -> dict:
        """The TrainConfig arguments from the form (read on the main thread; the config is built in the job)."""
        return {
            "hidden": parse_hidden(self.hidden_edit.text()),
            "activation": self.activation_box.currentText(),
            "epochs": epochs or self.epochs_spin.value(),
            "lr": self.lr_spin.value(),
            "dropout": self.dropout_spin.value(),
            "patience": self.patience_spin.value(),
            "seed": self.seed_spin.value(),
        }

    def train(self) -> Job | None:
        if self.table is None:
            return None
        try:
            settings = self.train_settings()
        except ValueError as exc:
            self.error.emit("Cannot train", str(exc))
            return None
        table, target, missing, count = self.table, self.target(), self.missing_box.currentText(), self.networks_spin.value()
        run = training_job(table, target, missing, count, settings)
        self.losses = []
        self.loss_plot.reset()
        self.metrics_label.setText("Training...")
        self.tabs.setCurrentIndex(1)
        self.sobol = self.reduction = None
        self.ensembles = {}
        self.prepared = {"target": target, "missing": missing, "seed": settings["seed"]}
        self._training_job = self._start(run, f"Training {count} network{'s' if count > 1 else ''} on {table.path.name}", DEVICE_LANE, self._trained)
        return self._training_job

    def _draw_losses(self) -> None:
        validation = [epoch.validation for epoch in self.losses if epoch.validation is not None]
        self.loss_plot.set_history([epoch.loss for epoch in self.losses], validation)

    def _trained(self, networks) -> None:
        self._loss_redraw.stop()  # the history below has every epoch and the best one
        self.networks = list(networks)
        trained = self.model_result = self.networks[0]
        history = trained.history
        self.loss_plot.set_history(history.get("train_loss", []), history.get("val_loss", []), history.get("best_epoch"))
        self.metrics_label.setText(ensemble_metrics_html(self.networks, metrics_html(trained.metrics, trained.elapsed_s, history)))
        self.trained.emit(trained)

    # ---------------------------------------------------------------- Sobol
    def run_sobol(self) -> Job | None:
        """Run the chosen method ('all': every method) on every network of the ensemble."""
        networks = self.networks or ([self.model_result] if self.model_result is not None else [])
        if not networks:
            return None
        choice = self.method_box.currentText()
        methods = list(METHODS) if choice == "all" else [choice]
        n, dist, second, seed = self.n_box.currentData(), self.dist_box.currentText(), self.s2_box.isChecked(), self.seed_spin.value()
        run = analysis_job(networks, methods, n, dist, second, seed)
        self.tabs.setCurrentWidget(self.sobol_view if methods == ["sobol"] else self.methods_view)
        what = f"Sobol N = {n}" if methods == ["sobol"] else (f"{len(methods)} methods" if len(methods) > 1 else methods[0])
        return self._start(run, f"{what} on {len(networks)} network{'s' if len(networks) > 1 else ''}", DEVICE_LANE, self._analysis_ready)

    def _analysis_ready(self, results) -> None:
        from engine.app.tabular import mean_sobol

        for ensemble in results:
            self.ensembles[ensemble.method] = ensemble
        self.methods_view.show_results(self.ensembles, results[-1].method)
        sobol = next((e for e in results if e.method == "sobol"), None)
        if sobol is not None:
            self.sobol = mean_sobol(sobol)
            self.sobol_view.show_result(self.sobol, sobol.spread if len(sobol.runs) > 1 else None)
            self.sobol_done.emit(self.sobol)
        self.methods_done.emit(results)

    # ---------------------------------------------------------------- reduction
    def run_reduction(self) -> Job | None:
        if self.sobol is None or self.model_result is None:
            return None
        # The ensemble's mean ST decides the order (the one network's when there is no ensemble).
        ensemble = self.ensembles.get("sobol")
        data, ranking = self.model_result.data, (ensemble.ranking() if ensemble is not None else self.sobol.ranking("ST"))
        try:
            settings = self.train_settings(self.reduce_epochs_spin.value())
        except ValueError as exc:
            self.error.emit("Cannot run the reduction", str(exc))
            return None
        seeds, tolerance = self.seeds_spin.value(), self.tolerance_spin.value()

        run = reduction_job(data, ranking, settings, seeds, tolerance, self.workers)
        self.tabs.setCurrentWidget(self.reduction_view)
        self.reduction_view.show_running("starting the retrainings")
        self._reduction_job = self._start(run, "Input reduction", DEVICE_LANE, self._reduction_ready)
        return self._reduction_job

    def _reduction_ready(self, result) -> None:
        self.reduction = result
        self.reduction_view.show_result(result)
        self.reduction_done.emit(result)

    # ---------------------------------------------------------------- export
    def export_results(self, folder: str | Path) -> Job | None:
        """Write the Sobol, ensemble, comparison and reduction CSVs and charts and the trained networks to a folder, in a file-lane job."""
        networks = list(self.networks) or ([self.model_result] if self.model_result is not None else [])
        values = (self.sobol, self.reduction, dict(self.ensembles), networks)
        if not any(values):
            self.error.emit("Nothing to export", "Train a network or run an analysis first.")
            return None

        job = self.jobs.submit(lambda progress, cancel: export_results(folder, *values), f"Exporting tabular results to {Path(folder).name}", lane=FILE_LANE)
        job.signals.finished.connect(lambda files: self.status.emit(f"Wrote {len(files)} file(s) to {folder}"))
        job.signals.failed.connect(lambda exc: self.error.emit("Cannot export the results", error_text(exc)))
        return job
