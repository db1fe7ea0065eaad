"""What a user asks for, as plain data: the model, its preprocessing and the target to explain.

Both front-ends build these (the CLI from one option group per type, the GUI from its panels), the
result store records them, and the engine's loaders read them; so every command takes the same
model options and a run remembers exactly what it was given. Torch-free; each type checks itself
when made and says what is wrong in one line.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any

from engine.core.errors import UserError

MAX_SIDE = 8192  # pixels: resize and crop beyond this are typos, not images a classifier takes
NO_SIZE = 0  # resize or crop given as "none": the step is skipped
# Constructor arguments as text: longer is a mistake (a file pasted), not arguments.
MAX_MODEL_ARGS_CHARS = 100_000
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
PREPROCESS_FIELDS = ("resize", "crop", "mean", "std", "channels")


@dataclass(frozen=True)
class PreprocessOptions:
    """The user's changes to a model's preprocessing; None = keep what the model states.

    ``resize`` and ``crop`` are pixels, or ``NO_SIZE`` (0) to skip the step.
    """

    resize: int | None = None
    crop: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    channels: int | None = None

    def __post_init__(self) -> None:
        for name in ("resize", "crop"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SIDE):
                raise UserError(f"--{name} must be a size in pixels from 1 to {MAX_SIDE}, or none; not {value!r}")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is None:
                continue
            try:
                values = tuple(float(v) for v in values)
            except (TypeError, ValueError):
                raise UserError(f"--{name} is a comma-separated list of numbers, not {values!r}") from None
            if not values or len(values) > 4 or not all(math.isfinite(v) for v in values):
                raise UserError(f"--{name} takes 1 to 4 finite numbers (one per channel), not {values!r}")
            if name == "std" and any(v <= 0 for v in values):
                raise UserError("--std values must be positive")
            object.__setattr__(self, name, values)
        if self.channels is not None and self.channels not in (1, 3):
            raise UserError(f"--channels is 1 (grey-scale) or 3 (RGB), not {self.channels!r}")
        if self.resize and self.crop and self.crop > self.resize:
            raise UserError(f"--crop {self.crop} is larger than --resize {self.resize}: the image would be padded with black borders; give a crop no larger than the resize")

    @property
    def given(self) -> bool:
        return any(getattr(self, name) is not None for name in PREPROCESS_FIELDS)

    def to_dict(self) -> dict[str, Any]:
        """Only what was given (the rest is the model's own)."""
        return {name: (list(value) if isinstance(value, tuple) else value) for name in PREPROCESS_FIELDS if (value := getattr(self, name)) is not None}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PreprocessOptions:
        data = data or {}
        unknown = set(data) - set(PREPROCESS_FIELDS)
        if unknown:
            raise UserError(f"unknown preprocessing option '{sorted(unknown)[0]}'; known: {', '.join(PREPROCESS_FIELDS)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})

    def apply(self, base: dict[str, Any]) -> dict[str, Any]:
        """``base`` (a model's preprocessing as a dict) with these changes. Changing the channels
        without a mean and std that fit them takes the per-channel average of the model's own."""
        merged = dict(base)
        for name in PREPROCESS_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            merged[name] = None if name in ("resize", "crop") and value == NO_SIZE else value
        channels = merged.get("channels", 3)
        for name in ("mean", "std"):
            values = tuple(merged.get(name) or ())
            if getattr(self, name) is None and values and len(values) not in (1, channels):
                merged[name] = (round(sum(values) / len(values), 4),)
        return merged


@dataclass(frozen=True)
class ModelSpec:
    """A model as the user names it, with everything that decides what is loaded.

    ``spec``: an architecture (``resnet18``), ``arch:WEIGHTS``, ``demo:NAME``, ``timm:NAME``,
    ``hf:DIR``, a model file (ONNX, TorchScript, ``.pt2``, a trusted pickle) or a class of the
    user's code (``net.py:Net``, ``package.module:Net``) built with ``model_args``.
    """

    spec: str
    weights: str | None = None
    labels: str | None = None
    trust: bool = False
    model_args: dict[str, Any] = field(default_factory=dict)
    num_classes: int | None = None
    allow_download: bool = False
    seed: int = 0
    preprocess: PreprocessOptions = field(default_factory=PreprocessOptions)

    def __post_init__(self) -> None:
        spec = (self.spec or "").strip()
        if not spec:
            raise UserError("no model given: name an architecture (resnet18), a model file, path/to/net.py:ClassName, timm:NAME or hf:DIR")
        object.__setattr__(self, "spec", spec)
        for name in ("weights", "labels"):
            value = getattr(self, name)
            if value is not None and not str(value).strip():
                object.__setattr__(self, name, None)
        if not isinstance(self.model_args, dict):
            raise UserError(f"model arguments are a mapping of names to values, not {type(self.model_args).__name__}")
        try:
            json.dumps(self.model_args)
        except (TypeError, ValueError):
            raise UserError("model arguments must be plain JSON values (numbers, text, lists, objects)") from None
        if isinstance(self.preprocess, dict):
            object.__setattr__(self, "preprocess", PreprocessOptions.from_dict(self.preprocess))

    def with_preprocess(self, options: PreprocessOptions) -> ModelSpec:
        return replace(self, preprocess=options)

    def to_dict(self) -> dict[str, Any]:
        """What a store records and a session saves (never the trust decision's consequences: a
        trusted pickle is asked for again when the record is reopened)."""
        return {
            "model": self.spec,
            "weights": self.weights,
            "labels": self.labels,
            "model_args": dict(self.model_args),
            "num_classes": self.num_classes,
            "preprocess": self.preprocess.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, trust: bool = False) -> ModelSpec:
        return cls(
            str(data.get("model") or ""),
            data.get("weights"),
            data.get("labels"),
            trust,
            dict(data.get("model_args") or {}),
            data.get("num_classes"),
            preprocess=PreprocessOptions.from_dict(data.get("preprocess")),
        )


@dataclass(frozen=True)
class TargetSpec:
    """What to explain: the predicted class (``pred``), a class index, or a class name that the
    model's labels resolve."""

    kind: str = "pred"  # pred, index, name
    value: int | str | None = None

    @classmethod
    def parse(cls, text: str | int | None) -> TargetSpec:
        if text is None:
            return cls()
        if isinstance(text, bool):
            raise UserError(f"a target is 'pred', a class index or a class name, not {text!r}")
        if isinstance(text, int):
            if text < 0:
                raise UserError(f"a target class index is 0 or more, not {text}")
            return cls("index", text)
        stripped = str(text).strip()
        if stripped.lower() in ("", "pred", "predicted"):
            return cls()
        if re.fullmatch(r"[+-]?\d+", stripped):
            value = int(stripped)
            if value < 0:
                raise UserError(f"a target class index is 0 or more, not {value}")
            return cls("index", value)
        return cls("name", stripped)

    def resolve(self, labels: list[str] | None, classes: int | None) -> int | None:
        """The class index (None = the prediction of each input)."""
        if self.kind == "pred":
            return None
        if self.kind == "index":
            if classes is not None and not 0 <= int(self.value) < classes:
                raise UserError(f"target {self.value} is not a class of this model (it has {classes}: 0 to {classes - 1})")
            return int(self.value)
        if not labels:
            raise UserError(f"target '{self.value}' is a class name, but the model has no class names; give a class index or --labels")
        lowered = [str(name).lower() for name in labels]
        wanted = str(self.value).lower()
        if wanted in lowered:
            return lowered.index(wanted)
        shown = ", ".join(labels[:10]) + (" ..." if len(labels) > 10 else "")
        raise UserError(f"target '{self.value}' is none of the model's classes ({shown})")

    def describe(self) -> str:
        return "the predicted class" if self.kind == "pred" else (f"class {self.value}" if self.kind == "index" else str(self.value))

    def to_text(self) -> str:
        return "pred" if self.kind == "pred" else str(self.value)


def parse_model_args(text: str | dict | None, source: str = "--model-args") -> dict:
    """Constructor arguments: a JSON object (text) or a dict; names must be identifiers."""
    if text is None or text == "":
        return {}
    if isinstance(text, str):
        if len(text) > MAX_MODEL_ARGS_CHARS:
            raise UserError(f"{source}: {len(text)} characters is too long for constructor arguments")
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{source}: not valid JSON ({exc.msg} at character {exc.pos}); write e.g. '{{\"classes\": 4}}'") from None
    else:
        value = text
    if not isinstance(value, dict):
        raise UserError(f"{source}: constructor arguments are a JSON object of names and values, e.g. {{\"classes\": 4}}, not {type(value).__name__}")
    bad = [k for k in value if not isinstance(k, str) or not _IDENTIFIER.match(k)]
    if bad:
        raise UserError(f"{source}: '{bad[0]}' is not a valid argument name")
    return dict(value)
