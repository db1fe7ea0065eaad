"""Training the tabular network: early stopping on a validation part, class weights, seeds."""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from engine.core.errors import UserError
from engine.core.progress import CancelToken, EpochLosses, ProgressFn, resolve
from engine.core.vocab import ACTIVATIONS, TABULAR_MAX_LAYERS, TABULAR_MAX_WIDTH, TABULAR_TRAINING
from engine.stats.scores import classification_metrics, regression_metrics
from engine.tabular.dataset import TabularData
from engine.tabular.network import TabularNet, save_tabular_model


@dataclass(frozen=True)
class TrainConfig:
    hidden: tuple[int, ...] = TABULAR_TRAINING["hidden"]
    activation: str = TABULAR_TRAINING["activation"]
    dropout: float = TABULAR_TRAINING["dropout"]
    weight_decay: float = TABULAR_TRAINING["weight_decay"]
    lr: float = TABULAR_TRAINING["lr"]
    epochs: int = TABULAR_TRAINING["epochs"]
    batch_size: int = TABULAR_TRAINING["batch_size"]
    patience: int = TABULAR_TRAINING["patience"]
    validation_fraction: float = TABULAR_TRAINING["validation_fraction"]
    class_weights: bool = TABULAR_TRAINING["class_weights"]
    seed: int = TABULAR_TRAINING["seed"]

    def __post_init__(self) -> None:
        if not self.hidden or len(self.hidden) > TABULAR_MAX_LAYERS or any(not 1 <= h <= TABULAR_MAX_WIDTH for h in self.hidden):
            raise UserError(f"hidden layers are 1 to {TABULAR_MAX_LAYERS} widths from 1 to {TABULAR_MAX_WIDTH}, not {self.hidden}")
        for name in ("dropout", "weight_decay", "lr", "validation_fraction"):
            if not math.isfinite(getattr(self, name)):
                raise UserError(f"{name.replace('_', ' ')} must be a finite number, not {getattr(self, name)}")
        if self.lr > 10:
            raise UserError(f"a learning rate of {self.lr:g} only makes the network diverge; use a value up to 10")
        if not 0 <= self.seed <= 2**32 - 1:
            raise UserError(f"the seed must be from 0 to {2**32 - 1}, not {self.seed}")
        if self.activation not in ACTIVATIONS:
            raise UserError(f"activation must be one of {', '.join(ACTIVATIONS)}")
        if not 0 <= self.dropout < 1:
            raise UserError(f"dropout must be in [0, 1), not {self.dropout}")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise UserError("epochs, batch size and patience must be at least 1")
        if not 0 <= self.validation_fraction < 0.9:
            raise UserError(f"the validation fraction must be in [0, 0.9), not {self.validation_fraction}")
        if self.lr <= 0 or self.weight_decay < 0:
            raise UserError("the learning rate must be positive and the weight decay not negative")


@dataclass
class TrainedModel:
    model: TabularNet
    data: TabularData
    config: TrainConfig
    metrics: dict
    history: dict = field(default_factory=dict)
    elapsed_s: float = 0.0

    def meta(self) -> dict:
        return {
            "features": [f.to_dict() for f in self.data.features],
            "target": self.data.target,
            "task": self.data.task,
            "classes": self.data.classes,
            "config": dataclasses.asdict(self.config),
            "metrics": self.metrics,
            "split": self.data.split_source,
        }

    def save(self, path, overwrite: bool = False) -> tuple:
        return save_tabular_model(self.model, self.meta(), path, overwrite)


def _validation_rows(data: TabularData, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.flatnonzero(data.train)
    rng = np.random.default_rng(seed + 1)
    if fraction == 0 or len(rows) < 10:
        return rows, rows[:0]
    if data.task == "classification":
        validation = np.concatenate([rng.permutation(rows[data.y[rows] == c])[: int(round(fraction * (data.y[rows] == c).sum()))] for c in np.unique(data.y[rows])])
    else:
        validation = rng.permutation(rows)[: int(round(fraction * len(rows)))]
    return np.setdiff1d(rows, validation), np.sort(validation)


def predict(model: nn.Module, x: np.ndarray, task: str, batch: int = 65536) -> np.ndarray:
    """Class probabilities (N x K) or regression outputs (N,) for raw feature rows, batched."""
    outputs = []
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(x), batch):
            out = model(torch.as_tensor(x[start : start + batch], dtype=torch.float32))
            outputs.append(torch.softmax(out, 1) if task == "classification" else out[:, 0])
    return torch.cat(outputs).numpy()


def train_tabular(data: TabularData, config: TrainConfig = TrainConfig(), *, progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> TrainedModel:
    """Train on the training rows (less a validation part for early stopping), test on the test rows."""
    progress, cancel = resolve(progress, cancel)
    start = time.perf_counter()
    fit_rows, val_rows = _validation_rows(data, config.validation_fraction, config.seed)
    threads = torch.get_num_threads()
    # A network this small trains fastest on one thread; more only add contention.
    torch.set_num_threads(1)
    try:
        model, history = _fit(data, config, fit_rows, val_rows, progress, cancel)
    finally:
        torch.set_num_threads(threads)
    model.eval()
    test = data.test
    outputs = predict(model, data.x[test], data.task)
    metrics = classification_metrics(outputs, data.y[test], data.classes) if data.task == "classification" else regression_metrics(outputs, data.y[test])
    metrics.update({"n_train": int(len(fit_rows)), "n_validation": int(len(val_rows))})
    progress(1.0, "trained")
    return TrainedModel(model, data, config, metrics, history, time.perf_counter() - start)


def _fit(data: TabularData, config: TrainConfig, fit_rows, val_rows, progress, cancel) -> tuple[TabularNet, dict]:
    classification = data.task == "classification"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = TabularNet(data.features, config.hidden, len(data.classes) if classification else 1, config.activation, config.dropout)
        x = torch.as_tensor(data.x, dtype=torch.float32)
        y = torch.tensor(data.y)
        if classification:
            counts = torch.bincount(y[fit_rows], minlength=len(data.classes)).float()
            weights = (counts.sum() / (len(counts) * counts.clamp(min=1))) if config.class_weights else None
            loss_fn = nn.CrossEntropyLoss(weight=weights)
        else:
            loss_fn = nn.MSELoss()
            y_mean, y_std = float(y[fit_rows].mean()), float(y[fit_rows].std()) or 1.0
        target = y if classification else (y - y_mean) / y_std
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        history = {"train_loss": [], "val_loss": []}
        best, best_state, stale = float("inf"), None, 0
        fit = torch.as_tensor(fit_rows)
        for epoch in range(config.epochs):
            cancel.check()
            model.train()
            order = fit[torch.randperm(len(fit))]
            total = 0.0
            for low in range(0, len(order), config.batch_size):
                rows = order[low : low + config.batch_size]
                optimizer.zero_grad()
                loss = loss_fn(model(x[rows]).squeeze(1) if not classification else model(x[rows]), target[rows])
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(rows)
            history["train_loss"].append(total / len(order))
            monitored_rows = torch.as_tensor(val_rows) if len(val_rows) else fit
            model.eval()
            with torch.no_grad():
                out = model(x[monitored_rows])
                val_loss = float(loss_fn(out if classification else out.squeeze(1), target[monitored_rows]))
            history["val_loss"].append(val_loss)
            if val_loss < best - 1e-6:
                best, stale = val_loss, 0
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
            losses = EpochLosses(epoch + 1, config.epochs, history["train_loss"][-1], val_loss)
            progress(min(0.99, (epoch + 1) / config.epochs), f"epoch {epoch + 1}: loss {losses.loss:.4f}, validation {val_loss:.4f}", losses)
            if stale >= config.patience:
                break
        if best_state is not None:
            model.load_state_dict(best_state)
        history["epochs_run"] = len(history["train_loss"])
        history["best_epoch"] = int(np.argmin(history["val_loss"])) + 1
    if not classification:
        # Fold the target scaling into the last layer so the saved model predicts in the target's units.
        last = model.body[-1]
        with torch.no_grad():
            last.weight.mul_(y_std)
            last.bias.mul_(y_std).add_(y_mean)
    return model, history
