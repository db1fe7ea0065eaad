"""Models for the front-ends: load one from a :class:`ModelSpec`, describe its layers, write its
sidecar, train an image classifier."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine.app._lazy import lazy_exports
from engine.core.requests import ModelSpec, TargetSpec, parse_model_args

if TYPE_CHECKING:
    from engine.models.loading import LoadedModel

__all__ = ["ModelSpec", "TargetSpec", "check_layers", "load", "parse_model_args", "resolve_target", "sidecar_for", "write_sidecar"]

__getattr__, __dir__ = lazy_exports(__name__, {
    "LoadedModel": "engine.models.loading",
    "load_model": "engine.models.loading",
    "check_input_fits": "engine.models.loading",
    "classification_models": "engine.models.architectures",
    "conv_layers": "engine.models.summary",
    "summarize": "engine.models.summary",
    "find_cached_weights": "engine.models.weights",
    "ImageTrainConfig": "engine.models.training",
    "check_image_model_output": "engine.models.training",
    "folder_dataset": "engine.models.training",
    "phantom_dataset": "engine.models.training",
    "train_image_model": "engine.models.training",
    "model_device": "engine.methods.runner",
    "SIDECAR_VERSION": "engine.models.sidecar",
    "fingerprint": "engine.models.fingerprint:model_fingerprint",
})


def load(spec: ModelSpec, *, check_size: bool = True) -> LoadedModel:
    """The model ``spec`` names, with its preprocessing changes applied and checked (see
    engine.models.loading.load_spec)."""
    from engine.models.loading import load_spec

    return load_spec(spec, check_size=check_size)


def check_layers(loaded: LoadedModel, method_params: dict[str, Any]) -> None:
    """Every layer the methods' parameters name exists in the model (one line naming the nearest
    names if not), so a misspelt --layer fails before any output is written."""
    from engine.models.layers import get_layer

    for params in method_params.values():
        name = getattr(params, "layer", "") or ""
        if name and name != "auto":
            get_layer(loaded.module, name)


def resolve_target(target: TargetSpec | int | str | None, loaded: LoadedModel) -> int | None:
    """The class index a target names for this model (None: each input's prediction)."""
    if not isinstance(target, TargetSpec):
        target = TargetSpec.parse(target)
    return target.resolve(loaded.labels, loaded.num_classes)


def sidecar_for(loaded: LoadedModel, spec: ModelSpec) -> dict[str, Any]:
    """What Sensiscope inferred about a loaded model, as a sidecar for the user to edit."""
    from engine.models.sidecar import describe
    from engine.models.user_class import split_class_spec

    class_spec = spec.spec if split_class_spec(spec.spec) is not None else None
    return describe(loaded, spec.model_args or None, class_spec)


def write_sidecar(loaded: LoadedModel, spec: ModelSpec, path: str | None = None, overwrite: bool = False):
    """Write the sidecar beside the weights (or the model file, or ``path``); returns its path."""
    from pathlib import Path

    from engine.core.errors import UserError
    from engine.models.sidecar import write_sidecar as write

    beside = path or spec.weights or (spec.spec if Path(spec.spec).expanduser().is_file() else None)
    if beside is None:
        raise UserError(f"{spec.spec} has no weights or model file to write a sidecar beside; give --weights, or a file name with --write-sidecar PATH")
    return write(beside, sidecar_for(loaded, spec), overwrite)
