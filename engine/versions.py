"""Versions recorded with every result so that it can be reproduced."""

from __future__ import annotations

import platform
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
    import numpy
    import torch
    import torchvision

    found = {"sensiscope": app_version(), "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__, "numpy": numpy.__version__}
    for package in ("SALib", "Pillow", "safetensors"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found
