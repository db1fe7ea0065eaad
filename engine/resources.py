"""Where the files shipped with Sensiscope live, and the names users give them (demo:NAME)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from .errors import UserError


def _find_resources() -> Path:
    """The resources folder: beside engine/ in the source tree, an installed wheel and a bundle alike.

    The wheel ships resources/ as a package next to engine/ in site-packages; when some other
    layout separates them (an unusual editable install), the ``resources`` package is asked.
    """
    beside = Path(__file__).resolve().parent.parent / "resources"
    if beside.is_dir():
        return beside
    spec = importlib.util.find_spec("resources")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            candidate = Path(location)
            if (candidate / "icons" / "sensiscope.svg").is_file():
                return candidate
    return beside


RESOURCES = _find_resources()
ICON = RESOURCES / "icons" / "sensiscope.svg"
DEMO_TABLES = {"pima": RESOURCES / "data" / "pima.csv"}


def resolve_table(spec: str) -> Path:
    """A CSV path, or ``demo:pima`` for the embedded Pima Indians diabetes table."""
    if spec.startswith("demo:"):
        name = spec[len("demo:"):]
        if name not in DEMO_TABLES:
            raise UserError(f"unknown demo table '{spec}'; available: {', '.join('demo:' + n for n in DEMO_TABLES)}")
        path = DEMO_TABLES[name]
        if not path.is_file():
            raise UserError(f"the demo table {path} is missing from this installation")
        return path
    return Path(spec)
