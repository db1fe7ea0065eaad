"""The workspace: the loaded model, the open dataset and the current input, changed only through jobs.

Every engine call here runs in a job (gui/jobs.py); the main thread only receives results. The
engine module is imported lazily, inside the first job, so the window appears before torch loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PySide6.QtCore import QObject, Signal

from .jobs import DEVICE_LANE, FILE_LANE, Job, JobManager, error_text
from .model_names import model_title

DEMO_MODEL = "demo:ultrasound"
PREDICT_BATCH = 16
@dataclass
class EngineInfo:
    methods: list  # MethodSpec
    models: list[str]
    devices: list  # DeviceInfo
    default_device: str
    version: str


@dataclass
class ModelState:
    loaded: Any  # engine.LoadedModel
    layers: list  # engine.summary.LayerInfo
    conv_layers: list[str]
    input_shape: tuple[int, ...]
    ref: dict = field(default_factory=dict)  # how it was loaded: spec, weights, labels, trust, model_args (for sessions)


@dataclass
class InputState:
    item: Any  # engine.InputItem
    tensor: Any  # torch.Tensor, C x H x W, preprocessed for the current model
    image: np.ndarray  # display image at model resolution, H x W x C in [0, 1]
    mask: np.ndarray | None  # boolean H x W at model resolution
    name: str = ""
    notes: list[str] = field(default_factory=list)


@dataclass
class Predictions:
    """Predict all's answer: (label, probability) per item, None for a file that could not be read."""

    results: list
    skipped: list[str]

    def scores(self, labels: list[str]) -> tuple[float | None, list[str], np.ndarray]:
        """Accuracy over the items with a known class, and the confusion matrix (rows: true class,
        columns: predicted class, both in the order of ``classes``)."""
        pairs = [(label, result[0]) for label, result in zip(labels, self.results, strict=True) if label and result is not None]
        if not pairs:
            return None, [], np.zeros((0, 0), int)
        classes = sorted({label for pair in pairs for label in pair})
        matrix = np.zeros((len(classes), len(classes)), int)
        for truth, guess in pairs:
            matrix[classes.index(truth), classes.index(guess)] += 1
        return float(np.trace(matrix)) / len(pairs), classes, matrix


def _start_engine(progress, cancel) -> EngineInfo:
    progress(0.1, "importing torch")
    from engine.app import explain as app_explain
    from engine.app import models as app_models
    from engine.app import system as app_system
    from engine.app.system import describe_device, select_device
    from engine.core.versions import app_version

    progress(0.6, "listing methods and devices")
    methods = app_explain.available_methods()
    devices = app_system.list_devices()
    return EngineInfo(methods, [DEMO_MODEL, *app_models.classification_models()], devices, describe_device(select_device("auto")).spec, app_version())


def _input_size(loaded) -> tuple[int, ...]:
    pre = loaded.preprocess
    side = pre.crop or pre.resize or 224
    return (pre.channels, side, side)


class Workspace(QObject):
    engine_ready = Signal(object)  # EngineInfo
    model_loaded = Signal(object)  # ModelState
    dataset_opened = Signal(object)  # engine.data.InputScan
    input_changed = Signal(object)  # InputState
    prediction_ready = Signal(list)  # [(label, probability)], best first
    error = Signal(str, str)  # title, message
    status = Signal(str)

    def __init__(self, jobs: JobManager, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.jobs = jobs
        self.info: EngineInfo | None = None
        self.model: ModelState | None = None
        self.scan = None
        self.current: InputState | None = None
        self.device = "cpu"
        self.data_ref: dict | None = None  # how the open dataset was opened: path, demo (for sessions)
        self._pending_item = None
        self._scan_job: Job | None = None  # a data set being opened: its selection, not the old one, is next
        self.model_requests = 0  # counts load_model calls: a cancelled load that was superseded is told apart

    # ---------------------------------------------------------------- helpers
    def _submit(self, fn, title: str, *, lane: str, key: str | None = None, on_done=None, error_title: str = "", quiet: bool = False) -> Job:
        job = self.jobs.submit(fn, title, lane=lane, key=key, quiet=quiet)
        if on_done is not None:
            job.signals.finished.connect(on_done)
        if not quiet:
            job.signals.failed.connect(lambda error: self.error.emit(error_title or f"{title} failed", error_text(error)))
        return job

    def label(self, index: int) -> str:
        return self.model.loaded.label(index) if self.model else f"class {index}"

    # ---------------------------------------------------------------- engine
    def start_engine(self) -> Job:
        return self._submit(_start_engine, "Starting the engine", lane=FILE_LANE, key="engine", on_done=self._engine_started, error_title="The engine cannot start")

    def _engine_started(self, info: EngineInfo) -> None:
        self.info = info
        self.device = info.default_device
        self.engine_ready.emit(info)

    def set_device(self, spec: str) -> None:
        self.device = spec
        if self.model is not None:
            module = self.model.loaded.module

            def move(progress, cancel):
                from engine.app.system import select_device

                module.to(select_device(spec))
                return spec

            self._submit(move, f"Moving the model to {spec}", lane=DEVICE_LANE, key="device", on_done=lambda _s: self.predict(), error_title="Cannot use that device")

    # ---------------------------------------------------------------- model
    def load_model(self, spec: str, weights: str | None = None, labels: str | None = None, trust: bool = False,
                   model_args: dict | None = None, file_fallback: bool = False) -> Job:
        """Load a model in a job: ``spec`` with ``weights``, ``labels`` and, for a class of the user's
        code (``net.py:Net``), its constructor arguments ``model_args``.

        ``file_fallback``: ``weights`` is a file the user opened for the architecture ``spec``; when it
        is not a state dict it is tried as a model file of its own (TorchScript, ONNX, .pt2). A state
        dict that does not fit ``spec`` fails with the engine's one-line message.
        """
        device = self.device
        model_args = dict(model_args or {})
        self.model_requests += 1

        def load(progress, cancel):
            from engine.app import models as app_models
            from engine.app.models import conv_layers
            from engine.app.system import select_device
            from engine.core.errors import UntrustedFile, UserError, WeightsMismatch
            from engine.core.requests import ModelSpec

            progress(0.1, f"loading {title}")
            ref = {"spec": spec, "weights": weights or "", "labels": labels or "", "trust": bool(trust), "model_args": model_args}
            try:
                loaded = app_models.load(ModelSpec(spec, weights or None, labels or None, bool(trust), model_args))
            except UserError as exc:
                # Decided by trying: a state dict is a weights file; anything else (TorchScript saved
                # as .pt, a sidecar naming its own architecture) is a model file.
                if not (file_fallback and weights) or isinstance(exc, (WeightsMismatch, UntrustedFile)):
                    raise
                cancel.check()
                progress(0.3, f"{Path(weights).name} is no state dict: loading it as a model file")
                ref = {"spec": weights, "weights": "", "labels": labels or "", "trust": bool(trust), "model_args": {}}
                loaded = app_models.load(ModelSpec(weights, None, labels or None, bool(trust)))
            cancel.check()
            loaded.module.to(select_device(device))
            shape = _input_size(loaded)
            progress(0.7, "summarising layers")
            try:
                layers = app_models.summarize(loaded.module, shape, device=select_device(device))
            except Exception as exc:  # a model that rejects a zeros input still loads; the summary says why
                loaded.notes.append(f"no layer summary: {exc}")
                layers = []
            return ModelState(loaded, layers, conv_layers(layers), shape, ref)

        title = model_title(spec, weights or "")
        return self._submit(load, f"Loading model {title}", lane=DEVICE_LANE, key="model", on_done=self._model_loaded, error_title="Cannot load the model")

    def _model_loaded(self, state: ModelState) -> None:
        self.model = state
        self.status.emit(f"Model {state.loaded.spec}: {state.loaded.source}")
        self.model_loaded.emit(state)
        # The input selected last (not necessarily prepared yet), so that a slow load never brings back an older one.
        item = self._pending_item if self._pending_item is not None else (self.current.item if self.current is not None else None)
        if item is not None and (self._scan_job is None or self._scan_job.ended):
            self.select_item(item)

    # ---------------------------------------------------------------- data
    def open_dataset(self, path: str | Path | None = None, demo: bool = False) -> Job:
        def scan(progress, cancel):
            from engine.app import data as app_data
            if demo:
                from engine.app.data import demo_data_dir

                progress(0.1, "writing the demo images (first use only)")
                root = demo_data_dir()
            else:
                root = Path(path)
            return app_data.scan_inputs(root)

        title = "Opening the demo images" if demo else f"Opening {Path(path).name}"
        ref = {"path": "" if demo else str(Path(path).resolve()), "demo": demo}
        self._scan_job = self._submit(scan, title, lane=FILE_LANE, key="dataset", on_done=lambda result: self._dataset_opened(result, ref), error_title="Cannot open the data")
        return self._scan_job

    def _dataset_opened(self, scan, ref: dict | None = None) -> None:
        self.scan = scan
        self.data_ref = ref
        notes = "".join(f"; note: {note}" for note in getattr(scan, "notes", []))  # e.g. a DICOM holding fewer frames than it declares
        self.status.emit(f"{scan.root}: {len(scan.items)} input(s)" + (f", classes {', '.join(scan.classes)}" if scan.classes else "") + notes)
        self.dataset_opened.emit(scan)

    def select_item(self, item) -> Job | None:
        """Make an input current: preprocess it for the model (when one is loaded) in a job."""
        self._pending_item = item
        if self.model is None:
            self.status.emit(f"{item.name} selected; load a model to explain it")
            return None
        loaded = self.model.loaded

        def prepare(progress, cancel):
            from engine.app import data as app_data
            from engine.app.data import mask_for

            tensor, image = app_data.load_input(item, loaded.preprocess)
            mask = None
            if item.mask is not None and not item.is_tensor:
                mask = mask_for(item, loaded.preprocess)
                if mask is not None and mask.shape != tuple(tensor.shape[-2:]):
                    mask = None
            return InputState(item, tensor, image, mask, item.name)

        return self._submit(prepare, f"Preparing {item.name}", lane=FILE_LANE, key="input", on_done=self._input_ready, error_title="Cannot open the input")

    def _input_ready(self, state: InputState) -> None:
        self.current = state
        self.predict()  # queued before any analysis the new input triggers, so it shows first
        self.input_changed.emit(state)

    def predict(self) -> Job | None:
        if self.model is None or self.current is None:
            return None
        loaded, tensor = self.model.loaded, self.current.tensor

        def run(progress, cancel):
            import torch

            from engine.app.models import model_device

            with torch.inference_mode():
                logits = loaded.module(tensor.unsqueeze(0).to(model_device(loaded.module)))
            probabilities = torch.softmax(logits.float().flatten(), 0)
            top = torch.topk(probabilities, min(5, probabilities.numel()))
            return [(loaded.label(int(i)), float(p)) for p, i in zip(top.values, top.indices, strict=True)]

        return self._submit(run, f"Predicting {self.current.name}", lane=DEVICE_LANE, key="predict", on_done=self.prediction_ready.emit, error_title="Prediction failed")

    def predict_items(self, items: list, batch_size: int = PREDICT_BATCH) -> Job | None:
        """Predict many inputs in batches (device lane); the result is a Predictions (unreadable files skipped)."""
        if self.model is None or not items:
            return None
        loaded, items = self.model.loaded, list(items)

        def run(progress, cancel):
            import torch

            from engine.app import data as app_data
            from engine.app.models import model_device
            from engine.core.errors import UserError

            device = model_device(loaded.module)
            results: list = []
            skipped: list[str] = []
            for start in range(0, len(items), batch_size):
                cancel.check()
                chunk, tensors = items[start : start + batch_size], []
                for item in chunk:
                    try:
                        tensors.append(app_data.load_input(item, loaded.preprocess)[0])
                    except (UserError, OSError, ValueError) as exc:  # an unreadable file is skipped and reported, as the CLI does
                        skipped.append(f"{item.name}: {exc}")
                        tensors.append(None)
                good = [t for t in tensors if t is not None]
                groups = [torch.stack(good)] if good and len({tuple(t.shape) for t in good}) == 1 else [t.unsqueeze(0) for t in good]
                found = []
                with torch.inference_mode():
                    for batch in groups:
                        probabilities = torch.softmax(loaded.module(batch.to(device)).float().flatten(1), 1)
                        best = probabilities.max(1)
                        found += [(loaded.label(int(i)), float(p)) for p, i in zip(best.values, best.indices, strict=True)]
                found.reverse()
                results += [found.pop() if t is not None else None for t in tensors]
                progress(len(results) / len(items), f"{len(results)} of {len(items)}")
            return Predictions(results, skipped)

        return self._submit(run, f"Predicting {len(items)} input(s)", lane=DEVICE_LANE, key="predict-all", error_title="Prediction failed")

    # ---------------------------------------------------------------- analyses
    def analysis_job(self, method: str, params: dict, target: int | None, key: str, state: InputState | None = None) -> Job | None:
        """A device-lane job running one method on the current (or given) input; None without model or input."""
        state = state or self.current
        if self.model is None or state is None:
            self.error.emit("Nothing to explain", "Load a model and choose an input first.")
            return None
        loaded, device = self.model.loaded, self.device

        def run(progress, cancel):
            from engine.app import explain as app_explain
            return app_explain.explain(loaded, state.tensor, method, target, params, device=device, progress=progress, cancel=cancel)

        return self.jobs.submit(run, f"{method} on {state.name}", lane=DEVICE_LANE, key=key)
