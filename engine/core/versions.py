"""Versions recorded with every result so that it can be reproduced."""

from __future__ import annotations

import platform
import sys
from functools import lru_cache
from importlib import metadata


@lru_cache(maxsize=1)
def app_version() -> str:
    try:
        return metadata.version("sensiscope")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    # Read from the installed distributions' metadata: no import of torch needed to know its version.
    found = {"sensiscope": app_version(), "python": platform.python_version()}
    for package in ("torch", "torchvision", "numpy", "SALib", "Pillow", "safetensors"):
        try:
            loaded = sys.modules.get(package)
            # An imported module knows its build too (torch's "+cu130"); otherwise the metadata says.
            found[package] = getattr(loaded, "__version__", None) or metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found
