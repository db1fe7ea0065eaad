"""Loading models in the main window: every load through one path (a job, a failure shown in one
line, a cancel or failure leaving the loaded model shown), the user's own model class (Open Python
class...) and the model files the command line names."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialog, QFileDialog

from engine.core.errors import UntrustedFile, WeightsMismatch

from .jobs import error_text
from .model_names import model_title
from .panels.class_dialog import PYTHON_FILTER, ClassDialog
from .panels.messages_panel import gui_words

# A weights file given on the command line without --model, and without a sidecar naming its
# architecture, is opened for this one (the engine's own example architecture).
DEFAULT_WEIGHTS_ARCHITECTURE = "resnet18"


class ModelActions:
    """The model's loading for a MainWindow (``window.models``)."""

    def __init__(self, window) -> None:
        self.window = window
        self.startup: tuple[list[str], str, dict] | None = None  # command-line model files: opened once the engine lists the models
        self.dialog: ClassDialog | None = None  # Open Python class, while open
        self.last_class: tuple | None = None  # the class last chosen in the dialog: Open Python class... starts from it

    def engine_ready(self) -> None:
        if self.startup is not None:
            self.open_startup_models()

    def load(self, spec: str, weights: str, labels: str, trust: bool, model_args: dict | None = None, file_fallback: bool = False, note: str = "") -> None:
        """Load a model in a job (see Workspace.load_model); a failure or a cancel leaves the loaded one
        shown. ``note``: a sentence added to a failure (why this architecture was assumed)."""
        self.window.model_panel.set_busy(True, f"Loading {model_title(spec, weights)}...")
        extra = {key: value for key, value in (("model_args", dict(model_args or {})), ("file_fallback", file_fallback)) if value}
        job = self.window.workspace.load_model(spec, weights, labels, trust, **extra)
        job.signals.failed.connect(lambda error: self.failed(spec, weights, labels, trust, error, model_args, file_fallback, note))
        self.watch(job)

    def watch(self, job) -> None:
        """A cancelled load that no newer one replaced: the panel shows the loaded model again."""
        ticket = self.window.workspace.model_requests
        job.signals.cancelled.connect(lambda: self.window.model_panel.load_cancelled() if ticket == self.window.workspace.model_requests else None)

    def failed(self, spec: str, weights: str, labels: str, trust: bool, error: BaseException, model_args: dict | None = None, file_fallback: bool = False, note: str = "") -> None:
        model = self.window.workspace.model
        current = model_title(model.ref.get("spec", model.loaded.spec), model.ref.get("weights", "")) if model is not None else ""
        message = gui_words(error_text(error))
        if note and isinstance(error, WeightsMismatch):
            message = f"{message}. {note}"
        self.window.model_panel.load_failed(spec, weights, labels, message, current)
        if trust or not isinstance(error, UntrustedFile):
            return
        # A pickled model: asked by the error's type. Weights opened for an architecture that turned out
        # to be a whole pickled model load as that model file once trusted.
        # The question names the pickle that would be opened (the weights file, or a Hugging Face
        # folder's pytorch_model.bin), never the architecture it is loaded for.
        if self.window.model_panel.confirm_trust(str(error.path)):
            if file_fallback and weights:
                self.load(weights, "", labels, True)
            else:
                self.load(spec, weights, labels, True, model_args)

    # ---------------------------------------------------------------- the user's own model
    def open_python_class(self, path: str = "", class_name: str = "", weights: str = "", model_args: dict | None = None) -> ClassDialog | None:
        """File > Open Python class... (and the Model panel's Python class... button): pick a .py file
        (unless given, or chosen before: then the dialog starts from that choice), then its class,
        optional weights and constructor arguments in a dialog that says loading runs the file; its
        Load button loads the model in a job, as every load."""
        if not path and not class_name and self.last_class is not None:
            path, class_name, weights, model_args = self.last_class  # again, to change the arguments or weights (Browse... for another file)
        elif not path and not class_name:
            start = str(self.window.settings.value("model/class_folder", "") or "")
            path, _ = QFileDialog.getOpenFileName(self.window, "Open the Python file of your model class", start, PYTHON_FILTER)
            if not path:
                return None
        if self.dialog is not None:
            self.dialog.close()
        dialog = ClassDialog(self.window, path, class_name, weights, model_args)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.finished.connect(lambda result, dialog=dialog: self._class_chosen(dialog, result))
        self.dialog = dialog
        dialog.open()  # window-modal, and the event loop keeps running (jobs report meanwhile)
        return dialog

    def _class_chosen(self, dialog: ClassDialog, result: int) -> None:
        if self.dialog is dialog:
            self.dialog = None
        if result != QDialog.DialogCode.Accepted or not dialog.spec():
            return
        self.window.settings.setValue("model/class_folder", str(Path(dialog.file_edit.text()).parent))
        self.last_class = (dialog.file_edit.text().strip(), dialog.chosen_class().name, dialog.weights(), dict(dialog.model_args))
        self.window.model_panel.last_file = ""
        self.load(dialog.spec(), dialog.weights(), self.window.model_panel.labels_path, False, dialog.model_args)

    # ---------------------------------------------------------------- command line
    def open_paths(self, paths: list[str], model: str = "", model_args: dict | None = None) -> None:
        """Open what the command line names: images, folders, sessions, tables and stores at once;
        model and weights files (and ``model``, an architecture or net.py:Class) once the engine has
        listed the models. A weights file goes with ``model``, else with the architecture its sidecar
        names, else with DEFAULT_WEIGHTS_ARCHITECTURE."""
        models = [path for path in paths if self.window.habits.is_model_path(path)]
        for path in paths:
            if path not in models:
                self.window.habits.open_path(path)
        if models or model:
            self.startup = (models, model, dict(model_args or {}))
            if self.window.workspace.info is not None:
                self.open_startup_models()

    def open_startup_models(self) -> None:
        paths, model, model_args = self.startup
        self.startup = None
        panel = self.window.model_panel
        if not paths:
            self.load(model, "", panel.labels_path, False, model_args)
            return
        for path in paths:
            if path.lower().endswith(".py"):
                self.open_python_class(path)
                continue
            plan = panel.plan_file(path, model or DEFAULT_WEIGHTS_ARCHITECTURE, model_args)
            if plan[0] != "weights" or model:
                panel.open_file(path, architecture=model or DEFAULT_WEIGHTS_ARCHITECTURE, model_args=model_args)
                continue
            # No --model: the assumed architecture shows as the one chosen, and a failure says how to choose another.
            index = panel.index_of_name(DEFAULT_WEIGHTS_ARCHITECTURE)
            if index >= 0:
                panel.model_box.setCurrentIndex(index)
            panel.last_file = path
            note = (f"{DEFAULT_WEIGHTS_ARCHITECTURE} was assumed, as no --model was given and no sidecar names the architecture: "
                    "start with --model ARCH, or choose the architecture under Model and open the file again")
            self.load(DEFAULT_WEIGHTS_ARCHITECTURE, path, panel.labels_path, False, None, True, note)

