"""How the window names models: classes of the user's code, files, architectures. Qt- and torch-free."""

from __future__ import annotations

import json
import re

# A model class of the user's code: ``path/to/net.py:ClassName`` or ``package.module:ClassName``
# (engine.models.user_class.split_class_spec decides the same way; this copy keeps torch off the main thread).
_CLASS_SPEC = re.compile(r"^(?P<source>.+\.py|[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)+):(?P<name>[A-Za-z_]\w*)$", re.IGNORECASE)
_FILE_SUFFIXES = (".pt", ".pth", ".pt2", ".onnx", ".ts", ".jit", ".safetensors", ".pkl", ".bin", ".ckpt")


def class_spec_parts(spec: str) -> tuple[str, str] | None:
    """(file or module, class name) when ``spec`` names a model class of the user's code, else None.
    Loading such a model runs that code."""
    match = _CLASS_SPEC.match((spec or "").strip())
    if match is None:
        return None
    source = match["source"]
    if not source.lower().endswith(".py") and source.lower().endswith(_FILE_SUFFIXES):
        return None
    return source, match["name"]


def model_title(spec: str, weights: str = "") -> str:
    """How the Model box names a model: ``DigitNet (net.py)`` for a class, a file's name, an
    architecture; `` + weights.pth`` when a weights file goes with it."""
    def name(path: str) -> str:
        return path.replace("\\", "/").rsplit("/", 1)[-1]

    parts = class_spec_parts(spec)
    title = f"{parts[1]} ({name(parts[0])})" if parts is not None else name(spec)
    if weights:
        title += " + " + name(weights)
    return title


def args_text(model_args: dict | None) -> str:
    """Constructor arguments as one canonical line of JSON ("" for none)."""
    return json.dumps(model_args, sort_keys=True) if model_args else ""
