"""Where the files shipped with Sensiscope live (icons, demo data, demo weights)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def _find_resources() -> Path:
    """The resources folder: beside engine/ in the source tree, an installed wheel and a bundle alike.

    The wheel ships resources/ as a package next to engine/ in site-packages; when some other
    layout separates them (an unusual editable install), the ``resources`` package is asked.
    """
    beside = Path(__file__).resolve().parents[2] / "resources"
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
