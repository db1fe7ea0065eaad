"""A feedforward network for tables that takes raw feature values: standardisation and one-hot
encoding live inside the model, so the saved model needs no separate preprocessing."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from engine.core.errors import UserError
from engine.core.files import atomic_path, check_output, read_text, write_text
from engine.core.jsonable import dumps
from engine.core.vocab import ACTIVATIONS
from engine.models.weights import load_weights_into, read_state_dict
from engine.tabular.dataset import FeatureSpec

# The layer of each name in engine.core.vocab.ACTIVATIONS (a test checks that the two agree).
ACTIVATION_LAYERS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "sigmoid": nn.Sigmoid, "elu": nn.ELU}
FORMAT_VERSION = 1


class TabularNet(nn.Module):
    def __init__(self, features: list[FeatureSpec], hidden: tuple[int, ...], outputs: int, activation: str = "relu", dropout: float = 0.0) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise UserError(f"activation must be one of {', '.join(ACTIVATIONS)}, not '{activation}'")
        self.features = features
        numeric = [i for i, f in enumerate(features) if f.kind == "numeric"]
        categorical = [i for i, f in enumerate(features) if f.kind == "categorical"]
        self.register_buffer("numeric_index", torch.tensor(numeric, dtype=torch.long))
        self.register_buffer("mean", torch.tensor([features[i].mean for i in numeric], dtype=torch.float32))
        self.register_buffer("std", torch.tensor([features[i].std for i in numeric], dtype=torch.float32))
        self.categorical = [(i, len(features[i].categories)) for i in categorical]
        width = len(numeric) + sum(n for _, n in self.categorical)
        layers: list[nn.Module] = []
        for size in hidden:
            layers += [nn.Linear(width, size), ACTIVATION_LAYERS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        layers.append(nn.Linear(width, outputs))
        self.body = nn.Sequential(*layers)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Raw values (N x D) to the network's standardised, one-hot input."""
        parts = [(x[:, self.numeric_index] - self.mean) / self.std]
        for index, count in self.categorical:
            codes = x[:, index].round().clamp(0, count - 1).long()
            parts.append(nn.functional.one_hot(codes, count).to(x.dtype))
        return torch.cat(parts, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self.encode(x))


def model_files(path: str | Path) -> tuple[Path, Path]:
    """The MODEL.safetensors and MODEL.json a tabular model is saved as (either name, or the stem)."""
    path = Path(path).expanduser()
    if path.is_dir() or not path.name or path.name in (".", ".."):
        raise UserError(f"{path}: is a folder; give a file name for the model, e.g. {path / 'model'}")
    return path.with_suffix(".safetensors"), path.with_suffix(".json")


def check_model_output(path: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Refuse, before training, a model name whose files would replace files Sensiscope did not write."""
    weights, sidecar = model_files(path)
    return check_output(weights, overwrite), check_output(sidecar, overwrite)


def save_tabular_model(model: TabularNet, meta: dict, path: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
    """Write MODEL.safetensors and MODEL.json (features, encodings, scaling, classes, settings),
    each atomically, never replacing a file Sensiscope did not write unless ``overwrite``."""
    from safetensors.torch import save_file

    weights, sidecar = check_model_output(path, overwrite)
    with atomic_path(weights, overwrite) as temporary:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(temporary))
    write_text(sidecar, dumps({"format": "sensiscope-tabular", "version": FORMAT_VERSION, **meta}), overwrite)
    return weights, sidecar


def load_tabular_model(path: str | Path) -> tuple[TabularNet, dict]:
    """Load a model saved by :func:`save_tabular_model` (give either file or the common stem)."""
    if not str(path).strip() or not Path(path).name:
        raise UserError(f"no tabular model given ({str(path)!r}): name the files `train` saved, e.g. model.safetensors or its stem")
    path = Path(path)
    weights, sidecar = path.with_suffix(".safetensors"), path.with_suffix(".json")
    if not sidecar.is_file() or not weights.is_file():
        raise UserError(f"{path}: a tabular model is a pair of files, {weights.name} and {sidecar.name}; one is missing")
    try:
        meta = json.loads(read_text(sidecar, "model description"))
    except json.JSONDecodeError as exc:
        raise UserError(f"{sidecar}: not valid JSON ({exc})") from None
    if meta.get("format") != "sensiscope-tabular":
        raise UserError(f"{sidecar}: not a Sensiscope tabular model description")
    try:
        features = [FeatureSpec(**f) for f in meta["features"]]
        config = meta["config"]
        outputs = len(meta["classes"]) if meta["task"] == "classification" else 1
        model = TabularNet(features, tuple(config["hidden"]), outputs, config["activation"], config["dropout"])
    except (KeyError, TypeError) as exc:
        raise UserError(f"{sidecar}: incomplete model description ({exc})") from None
    load_weights_into(model, read_state_dict(weights), weights.name, "the tabular network")
    return model.eval(), meta
