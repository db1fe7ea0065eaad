"""Names resolved on first use, for the modules of the application layer (PEP 562)."""

from __future__ import annotations

import importlib
from typing import Any


def lazy_exports(module_name: str, exports: dict[str, str]):
    """A module ``__getattr__`` and ``__dir__`` that import ``exports[name]`` (a module path, or
    ``module:attribute`` for a name that differs there) only when ``name`` is first used."""
    namespace = importlib.import_module(module_name).__dict__

    def __getattr__(name: str) -> Any:
        target = exports.get(name)
        if target is None:
            raise AttributeError(f"module '{module_name}' has no attribute '{name}'")
        path, _, attribute = target.partition(":")
        value = getattr(importlib.import_module(path), attribute or name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
