"""Training image classifiers (torchvision architectures or the small demo CNN) on an ImageFolder
or on the ultrasound phantom, with a seeded split, augmentation, progress and cancellation."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.core.errors import UserError
from engine.core.files import atomic_path, check_output, write_text
from engine.core.jsonable import dumps
from engine.core.progress import CancelToken, EpochLosses, ProgressFn, resolve
from engine.demo.catalogue import DEMO_RECIPES
from engine.demo.phantom import CLASSES, generate
from engine.io.images import read_image, scan_inputs
from engine.io.preprocess import Preprocess
from engine.models.architectures import build_architecture
from engine.runtime.device import select_device
from engine.stats.scores import classification_metrics


@dataclass(frozen=True)
class ImageTrainConfig:
    arch: str = "sonocnn"
    size: int = 128
    epochs: int = 30
    lr: float = 3e-3
    batch: int = 32
    weight_decay: float = 1e-4
    seed: int = 0
    augment: bool = True
    validation_fraction: float = 0.15
    test_fraction: float = 0.15

    def __post_init__(self) -> None:
        if self.size < 16 or self.epochs < 1 or self.batch < 1 or self.lr <= 0:
            raise UserError("size must be at least 16, epochs and batch at least 1, and the learning rate positive")
        if not 0 < self.test_fraction < 0.5 or not 0 <= self.validation_fraction < 0.5:
            raise UserError("the test fraction must be in (0, 0.5) and the validation fraction in [0, 0.5)")


@dataclass
class ImageDataset:
    images: np.ndarray  # N x C x S x S float32 in [0, 1]
    labels: np.ndarray  # N int64
    classes: list[str]
    source: str
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class ImageTrainResult:
    model: nn.Module
    config: ImageTrainConfig
    classes: list[str]
    preprocess: Preprocess
    metrics: dict
    history: dict
    elapsed_s: float
    source: str

    def meta(self) -> dict:
        return {
            "format": "sensiscope-image",
            "arch": self.config.arch,
            "num_classes": len(self.classes),
            "in_channels": self.preprocess.channels,
            "labels": self.classes,
            "preprocess": self.preprocess.to_dict(),
            "metrics": self.metrics,
            "training": asdict(self.config) | {"data": self.source, "epochs_run": len(self.history["train_loss"])},
        }

    def save(self, out: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
        """Write OUT.safetensors and OUT.json, which `load_model` reads back with labels and transforms;
        each atomically, never replacing a file Sensiscope did not write unless ``overwrite``."""
        from safetensors.torch import save_file

        weights, sidecar = check_image_model_output(out, overwrite)
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        with atomic_path(weights, overwrite) as temporary:
            save_file(state, str(temporary))
        write_text(sidecar, dumps(self.meta()), overwrite)
        return weights, sidecar


def check_image_model_output(out: str | Path, overwrite: bool = False) -> tuple[Path, Path]:
    """OUT.safetensors and OUT.json, refused before training when they would replace foreign files."""
    out = Path(out).expanduser()
    if out.is_dir() or out.name in ("", ".", ".."):
        raise UserError(f"{out}: is a folder; give a file name for the model, e.g. {out / 'model'}")
    weights = out.with_suffix(".safetensors")
    return check_output(weights, overwrite), check_output(weights.with_suffix(".json"), overwrite)


def phantom_dataset(n: int, size: int, seed: int) -> ImageDataset:
    generated = generate(n, size=size, seed=seed)
    return ImageDataset(generated.images[:, None].astype(np.float32), generated.labels.astype(np.int64), list(CLASSES), f"ultrasound phantom (n {n}, size {size}, seed {seed})")


def folder_dataset(path: str | Path, size: int) -> ImageDataset:
    """Every readable image of an ImageFolder, resized (shorter side) and centre-cropped to size."""
    scan = scan_inputs(path)
    if scan.layout != "imagefolder" or len(scan.classes) < 2:
        raise UserError(f"{path}: training needs an ImageFolder with at least two class sub-folders")
    decoded, labels, skipped = [], [], [(str(p), r) for p, r in scan.skipped]
    for item in scan.items:
        if item.label is None or item.is_tensor:
            continue
        try:
            decoded.append(read_image(item.path, item.frame))
        except UserError as exc:
            skipped.append((item.source, str(exc)))
            continue
        labels.append(scan.classes.index(item.label))
    if not decoded:
        raise UserError(f"{path}: no readable images")
    # Grayscale sets train a one-channel model; any colour image makes it three channels.
    channels = 3 if any(image.shape[2] == 3 for image in decoded) else 1
    geometry = Preprocess(resize=size, crop=size, mean=(0.0,), std=(1.0,), channels=channels)
    images = np.stack([geometry.geometry(image).numpy() for image in decoded]).astype(np.float32)
    return ImageDataset(images, np.asarray(labels, dtype=np.int64), list(scan.classes), str(path), skipped)


def _split(labels: np.ndarray, config: ImageTrainConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(config.seed)
    train, val, test = [], [], []
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        n_test = max(1, int(round(config.test_fraction * len(rows))))
        n_val = int(round(config.validation_fraction * len(rows)))
        test += list(rows[:n_test])
        val += list(rows[n_test : n_test + n_val])
        train += list(rows[n_test + n_val :])
    if not train:
        raise UserError("too few images to train: every class needs a few images for training and testing")
    return np.sort(train), np.sort(val), np.sort(test)


def _augment(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Left-right flips, shifts of up to 1/16 of the size, and gain and contrast changes: the
    variations between scans. No up-down flips: depth has a direction in ultrasound and photos."""
    n, _, height, width = batch.shape
    flip = torch.rand(n, generator=generator) < 0.5
    batch = torch.where(flip.view(-1, 1, 1, 1).to(batch.device), batch.flip(-1), batch)
    shift = max(1, height // 16)
    padded = F.pad(batch, (shift, shift, shift, shift), mode="replicate")
    dy, dx = torch.randint(0, 2 * shift + 1, (2,), generator=generator).tolist()
    batch = padded[:, :, dy : dy + height, dx : dx + width]
    gain = torch.empty(n, 1, 1, 1).uniform_(0.85, 1.15, generator=generator).to(batch.device)
    gamma = torch.empty(n, 1, 1, 1).uniform_(0.85, 1.15, generator=generator).to(batch.device)
    return (batch.clamp(1e-6, 1.0) ** gamma * gain).clamp(0.0, 1.0)


def _predict(model: nn.Module, images: torch.Tensor, preprocess: Preprocess, device: torch.device, batch: int = 64) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), batch):
            chunk = preprocess.normalize(images[start : start + batch].to(device))
            out.append(torch.softmax(model(chunk), 1).cpu())
    return torch.cat(out).numpy()


def train_image_model(
    dataset: ImageDataset,
    config: ImageTrainConfig = ImageTrainConfig(),
    *,
    device: str | torch.device = "auto",
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> ImageTrainResult:
    """Train ``config.arch`` on a dataset; keep the weights of the best validation epoch; report
    accuracy and the confusion matrix on the held-out test split."""
    progress, cancel = resolve(progress, cancel)
    start_time = time.perf_counter()
    device = select_device(device)
    train_rows, val_rows, test_rows = _split(dataset.labels, config)
    images = torch.from_numpy(dataset.images)
    labels = torch.from_numpy(dataset.labels)
    channels = images.shape[1]
    train_images = images[train_rows]
    mean = tuple(float(v) for v in train_images.mean(dim=(0, 2, 3)))
    std = tuple(max(float(v), 1e-3) for v in train_images.std(dim=(0, 2, 3)))
    preprocess = Preprocess(resize=config.size, crop=config.size, mean=mean, std=std, channels=channels)
    model = build_architecture(config.arch, len(dataset.classes), config.seed, in_channels=channels).to(device)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = (len(train_rows) + config.batch - 1) // config.batch
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=config.epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    history: dict = {"train_loss": [], "train_accuracy": [], "val_accuracy": []}
    best_accuracy, best_state = -1.0, None
    monitor = val_rows if len(val_rows) else train_rows
    with torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else []):
        torch.manual_seed(config.seed)
        for epoch in range(config.epochs):
            model.train()
            order = torch.from_numpy(train_rows)[torch.randperm(len(train_rows), generator=generator)]
            total_loss, correct = 0.0, 0
            for step, low in enumerate(range(0, len(order), config.batch)):
                cancel.check()
                rows = order[low : low + config.batch]
                batch = images[rows]
                if config.augment:
                    batch = _augment(batch, generator)
                batch = preprocess.normalize(batch.to(device))
                target = labels[rows].to(device)
                optimizer.zero_grad(set_to_none=True)
                logits = model(batch)
                loss = loss_fn(logits, target)
                loss.backward()
                optimizer.step()
                schedule.step()
                total_loss += float(loss.detach()) * len(rows)
                correct += int((logits.argmax(1) == target).sum())
                progress((epoch + (step + 1) / steps_per_epoch) / config.epochs * 0.98, f"epoch {epoch + 1}/{config.epochs}")
            history["train_loss"].append(total_loss / len(order))
            history["train_accuracy"].append(correct / len(order))
            val_accuracy = float((_predict(model, images[monitor], preprocess, device).argmax(1) == dataset.labels[monitor]).mean())
            history["val_accuracy"].append(val_accuracy)
            if val_accuracy >= best_accuracy:
                best_accuracy = val_accuracy
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            # Model selection here is by validation accuracy; no validation loss is computed, so none is reported.
            losses = EpochLosses(epoch + 1, config.epochs, history["train_loss"][-1])
            progress((epoch + 1) / config.epochs * 0.98, f"epoch {epoch + 1}/{config.epochs}: loss {losses.loss:.3f}, validation accuracy {val_accuracy:.3f}", losses)
    model.load_state_dict(best_state)
    model.eval()
    probabilities = _predict(model, images[test_rows], preprocess, device)
    metrics = classification_metrics(probabilities, dataset.labels[test_rows], dataset.classes)
    metrics |= {"n_train": int(len(train_rows)), "n_validation": int(len(val_rows)), "best_validation_accuracy": best_accuracy}
    model = model.cpu()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    progress(1.0, "trained")
    return ImageTrainResult(model, config, dataset.classes, preprocess, metrics, history, time.perf_counter() - start_time, dataset.source)


def train_demo_model(name: str, out: str | Path, progress: ProgressFn | None = None, device: str = "auto") -> ImageTrainResult:
    """Train a demo model by its recipe (engine.demo.catalogue.DEMO_RECIPES) and save it to ``out``."""
    recipe = DEMO_RECIPES[name]
    config = ImageTrainConfig(arch=recipe["arch"], size=recipe["size"], epochs=recipe["epochs"], lr=recipe["lr"], batch=recipe["batch"], seed=recipe["seed"])
    result = train_image_model(phantom_dataset(recipe["n"], recipe["size"], recipe["seed"]), config, device=device, progress=progress)
    result.save(out)
    return result
