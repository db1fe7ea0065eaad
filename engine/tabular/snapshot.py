"""Trained table networks as plain JSON data (for sessions), and back, never unpickling.

Each network's weights travel as a base64 safetensors blob next to its seed, test metrics and
loss curve; the shared part (features, encodings, classes, training settings, how the table was
prepared) is written once. Reading checks the format, the size, the features against the table
the session reopened, and every tensor's name and shape against the network it must fill.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from typing import Any

from engine.core.errors import UserError
from engine.tabular.dataset import FeatureSpec, TabularData
from engine.tabular.network import TabularNet
from engine.tabular.train import TrainConfig, TrainedModel

FORMAT = "sensiscope-tabular-networks"
VERSION = 1
MAX_WEIGHT_BYTES = 8 * 2**20  # all networks together, before base64


def _weights_blob(model: TabularNet) -> str:
    from safetensors.torch import save

    return base64.b64encode(save({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()})).decode("ascii")


def networks_state(trained: list[TrainedModel], prepared: dict[str, Any]) -> dict[str, Any] | None:
    """The networks as JSON-able data, or None when there are none or their weights exceed
    MAX_WEIGHT_BYTES (a session then keeps the results without the networks).

    ``prepared``: how the table was turned into data (target, missing, seed), to rebuild it.
    """
    if not trained:
        return None
    blobs = [_weights_blob(t.model) for t in trained]
    if sum(len(b) for b in blobs) * 3 // 4 > MAX_WEIGHT_BYTES:
        return None
    first = trained[0]
    return {
        "format": FORMAT,
        "version": VERSION,
        "prepared": dict(prepared),
        "features": [f.to_dict() for f in first.data.features],
        "target": first.data.target,
        "task": first.data.task,
        "classes": list(first.data.classes),
        "config": {**dataclasses.asdict(first.config), "hidden": list(first.config.hidden)},
        "networks": [
            {"seed": t.config.seed, "weights": blob, "metrics": dict(t.metrics), "history": dict(t.history), "elapsed_s": float(t.elapsed_s)}
            for t, blob in zip(trained, blobs, strict=True)
        ],
    }


def _state_dict(blob: Any) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load

    if not isinstance(blob, str) or len(blob) > MAX_WEIGHT_BYTES * 4 // 3 + 4:
        raise ValueError("network weights must be a base64 text within the size limit")
    try:
        return load(base64.b64decode(blob, validate=True))
    except (binascii.Error, SafetensorError, ValueError) as exc:
        raise ValueError(f"unreadable network weights ({exc})") from None


def check_networks_state(state: dict[str, Any]) -> None:
    """Raise ValueError when ``state`` is not what :func:`networks_state` writes (no table needed)."""
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("version") != VERSION:
        raise ValueError("not a Sensiscope tabular networks record")
    networks = state.get("networks")
    if not isinstance(networks, list) or not 1 <= len(networks) <= 50:
        raise ValueError("a networks record holds 1 to 50 networks")
    if sum(len(n.get("weights", "")) for n in networks) > MAX_WEIGHT_BYTES * 4 // 3 + 4 * len(networks):
        raise ValueError("the networks' weights exceed the size limit")
    TrainConfig(**{**state["config"], "hidden": tuple(state["config"]["hidden"])})


def restore_networks(state: dict[str, Any], data: TabularData) -> list[TrainedModel]:
    """The trained networks of ``state`` on ``data`` (the reopened table, prepared as recorded).

    UserError when the table no longer matches what they were trained on; ValueError when the
    record is damaged.
    """
    check_networks_state(state)
    features = [FeatureSpec(**f) for f in state["features"]]
    if [f.name for f in features] != data.names or state["target"] != data.target or state["task"] != data.task or list(state["classes"]) != data.classes:
        raise UserError("the saved networks were trained on other columns or classes than the table has now; train again")
    config = TrainConfig(**{**state["config"], "hidden": tuple(state["config"]["hidden"])})
    outputs = len(data.classes) if data.task == "classification" else 1
    trained = []
    for record in state["networks"]:
        model = TabularNet(features, config.hidden, outputs, config.activation, config.dropout)
        weights = _state_dict(record["weights"])
        expected = model.state_dict()
        if set(weights) != set(expected) or any(tuple(weights[k].shape) != tuple(v.shape) for k, v in expected.items()):
            raise ValueError("the saved weights do not fit the recorded network")
        model.load_state_dict(weights, strict=True)
        history = {k: v for k, v in dict(record.get("history") or {}).items() if k in ("train_loss", "val_loss", "epochs_run", "best_epoch")}
        trained.append(TrainedModel(model.eval(), data, dataclasses.replace(config, seed=int(record["seed"])), dict(record["metrics"]), history, float(record.get("elapsed_s", 0.0))))
    return trained
