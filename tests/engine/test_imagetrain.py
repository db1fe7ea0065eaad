"""Image-model training, the demo models and the evaluate workflow."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import engine
from engine import UserError
from engine.core.progress import EpochLosses
from engine.demo.catalogue import shipped_model
from engine.demo.phantom import generate
from engine.models.architectures import adapt_input_channels, build_architecture
from engine.models.demo import demo_model_file
from engine.models.training import ImageDataset, ImageTrainConfig, folder_dataset, phantom_dataset, train_image_model


def _stripes(n: int = 48, size: int = 24, seed: int = 0) -> ImageDataset:
    """Two classes a tiny CNN separates at once: horizontal or vertical stripes, with noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 2
    grid = np.arange(size)
    images = []
    for label in labels:
        stripes = (np.sin(grid * 1.3 + rng.uniform(0, 6)) > 0).astype(np.float32)
        image = stripes[:, None].repeat(size, 1) if label == 0 else stripes[None, :].repeat(size, 0)
        images.append(np.clip(0.7 * image + 0.3 * rng.random((size, size)), 0, 1))
    return ImageDataset(np.stack(images)[:, None].astype(np.float32), labels.astype(np.int64), ["horizontal", "vertical"], "stripes")


def test_training_learns_a_separable_set_and_saves_what_load_model_reads(tmp_path):
    result = train_image_model(_stripes(), ImageTrainConfig(arch="sonocnn", size=24, epochs=12, lr=1e-2, batch=8, seed=1), device="cpu")
    assert result.metrics["accuracy"] >= 0.9
    assert np.array(result.metrics["confusion_matrix"]).sum() == result.metrics["n_test"]
    weights, sidecar = result.save(tmp_path / "stripes")
    meta = json.loads(sidecar.read_text())
    assert meta["arch"] == "sonocnn" and meta["labels"] == ["horizontal", "vertical"] and meta["in_channels"] == 1
    loaded = engine.load_model(str(weights))
    assert loaded.labels == ["horizontal", "vertical"] and loaded.preprocess.channels == 1 and loaded.preprocess.crop == 24
    dataset = _stripes(n=20, seed=9)
    with torch.no_grad():
        logits = loaded.module(loaded.preprocess.normalize(torch.from_numpy(dataset.images)))
    assert (logits.argmax(1).numpy() == dataset.labels).mean() >= 0.9


def test_training_is_seeded():
    config = ImageTrainConfig(arch="sonocnn", size=24, epochs=2, batch=8, seed=3)
    first = train_image_model(_stripes(n=24), config, device="cpu")
    second = train_image_model(_stripes(n=24), config, device="cpu")
    for (name, a), b in zip(first.model.state_dict().items(), second.model.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_each_epoch_is_reported_with_a_typed_payload_equal_to_the_history():
    reports = []
    config = ImageTrainConfig(arch="sonocnn", size=24, epochs=3, batch=8, seed=2)
    result = train_image_model(_stripes(n=24), config, device="cpu", progress=lambda f, message, data=None: reports.append((message, data)))
    epochs = [(message, data) for message, data in reports if data is not None]
    assert all(isinstance(data, EpochLosses) for _, data in epochs)
    assert [(data.epoch, data.epochs) for _, data in epochs] == [(1, 3), (2, 3), (3, 3)]
    assert [data.loss for _, data in epochs] == result.history["train_loss"]
    # Training keeps the epoch with the best validation accuracy; there is no validation loss to report.
    assert all(data.validation is None for _, data in epochs)
    assert [message for message, _ in epochs] == [
        f"epoch {e + 1}/3: loss {loss:.3f}, validation accuracy {accuracy:.3f}" for e, (loss, accuracy) in enumerate(zip(result.history["train_loss"], result.history["val_accuracy"], strict=True))
    ]


def test_cancel_stops_training():
    token = engine.CancelToken()
    token.cancel()
    with pytest.raises(engine.Cancelled):
        train_image_model(_stripes(n=24), ImageTrainConfig(size=24, epochs=2), device="cpu", cancel=token)


def test_torchvision_architectures_take_one_channel():
    model = build_architecture("resnet18", num_classes=3, in_channels=1)
    assert model.conv1.in_channels == 1
    assert model(torch.rand(2, 1, 64, 64)).shape == (2, 3)
    rgb = build_architecture("vgg11", num_classes=2, seed=1)
    expected = rgb.features[0].weight.sum(1, keepdim=True)
    adapt_input_channels(rgb, 1)
    torch.testing.assert_close(rgb.features[0].weight, expected)


def test_folder_dataset_reads_an_imagefolder(tmp_path):
    for label, value in (("dark", 40), ("light", 200)):
        (tmp_path / label).mkdir()
        for index in range(3):
            Image.fromarray(np.full((30, 40), value + index, np.uint8)).save(tmp_path / label / f"{index}.png")
    (tmp_path / "dark" / "broken.png").write_bytes(b"nope")
    dataset = folder_dataset(tmp_path, 16)
    assert dataset.images.shape == (6, 1, 16, 16) and dataset.classes == ["dark", "light"]
    assert list(dataset.labels) == [0, 0, 0, 1, 1, 1]
    assert dataset.images[0].mean() == pytest.approx(40 / 255, abs=1e-3)
    assert any("broken.png" in path for path, _ in dataset.skipped)
    with pytest.raises(UserError, match="ImageFolder"):
        folder_dataset(tmp_path / "dark", 16)


def test_phantom_dataset_matches_the_generator():
    dataset = phantom_dataset(6, 64, 5)
    generated = generate(6, size=64, seed=5)
    np.testing.assert_array_equal(dataset.images[:, 0], generated.images)
    assert dataset.classes == ["normal", "benign", "malignant"]


def test_shipped_demo_model_reaches_its_stated_accuracy_on_fresh_images():
    meta = json.loads(shipped_model("ultrasound").with_suffix(".json").read_text())
    assert shipped_model("ultrasound").stat().st_size < 5 * 2**20
    loaded = engine.load_model("demo:ultrasound")
    assert loaded.labels == ["normal", "benign", "malignant"] and loaded.preprocess.channels == 1
    fresh = generate(90, size=128, seed=4242)  # a seed the model never saw
    with torch.no_grad():
        x = loaded.preprocess.normalize(torch.from_numpy(fresh.images[:, None]))
        accuracy = float((loaded.module(x).argmax(1).numpy() == fresh.labels).mean())
    assert accuracy >= 0.9
    assert meta["metrics"]["accuracy"] >= 0.9


def test_unknown_demo_is_a_user_error():
    with pytest.raises(UserError, match="demo:ultrasound"):
        demo_model_file("demo:xray")
