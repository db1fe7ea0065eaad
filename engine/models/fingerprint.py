"""A run's model fingerprint: what decides its results besides the settings the user typed.

A result store records it, and a resume whose fingerprint differs is refused, naming what changed:
replacing the model or weights file with another network (same path, other bytes), editing the
sidecar's preprocessing, or another Sensiscope version would otherwise put rows of two different
models into one table.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from engine.core.requests import ModelSpec
from engine.core.versions import app_version

_CHUNK = 1 << 20


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in chunks (weights files run to gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _model_file(spec: str) -> Path | None:
    from engine.demo.catalogue import demo_name
    from engine.models.user_class import split_class_spec

    if demo_name(spec) is not None:
        from engine.models.demo import demo_model_file

        return demo_model_file(spec)
    parts = split_class_spec(spec)
    candidate = Path(parts[0] if parts else spec).expanduser()
    return candidate if candidate.is_file() else None


def model_fingerprint(spec: ModelSpec, loaded: Any = None) -> dict[str, Any]:
    """Digests of the model file (or the user's class file), the weights and the sidecar, the
    preprocessing the model was given (with ``loaded``) and the Sensiscope version."""
    print_: dict[str, Any] = {"sensiscope": app_version()}
    model_file = _model_file(spec.spec)
    if model_file is not None:
        print_["model_file"] = file_digest(model_file)
    sidecar_of = None
    if spec.weights and Path(spec.weights).expanduser().is_file():
        print_["weights"] = file_digest(Path(spec.weights).expanduser())
        sidecar_of = Path(spec.weights).expanduser()
    elif model_file is not None and model_file.suffix.lower() != ".py":
        sidecar_of = model_file
    if sidecar_of is not None and sidecar_of.with_suffix(".json").is_file():
        print_["sidecar"] = file_digest(sidecar_of.with_suffix(".json"))
    if loaded is not None:
        print_["preprocess"] = loaded.preprocess.to_dict()
    return print_
