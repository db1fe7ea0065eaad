"""The sidecar: ``MODEL.json`` beside a weights or model file, saying what the file alone cannot.

Schema, version 1 (every field optional; unknown fields are kept and ignored, so a sidecar may
carry the user's own notes):

==================  =====================================================================
``sidecar_version`` 1. A newer version is refused with a message, never half-read.
``arch``            torchvision/Sensiscope architecture of a weights file (``resnet18``).
``model``           the class that built the weights (``net.py:DigitNet``); informative.
``model_args``      constructor arguments of that class (an object of JSON values).
``num_classes``     output classes (1 to 100,000).
``in_channels``     1 or 3.
``input_size``      ``[height, width]`` the model takes, in pixels.
``labels``          class names, one per output (``classes`` is read as a synonym).
``preprocess``      ``{resize, crop, mean, std, channels, interpolation}``; see ``Preprocess``.
==================  =====================================================================

``main.py info --model ... --write-sidecar`` writes what Sensiscope inferred, for the user to
check and edit; every field is validated on reading, with errors that name the field.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

from engine.core.errors import UserError
from engine.core.files import check_output, read_json_object, write_text
from engine.core.jsonable import dumps
from engine.core.requests import MAX_SIDE
from engine.core.vocab import MAX_CLASSES
from engine.io.preprocess import Preprocess

SIDECAR_VERSION = 1
FIELDS = ("sidecar_version", "arch", "model", "model_args", "num_classes", "in_channels", "input_size", "labels", "classes", "preprocess")


def sidecar_path(path: str | Path) -> Path:
    return Path(path).expanduser().with_suffix(".json")


def read_sidecar(path: Path) -> dict:
    """The validated sidecar beside ``path`` (a weights or model file), or {} when there is none."""
    candidate = sidecar_path(path)
    if not candidate.is_file():
        return {}
    return validate_sidecar(read_json_object(candidate, "sidecar beside the model"), candidate)


def _bad(source: Path, name: str, value, expected: str) -> UserError:
    return UserError(f"{source}: field '{name}' must be {expected}, not {json.dumps(value)[:60]}")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_sidecar(data: dict, source: Path) -> dict:
    """Check every field the loader uses; return ``data``. Errors name the file and the field."""
    version = data.get("sidecar_version", SIDECAR_VERSION)
    if not _whole(version) or version < 1:
        raise _bad(source, "sidecar_version", version, "a whole number from 1")
    if version > SIDECAR_VERSION:
        raise UserError(f"{source}: sidecar version {version} was written by a newer Sensiscope (this one reads version {SIDECAR_VERSION}); update Sensiscope")
    classes = data.get("num_classes")
    if classes is not None and (not _whole(classes) or not 1 <= classes <= MAX_CLASSES):
        raise _bad(source, "num_classes", classes, f"a whole number from 1 to {MAX_CLASSES}")
    channels = data.get("in_channels", 3)
    if not _whole(channels) or channels not in (1, 3):
        raise _bad(source, "in_channels", channels, "1 or 3")
    for name in ("arch", "model"):
        if data.get(name) is not None and not isinstance(data[name], str):
            raise _bad(source, name, data[name], "text")
    args = data.get("model_args")
    if args is not None and (not isinstance(args, dict) or not all(isinstance(k, str) and k.isidentifier() for k in args)):
        raise _bad(source, "model_args", args, "an object of argument names and values")
    size = data.get("input_size")
    if size is not None and (not isinstance(size, list) or len(size) != 2 or not all(_whole(v) and 1 <= v <= MAX_SIDE for v in size)):
        raise _bad(source, "input_size", size, f"[height, width] in pixels from 1 to {MAX_SIDE}")
    for key in ("labels", "classes"):
        names = data.get(key)
        if names is not None and (not isinstance(names, list) or not all(isinstance(v, (str, int)) for v in names) or len(names) > MAX_CLASSES):
            raise _bad(source, key, names, "a list of class names")
    labels = data.get("labels") or data.get("classes")
    if labels is not None and classes is not None and len(labels) != classes:
        raise UserError(f"{source}: {len(labels)} labels for num_classes {classes}")
    for key in data:
        close = difflib.get_close_matches(key, FIELDS, n=1, cutoff=0.75) if key not in FIELDS else []
        if close:  # a typo of a field would silently drop what it holds (the labels, say)
            raise UserError(f"{source}: '{key}' is not a sidecar field; did you mean '{close[0]}'?")
    pre = data.get("preprocess")
    if pre is not None:
        if not isinstance(pre, dict):
            raise _bad(source, "preprocess", pre, "an object")
        unknown = sorted(set(pre) - set(Preprocess.__dataclass_fields__))
        if unknown:
            raise UserError(f"{source}: field 'preprocess.{unknown[0]}' is not a preprocessing setting (known: {', '.join(Preprocess.__dataclass_fields__)})")
        _check_preprocess_types(pre, source)
        try:
            Preprocess.from_dict(pre)
        except UserError as exc:
            raise UserError(f"{source}: field 'preprocess': {exc}") from None
        except (TypeError, ValueError) as exc:
            raise UserError(f"{source}: field 'preprocess' holds a value of the wrong type ({exc})") from None
    return data


def _check_preprocess_types(pre: dict, source: Path) -> None:
    def number(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    def bad(name, value, expected):
        return UserError(f"{source}: field 'preprocess': '{name}' must be {expected}, not {json.dumps(value)[:60]}")

    for name in ("resize", "crop"):
        if pre.get(name) is not None and (not _whole(pre[name]) or not 1 <= pre[name] <= MAX_SIDE):
            raise bad(name, pre[name], f"a size in pixels from 1 to {MAX_SIDE}, or null")
    for name in ("mean", "std"):
        value = pre.get(name)
        if value is not None and not (isinstance(value, (list, tuple)) and value and all(number(v) for v in value)):
            raise bad(name, value, "a list of numbers, one per channel")
    if "channels" in pre and (not _whole(pre["channels"]) or pre["channels"] not in (1, 3)):
        raise bad("channels", pre["channels"], "1 or 3")
    if "interpolation" in pre and not isinstance(pre["interpolation"], str):
        raise bad("interpolation", pre["interpolation"], "bilinear, bicubic or nearest")


def preprocess_from(meta: dict) -> Preprocess | None:
    """The preprocessing a sidecar states: its ``preprocess`` object, else one built from
    ``input_size`` and ``in_channels``; None when it states neither."""
    if isinstance(meta.get("preprocess"), dict):
        return Preprocess.from_dict(meta["preprocess"])
    size = meta.get("input_size")
    if size is None:
        return None
    channels = int(meta.get("in_channels", 3))
    side = min(size)
    base = Preprocess() if channels == 3 else Preprocess(channels=1, mean=(0.459,), std=(0.2256,))
    return Preprocess(resize=side, crop=side if size[0] == size[1] else None, mean=base.mean, std=base.std, channels=channels)


def describe(loaded, model_args: dict | None = None, class_spec: str | None = None) -> dict:
    """The sidecar Sensiscope would write for a loaded model: what it inferred, for the user to edit."""
    pre = loaded.preprocess
    data: dict[str, Any] = {"sidecar_version": SIDECAR_VERSION}
    if class_spec:
        data["model"] = class_spec
    if model_args:
        data["model_args"] = dict(model_args)
    if loaded.num_classes:
        data["num_classes"] = int(loaded.num_classes)
    data["in_channels"] = int(pre.channels)
    size = pre.crop or pre.resize
    if size:
        data["input_size"] = [int(size), int(size)]
    if loaded.labels:
        data["labels"] = list(loaded.labels)
    data["preprocess"] = pre.to_dict()
    return data


def write_sidecar(beside: str | Path, data: dict, overwrite: bool = False) -> Path:
    """Write ``data`` as the sidecar of ``beside``; an existing file Sensiscope did not write is kept
    unless ``overwrite``. The data are validated first, so what is written reads back."""
    path = sidecar_path(beside)
    validate_sidecar(data, path)
    check_output(path, overwrite)
    write_text(path, dumps(data), overwrite)
    return path
