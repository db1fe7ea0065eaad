"""The one JSON sanitiser: every result that leaves the engine as JSON (CLI output, result files,
sessions, the Python API's ``to_dict``) goes through :func:`jsonable`, so NaN and +-inf become
``null`` everywhere and the text is always valid JSON (RFC 8259 has no NaN)."""

from __future__ import annotations

import dataclasses
import json
import math
from enum import Enum
from pathlib import PurePath
from typing import Any

import numpy as np


def json_float(value: Any) -> float | None:
    """A float for JSON: None for None, NaN and +-inf."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def jsonable(value: Any) -> Any:
    """A copy of ``value`` made of dicts, lists, str, int, finite float, bool and None.

    Numpy scalars and arrays become Python numbers and lists, dataclasses their fields, paths
    strings, and non-finite floats None. Objects with a ``to_dict()`` are asked for it.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return json_float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, Enum):
        return jsonable(value.value)
    if hasattr(value, "to_dict") and callable(value.to_dict):
        return jsonable(value.to_dict())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    return str(value)


def dumps(value: Any, indent: int | None = 2) -> str:
    """Strict JSON text of ``value`` (through :func:`jsonable`)."""
    return json.dumps(jsonable(value), indent=indent, allow_nan=False)
