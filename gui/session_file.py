"""The session file: reading it safely and checking every field before anything on screen changes.

A session is a .zip holding ``session.json`` and the cells' arrays as .npy files. A session file
may come from anyone, so reading it:

* never runs code: arrays are read with ``allow_pickle=False`` after their header was checked, and
  no field of the file can grant trust to a pickled model (a ``trust`` field is ignored: opening a
  session whose model is a pickle asks the user again, as opening the file itself would);
* cannot exhaust memory: the member count, each member's declared size, the JSON's size and the
  total uncompressed size are checked before anything is decompressed;
* is all-or-nothing: :func:`read_session` returns a :class:`Session` whose every field has the
  right type and range, or raises :class:`SessionError` naming what is wrong. The window applies
  a Session only after it was read whole, so a bad file changes nothing on screen.

Qt-free, so the format can be tested and fuzzed without a window.
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.core.errors import UserError
from engine.core.files import atomic_path
from engine.core.requests import MAX_MODEL_ARGS_CHARS, parse_model_args
from engine.core.vocab import COLORMAPS

FORMAT = "sensiscope-session"
VERSION = 1
MAX_SESSION_BYTES = 1 * 2**30  # all members, uncompressed
MAX_JSON_BYTES = 16 * 2**20
MAX_ARRAY_BYTES = 256 * 2**20
MAX_MEMBERS = 4096
MAX_CELLS = 256
MAX_SIDE = 8192  # pixels of a map or image
LEGACY_COLORMAPS = {"CET-D1": "RdBu_r", "CET-L1": "gray"}
_FOLDER = re.compile(r"^cells/\d{1,4}$")
_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")


class SessionError(ValueError):
    """A session file that cannot be used: corrupt, foreign, too large or with a wrong field."""


@dataclass(frozen=True)
class ModelRef:
    spec: str
    weights: str = ""
    labels: str = ""
    model_args: dict = field(default_factory=dict, hash=False)  # constructor arguments of a class model (net.py:Net)


@dataclass(frozen=True)
class DataRef:
    path: str
    demo: bool
    selected: str


@dataclass(frozen=True)
class Display:
    colormap: str = "auto"
    opacity: int = 60
    scale: int = 0
    mask: bool = True
    follow: bool = True


@dataclass
class CellData:
    """One restored map cell: what was asked, what came back, the picture under it."""

    method: str
    params: dict
    defaults: dict
    target: int | None
    target_label: str
    input_name: str
    input_path: str
    explanation: Any  # engine.core.explanation.Explanation
    image: np.ndarray | None
    mask: np.ndarray | None
    model: dict | None = None  # the model that made the map: spec, weights, labels, source, untrained


@dataclass
class Session:
    model: ModelRef | None = None
    data: DataRef | None = None
    device: str = "auto"
    display: Display = field(default_factory=Display)
    table: dict | None = None  # {"path": str, "target": str}
    tabular_results: dict | None = None
    cells: list[CellData] = field(default_factory=list)


# ---------------------------------------------------------------- checks of single values


def _fail(where: str, expected: str, value: Any) -> SessionError:
    shown = json.dumps(value)[:60] if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
    return SessionError(f"the session's '{where}' must be {expected}, not {shown}")


def _text(value: Any, where: str, limit: int = 4096) -> str:
    if not isinstance(value, str) or len(value) > limit:
        raise _fail(where, f"text of at most {limit} characters", value)
    return value


def _flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):  # "false" is truthy in Python: only a real boolean counts
        raise _fail(where, "true or false", value)
    return value


def _whole(value: Any, where: str, low: int, high: int, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _fail(where, f"a whole number from {low} to {high}", value)
    return value


def _real(value: Any, where: str, low: float, high: float, optional: bool = False) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        raise _fail(where, f"a number from {low:g} to {high:g}", value)
    return float(value)


def _object(value: Any, where: str, optional: bool = False) -> dict | None:
    if value is None and optional:
        return None
    if not isinstance(value, dict):
        raise _fail(where, "an object", value)
    return value


def _scalars(value: Any, where: str) -> dict:
    """A mapping of names to JSON scalars (method parameters)."""
    value = _object(value, where)
    for key, item in value.items():
        if not isinstance(item, (str, int, float, bool, type(None))) or (isinstance(item, str) and len(item) > 4096):
            raise _fail(f"{where}.{key}", "a number, text or true/false", item)
    return dict(value)


# ---------------------------------------------------------------- the parts of a session


def _model(value: Any) -> ModelRef | None:
    value = _object(value, "model", optional=True)
    if value is None:
        return None
    # 'trust' is deliberately not read: a file cannot grant permission to unpickle (nor to run a
    # class's Python file: the window asks before it loads one).
    return ModelRef(
        _text(value.get("spec"), "model.spec"), _text(value.get("weights", ""), "model.weights"), _text(value.get("labels", ""), "model.labels"),
        _model_args(value.get("model_args")),
    )


def _model_args(value: Any) -> dict:
    """Constructor arguments: an object of JSON values with identifier names, as the engine reads them."""
    value = _object(value, "model.model_args", optional=True) or {}
    try:
        size = len(json.dumps(value))
        args = parse_model_args(value, "model.model_args")
    except (TypeError, ValueError, UserError) as exc:
        raise SessionError(f"the session's 'model.model_args' must be an object of names and JSON values ({exc})") from None
    if size > MAX_MODEL_ARGS_CHARS:
        raise _fail("model.model_args", f"at most {MAX_MODEL_ARGS_CHARS} characters of JSON", f"{size} characters")
    return args


def _data(value: Any) -> DataRef | None:
    value = _object(value, "data", optional=True)
    if value is None:
        return None
    return DataRef(_text(value.get("path", ""), "data.path"), _flag(value.get("demo", False), "data.demo"), _text(value.get("selected", ""), "data.selected"))


def _display(value: Any) -> Display:
    value = _object(value, "display", optional=True) or {}
    colormap = LEGACY_COLORMAPS.get(value.get("colormap", "auto"), value.get("colormap", "auto"))
    if colormap not in COLORMAPS:
        raise _fail("display.colormap", f"one of {', '.join(COLORMAPS)}", colormap)
    return Display(
        colormap,
        _whole(value.get("opacity", 60), "display.opacity", 0, 100),
        _whole(value.get("scale", 0), "display.scale", 0, 2),
        _flag(value.get("mask", True), "display.mask"),
        _flag(value.get("follow", True), "display.follow"),
    )


def _table(value: Any) -> dict | None:
    value = _object(value, "table", optional=True)
    if value is None:
        return None
    return {"path": _text(value.get("path"), "table.path"), "target": _text(value.get("target") or "", "table.target")}


def _array(arrays: dict[str, np.ndarray], name: str, where: str) -> np.ndarray:
    if name not in arrays:
        raise SessionError(f"the session lacks {name} ({where})")
    return arrays[name]


def _explanation(record: dict, method: str, map_: np.ndarray, extras: dict):
    from engine.core.explanation import Explanation

    info = _object(record.get("explanation"), "cells[].explanation")
    if info.get("method") != method:
        raise _fail("cells[].explanation.method", f"'{method}' (the cell's method)", info.get("method"))
    return Explanation(
        map=map_,
        method=method,
        params=_scalars(info.get("params", {}), "cells[].explanation.params"),
        target=_whole(info.get("target"), "cells[].explanation.target", 0, 10**6),
        predicted=_whole(info.get("predicted"), "cells[].explanation.predicted", 0, 10**6),
        # unknown (null) for a map read from a result store, which records the predicted label only
        probability=_real(info.get("probability"), "cells[].explanation.probability", 0.0, 1.0, optional=True) if info.get("probability") is not None else math.nan,
        device=_text(info.get("device", "cpu"), "cells[].explanation.device", 64),
        elapsed_s=_real(info.get("elapsed_s", 0.0), "cells[].explanation.elapsed_s", 0.0, 1e9),
        target_probability=_real(info.get("target_probability"), "cells[].explanation.target_probability", 0.0, 1.0, optional=True),
        seed=_whole(info.get("seed"), "cells[].explanation.seed", 0, 2**32 - 1, optional=True),
        extras=extras,
    )


def _cell_model(value: Any) -> dict | None:
    """The model a map was made with (display only: a session never loads or trusts anything by it)."""
    value = _object(value, "cells[].model", optional=True)
    if value is None:
        return None
    return {
        "spec": _text(value.get("spec"), "cells[].model.spec"),
        "weights": _text(value.get("weights", ""), "cells[].model.weights"),
        "labels": _text(value.get("labels", ""), "cells[].model.labels"),
        "source": _text(value.get("source", ""), "cells[].model.source"),
        "untrained": _flag(value.get("untrained", False), "cells[].model.untrained"),
        "model_args": _text(value.get("model_args", ""), "cells[].model.model_args", MAX_MODEL_ARGS_CHARS),
    }


def _cell(record: Any, arrays: dict[str, np.ndarray], methods: set[str]) -> CellData:
    record = _object(record, "cells[]")
    method = _text(record.get("method"), "cells[].method", 64)
    if method not in methods:
        raise SessionError(f"the session has a map of the unknown method '{method}'; this Sensiscope knows {', '.join(sorted(methods))}")
    folder = _text(record.get("folder"), "cells[].folder", 16)
    if not _FOLDER.match(folder):
        raise _fail("cells[].folder", "cells/<number>", folder)
    map_ = _array(arrays, f"{folder}/map.npy", "the map")
    if map_.ndim != 2 or not (1 <= map_.shape[0] <= MAX_SIDE and 1 <= map_.shape[1] <= MAX_SIDE) or map_.dtype.kind not in "fiu":
        raise SessionError(f"{folder}/map.npy: a map is a 2-D array of numbers of at least 1 x 1, not {map_.dtype} of shape {map_.shape}")
    if not np.isfinite(map_).all():
        raise SessionError(f"{folder}/map.npy: the map holds NaN or infinite values")
    image, mask = arrays.get(f"{folder}/image.npy"), arrays.get(f"{folder}/mask.npy")
    if image is not None and (image.ndim != 3 or image.shape[:2] != map_.shape or image.shape[2] not in (1, 3) or image.dtype.kind != "f" or not np.isfinite(image).all()):
        raise SessionError(f"{folder}/image.npy: the image ({image.dtype} {image.shape}) does not fit its {map_.shape[0]} x {map_.shape[1]} map")
    if mask is not None and (mask.shape != map_.shape or mask.dtype != bool):
        raise SessionError(f"{folder}/mask.npy: the mask ({mask.dtype} {mask.shape}) does not fit its {map_.shape[0]} x {map_.shape[1]} map")
    names = record.get("array_extras", [])
    if not isinstance(names, list) or not all(isinstance(n, str) and _NAME.match(n) for n in names):
        raise _fail("cells[].array_extras", "a list of names", names)
    extras = dict(_object(record.get("extras", {}), "cells[].extras"))
    extras.update({name: _array(arrays, f"{folder}/extra_{name}.npy", f"extra {name}") for name in names})
    target = _whole(record.get("target"), "cells[].target", 0, 10**6, optional=True)
    return CellData(
        method=method,
        params=_scalars(record.get("params", {}), "cells[].params"),
        defaults=_scalars(record.get("defaults", {}), "cells[].defaults"),
        target=target,
        target_label=_text(record.get("target_label", ""), "cells[].target_label"),
        input_name=_text(record.get("input_name", ""), "cells[].input_name"),
        input_path=_text(record.get("input_path", ""), "cells[].input_path"),
        explanation=_explanation(record, method, map_.astype(np.float32, copy=False), extras),
        image=image,
        mask=mask,
        model=_cell_model(record.get("model")),
    )


def parse_session(state: Any, arrays: dict[str, np.ndarray], methods: set[str]) -> Session:
    """A checked Session from the decoded JSON and arrays; SessionError naming the first bad field."""
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SessionError("not a Sensiscope session")
    version = state.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _fail("version", "a whole number", version)
    if version > VERSION:
        raise SessionError(f"written by a newer Sensiscope (session version {version})")
    cells = state.get("cells", [])
    if not isinstance(cells, list) or len(cells) > MAX_CELLS:
        raise _fail("cells", f"a list of at most {MAX_CELLS} maps", cells if not isinstance(cells, list) else f"{len(cells)} maps")
    device = _text(state.get("device", "auto"), "device", 32)
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d{1,2})?", device):
        raise _fail("device", "auto, cpu, mps or cuda[:N]", device)
    return Session(
        model=_model(state.get("model")),
        data=_data(state.get("data")),
        device=device,
        display=_display(state.get("display")),
        table=_table(state.get("table")),
        tabular_results=_object(state.get("tabular_results"), "tabular_results", optional=True),
        cells=[_cell(record, arrays, methods) for record in cells],
    )


# ---------------------------------------------------------------- the zip archive


def _check_members(archive: zipfile.ZipFile, name: str) -> list[zipfile.ZipInfo]:
    members = archive.infolist()
    if len(members) > MAX_MEMBERS:
        raise SessionError(f"{name}: holds {len(members)} files; a session has at most {MAX_MEMBERS}")
    total = sum(info.file_size for info in members)
    if total > MAX_SESSION_BYTES:
        raise SessionError(f"{name}: would take {total / 2**20:,.0f} MiB uncompressed; sessions are refused above {MAX_SESSION_BYTES / 2**20:,.0f} MiB")
    for info in members:
        limit = MAX_JSON_BYTES if info.filename == "session.json" else MAX_ARRAY_BYTES
        if info.file_size > limit:
            raise SessionError(f"{name}: {info.filename} would take {info.file_size / 2**20:,.0f} MiB; refused above {limit / 2**20:,.0f} MiB")
    return members


def _read_array(data: bytes, member: str) -> np.ndarray:
    """An array from .npy bytes, its header checked against the bytes present before any allocation."""
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"format version {version[0]}.{version[1]} is not one Sensiscope writes")
    except (ValueError, OSError, SyntaxError) as exc:
        raise SessionError(f"{member}: not a .npy array ({exc})") from None
    if dtype.hasobject:
        raise SessionError(f"{member}: holds Python objects; refused (reading them could run code)")
    needed = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if needed > len(data):
        raise SessionError(f"{member}: declares {needed:,} bytes of data but holds {len(data):,}")
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise SessionError(f"{member}: damaged array ({exc})") from None


def read_session_file(path: str | Path) -> tuple[Any, dict[str, np.ndarray]]:
    """The decoded JSON and the arrays of a session file, within the size limits."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = _check_members(archive, path.name)
            names = {info.filename for info in members}
            if "session.json" not in names:
                raise SessionError(f"{path.name}: not a Sensiscope session (no session.json inside)")
            state = json.loads(archive.read("session.json").decode("utf-8"))
            arrays = {info.filename: _read_array(archive.read(info), info.filename) for info in members if info.filename.endswith(".npy")}
    except SessionError:
        raise
    except FileNotFoundError:
        raise SessionError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SessionError(f"{path}: is a folder, not a session file") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError):
        raise SessionError(f"{path.name}: not a Sensiscope session (not a zip archive, or a damaged one)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError, NotImplementedError) as exc:
        raise SessionError(f"{path.name}: damaged session ({type(exc).__name__}: {exc})") from None
    return state, arrays


def read_session(path: str | Path, methods: set[str]) -> Session:
    """Read and check a whole session file; SessionError (with the file's name) for anything wrong."""
    state, arrays = read_session_file(path)
    try:
        return parse_session(state, arrays, methods)
    except SessionError as exc:
        raise SessionError(f"{Path(path).name}: {exc}") from None


def write_session(path: str | Path, state: dict, arrays: dict[str, np.ndarray], overwrite: bool = True) -> None:
    """Write the session atomically: a crash or a full disk leaves the previous file whole.

    ``overwrite`` defaults to True because the save dialog has already asked about replacing."""
    state = {key: value for key, value in state.items() if key != "trust"}
    with atomic_path(path, overwrite) as temporary, zipfile.ZipFile(temporary, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("session.json", json.dumps({"format": FORMAT, "version": VERSION, **state}, indent=2, allow_nan=False))
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            archive.writestr(name, buffer.getvalue())
