"""The document: what the desktop app shows, as plain Python (no Qt), observed by the views.

The state of the image workflow lives here, not in widgets: the model (its reference and its
provenance, including whether its weights are a random initialisation), the current input, and the
list of analyses, each with the request it answers (method, parameters, target, model, input), its
status and its result. Views subscribe to change events and draw what the document says; they
never decide on their own what is current. This is the model/view split napari keeps between its
layer list and its Qt widgets.

A result is applied to the analysis it was started for, and only if that analysis has not changed
since: :meth:`Document.start` returns a *generation* number that the job carries, and
:meth:`Document.finish` drops a result whose generation is no longer the analysis's (the input or
the model changed, the analysis was re-run or removed). So a map on screen always belongs to the
request its cell names.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import count
from typing import Any

PENDING, RUNNING, DONE, FAILED, CANCELLED = "pending", "running", "done", "failed", "cancelled"
UNTRAINED_WORDS = "random initialisation"  # how engine.models.loading describes a model built without weights

# Parameters worth naming in a title even at their default value.
KEY_PARAMS = {"local": ("mode", "window", "stride"), "gradcam": ("layer",), "gradcam++": ("layer",), "pertmap": ("steps", "lam"), "actmax": ("objective", "steps"), "sobol": ("regions", "n")}


@dataclass(frozen=True)
class ModelInfo:
    """Which model made a map, and where its weights came from."""

    spec: str
    weights: str = ""
    labels: str = ""
    source: str = ""  # the loader's description (engine LoadedModel.source)
    untrained: bool = False  # random weights: its predictions mean nothing
    model_args: str = ""  # a class model's constructor arguments, as canonical JSON ("" for none)

    @classmethod
    def from_loaded(cls, loaded, ref: dict) -> ModelInfo:
        source = str(getattr(loaded, "source", ""))
        args = json.dumps(ref["model_args"], sort_keys=True) if ref.get("model_args") else ""
        return cls(str(ref.get("spec", loaded.spec)), str(ref.get("weights", "")), str(ref.get("labels", "")), source, UNTRAINED_WORDS in source, args)

    def key(self) -> tuple[str, ...]:
        """Which model: the same class built with other arguments is another model."""
        return (self.spec, self.weights, self.labels) + ((self.model_args,) if self.model_args else ())

    def name(self) -> str:
        """A short name: the file name of a path, the spec otherwise; the weights file when there is one."""
        base = self.spec.replace("\\", "/").rsplit("/", 1)[-1]
        if self.weights:
            base += " + " + self.weights.replace("\\", "/").rsplit("/", 1)[-1]
        return base

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class InputInfo:
    """The input a map explains: its file and the name shown for it."""

    path: str
    name: str
    label: str = ""  # its class, when the data set has classes


@dataclass
class AnalysisRequest:
    """What an analysis asks: a method with its parameters, for one target, on one input, with one model."""

    method: str
    params: dict[str, Any]
    target: int | None
    target_label: str
    input_name: str
    defaults: dict[str, Any] = field(default_factory=dict)
    input_path: str = ""
    model: ModelInfo | None = None

    def identity(self) -> tuple:
        """What makes two requests the same computation (the target's shown label is not part of it)."""
        params = tuple(sorted((name, repr(value)) for name, value in self.params.items()))
        return (self.method, params, self.target, self.input_path, self.model.key() if self.model else None)

    def key_params(self) -> str:
        shown = []
        for name, value in self.params.items():
            if name in KEY_PARAMS.get(self.method, ()) or (name in self.defaults and value != self.defaults[name]):
                if value == "" or name in ("mean", "std"):
                    continue
                shown.append(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}")
        return ", ".join(shown)


@dataclass
class Analysis:
    """One analysis of the document: its request, status and (when done) result."""

    id: int
    request: AnalysisRequest
    status: str = PENDING
    result: Any = None  # engine Explanation
    image: Any = None  # the display image under the map (H x W x C in [0, 1])
    mask: Any = None
    error: str = ""
    generation: int = 0
    fraction: float = 0.0
    message: str = ""
    # Where a stored result came from (a data-set run's result store: its folder, model and record),
    # None for an analysis computed here. A stored analysis is born done and never gets a job; it
    # does not follow the current input or model, and it is nobody's unsaved work (the store has it).
    origin: dict | None = None


@dataclass(frozen=True)
class Event:
    """A change of the document: ``kind`` is model, input, added, changed, removed, moved or modified."""

    kind: str
    analysis: Analysis | None = None


class Document:
    """The project's state with change events; every change goes through a method here."""

    _ids = count(1)

    def __init__(self) -> None:
        self.model: ModelInfo | None = None
        self.input: InputInfo | None = None
        self.analyses: list[Analysis] = []
        self.follow = True  # analyses follow the current input and model
        self.modified = False
        self._observers: list[Callable[[Event], None]] = []

    # ---------------------------------------------------------------- observers
    def subscribe(self, observer: Callable[[Event], None]) -> Callable[[], None]:
        """Call ``observer(event)`` on every change; returns the function that unsubscribes."""
        self._observers.append(observer)
        return lambda: self._observers.remove(observer) if observer in self._observers else None

    def _emit(self, kind: str, analysis: Analysis | None = None) -> None:
        event = Event(kind, analysis)
        for observer in list(self._observers):
            observer(event)

    def _touch(self) -> None:
        if not self.modified:
            self.modified = True
            self._emit("modified")

    def mark_saved(self) -> None:
        if self.modified:
            self.modified = False
            self._emit("modified")

    # ---------------------------------------------------------------- model and input
    def set_model(self, model: ModelInfo | None) -> list[Analysis]:
        """A new model is current; following analyses made with another one become pending (returned)."""
        self.model = model
        self._emit("model")
        return self._retarget()

    def set_input(self, info: InputInfo | None) -> list[Analysis]:
        """A new input is current; following analyses of another input become pending (returned)."""
        self.input = info
        self._emit("input")
        return self._retarget()

    def _retarget(self) -> list[Analysis]:
        """Point following analyses at the current model and input. One whose request changed loses its
        result at once (a pending cell never shows the old map). A failed one keeps its failure until
        the user runs it again: it must not fail again on every new input."""
        if not self.follow:
            return []
        changed = []
        for analysis in self.analyses:
            if analysis.status == FAILED or analysis.origin is not None:
                continue
            request = self._current_request(analysis.request)
            if request.identity() != analysis.request.identity():
                self._reset(analysis, request)
                changed.append(analysis)
        return changed

    def _current_request(self, request: AnalysisRequest) -> AnalysisRequest:
        """The request pointed at the current model and input (a part not known yet stays as it was)."""
        if self.model is not None:
            request = dataclasses.replace(request, model=self.model)
        if self.input is not None:
            request = dataclasses.replace(request, input_path=self.input.path, input_name=self.input.name)
        return request

    def _reset(self, analysis: Analysis, request: AnalysisRequest) -> None:
        analysis.request = request
        analysis.generation += 1
        analysis.origin = None  # run again, it is computed here: no longer the store's
        analysis.status, analysis.result, analysis.image, analysis.mask, analysis.error = PENDING, None, None, None, ""
        analysis.fraction, analysis.message = 0.0, ""
        self._touch()
        self._emit("changed", analysis)

    # ---------------------------------------------------------------- analyses
    def get(self, analysis_id: int) -> Analysis | None:
        return next((a for a in self.analyses if a.id == analysis_id), None)

    def find(self, request: AnalysisRequest) -> Analysis | None:
        """An analysis asking exactly this (to refuse a duplicate cell)."""
        return next((a for a in self.analyses if a.request.identity() == request.identity()), None)

    def add(self, request: AnalysisRequest, index: int | None = None, analysis: Analysis | None = None) -> Analysis:
        """A new pending analysis (or a given one, for undo and sessions) at ``index`` (default: the end)."""
        analysis = analysis or Analysis(next(self._ids), request)
        self.analyses.insert(len(self.analyses) if index is None else index, analysis)
        if analysis.origin is None:
            self._touch()
        self._emit("added", analysis)
        return analysis

    def remove(self, analysis_id: int) -> Analysis | None:
        analysis = self.get(analysis_id)
        if analysis is not None:
            self.analyses.remove(analysis)
            analysis.generation += 1  # its running job's result is dropped
            if analysis.origin is None:
                self._touch()
            self._emit("removed", analysis)
        return analysis

    def move(self, analysis_id: int, index: int) -> None:
        analysis = self.get(analysis_id)
        if analysis is not None and 0 <= index < len(self.analyses):
            self.analyses.remove(analysis)
            self.analyses.insert(index, analysis)
            self._touch()
            self._emit("moved", analysis)

    def rerun(self, analysis_id: int, request: AnalysisRequest | None = None) -> Analysis | None:
        """Make an analysis pending again, for the given request or the current model and input."""
        analysis = self.get(analysis_id)
        if analysis is not None:
            self._reset(analysis, request or self._current_request(analysis.request))
        return analysis

    def start(self, analysis_id: int) -> int:
        """The analysis is queued to run now; returns the generation its job must report with."""
        analysis = self.get(analysis_id)
        if analysis is None:
            return -1
        analysis.status, analysis.fraction, analysis.message, analysis.error = RUNNING, 0.0, "queued", ""
        self._emit("changed", analysis)
        return analysis.generation

    def _current(self, analysis_id: int, generation: int) -> Analysis | None:
        """The analysis when ``generation`` is still its own (else None: a stale report)."""
        analysis = self.get(analysis_id)
        return analysis if analysis is not None and analysis.generation == generation else None

    def progress(self, analysis_id: int, generation: int, fraction: float, message: str) -> bool:
        analysis = self._current(analysis_id, generation)
        if analysis is None or analysis.status != RUNNING:
            return False
        analysis.fraction, analysis.message = fraction, message
        self._emit("progress", analysis)
        return True

    def finish(self, analysis_id: int, generation: int, result: Any, image: Any = None, mask: Any = None, target_label: str = "") -> bool:
        """Apply a job's result; False (and nothing changes) when the analysis changed since it started."""
        analysis = self._current(analysis_id, generation)
        if analysis is None:
            return False
        analysis.status, analysis.result, analysis.image, analysis.mask, analysis.error = DONE, result, image, mask, ""
        if target_label:
            analysis.request = dataclasses.replace(analysis.request, target_label=target_label)
        self._touch()
        self._emit("changed", analysis)
        return True

    def fail(self, analysis_id: int, generation: int, message: str) -> bool:
        analysis = self._current(analysis_id, generation)
        if analysis is None:
            return False
        analysis.status, analysis.result, analysis.image, analysis.mask, analysis.error = FAILED, None, None, None, message
        self._emit("changed", analysis)
        return True

    def cancelled(self, analysis_id: int, generation: int) -> bool:
        """A cancelled run: a result of the same request stays, anything else is gone already."""
        analysis = self._current(analysis_id, generation)
        if analysis is None or analysis.status != RUNNING:
            return False
        analysis.status = DONE if analysis.result is not None else CANCELLED
        self._emit("changed", analysis)
        return True

    def add_stored(self, request: AnalysisRequest, result: Any, image: Any, mask: Any, origin: dict, index: int | None = None) -> Analysis:
        """A finished analysis read from a result store: done at once, with its result and no job."""
        analysis = Analysis(next(self._ids), request, DONE, result, image, mask, origin=origin)
        return self.add(request, index, analysis=analysis)

    def stored(self) -> list[Analysis]:
        return [a for a in self.analyses if a.origin is not None]

    def pending(self) -> list[Analysis]:
        return [a for a in self.analyses if a.status == PENDING]
