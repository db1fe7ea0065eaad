"""Several images per forward: ``runner.explain_many`` gives, for every batched method, the maps
``explain`` gives image by image (each image with its own target), falls back to one by one where
a method has no batched form or the model is in training mode, and halves its batch on
out-of-memory; ``deletion_insertion_many`` gives each image's own curves with steps of several
images in one forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from engine.core.errors import UserError
from engine.methods import _registry
from engine.methods._registry import available_methods, get_method
from engine.methods.runner import explain, explain_many
from engine.metrics.faithfulness import deletion_insertion, deletion_insertion_many
from tests.models import LinearModel

# The methods verified here to explain a batch as they explain its images one by one.
BATCHED = {"saliency", "inputxgrad", "gradcam", "gradcam++", "layercam", "xgradcam", "hirescam", "eigencam"}
TARGETS = [None, 0, 2]  # image 0 explains its prediction, the others a given class each


class SmallNet(nn.Module):
    """Convolutions, batch norm (eval mode), max-pooling and a linear head: the demo CNN in small."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(12, 3)
        with torch.no_grad():  # batch norm statistics that are not the identity
            for module in self.features:
                if isinstance(module, nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.2, 0.2)
                    module.running_var.uniform_(0.5, 2.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


@pytest.fixture(scope="module")
def model():
    return SmallNet().eval()


@pytest.fixture(scope="module")
def images():
    return torch.rand(3, 3, 20, 20, generator=torch.Generator().manual_seed(1))


def relative_difference(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(float(np.ptp(b)), 1e-12))


def test_the_batched_methods_are_the_verified_ones():
    assert {spec.name for spec in available_methods() if spec.batched} == BATCHED
    assert get_method("gradcam").to_dict()["batched"] and not get_method("ig").to_dict()["batched"]


@pytest.mark.parametrize("method", sorted(BATCHED))
def test_a_batch_of_three_gives_the_per_image_maps(model, images, method):
    many = explain_many(model, images, method, TARGETS)
    assert len(many) == 3
    for index, target in enumerate(TARGETS):
        one = explain(model, images[index], method, target)
        assert (many[index].target, many[index].predicted) == (one.target, one.predicted)
        assert many[index].probability == pytest.approx(one.probability, abs=1e-6)
        assert relative_difference(many[index].map, one.map) < 1e-5, method
        assert many[index].method == one.method and many[index].elapsed_s > 0
    assert many[1].target == 0 and many[2].target == 2


def test_batched_saliency_of_a_linear_model_is_each_images_own_weight_row():
    """Known answer: d logit_t / d x = W_t, whatever the image; a batch mixing targets must give
    every image the row of its own target."""
    model = LinearModel(channels=2, size=6, classes=4).eval()
    x = torch.randn(4, 2, 6, 6, generator=torch.Generator().manual_seed(0))
    results = explain_many(model, x, "saliency", [3, 0, 2, 1], {"reduce": "sum"})
    for result, target in zip(results, [3, 0, 2, 1], strict=True):
        np.testing.assert_allclose(result.map, model.weight_image(target).sum(0).numpy(), rtol=1e-6, atol=1e-6)


def test_methods_without_a_batched_form_run_one_by_one(model, images):
    params = {"steps": 4}
    many = explain_many(model, list(images), "ig", TARGETS, params)
    for index, target in enumerate(TARGETS):
        np.testing.assert_array_equal(many[index].map, explain(model, images[index], "ig", target, params).map)


def test_a_model_in_training_mode_is_explained_one_by_one(images, monkeypatch):
    """Batch statistics would mix the images of a batch: the batched form is not used then."""
    train_model = SmallNet().train()

    def refuse(*args, **kwargs):
        raise AssertionError("the batched form ran on a model in training mode")

    monkeypatch.setitem(_registry._BATCHED, "gradcam", refuse)
    assert len(explain_many(train_model, images, "gradcam")) == 3


class OutOfMemoryAbove(nn.Module):
    """The wrapped model, raising the CPU allocator's out-of-memory error for batches above ``limit``."""

    def __init__(self, inner: nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.sizes = inner, limit, []

    def forward(self, x):
        self.sizes.append(x.shape[0])
        if x.shape[0] > self.limit:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 GB")
        return self.inner(x)


def test_out_of_memory_halves_the_batch_and_keeps_the_maps(model, images):
    wrapped = OutOfMemoryAbove(model, limit=1).eval()
    many = explain_many(wrapped, images, "saliency", batch_size=3)
    assert wrapped.sizes[:3] == [3, 1, 1]  # 3 failed, then halved to 1
    for index in range(3):
        assert relative_difference(many[index].map, explain(model, images[index], "saliency").map) < 1e-5


def test_bad_batches_are_one_user_error(model, images):
    with pytest.raises(UserError, match="2 targets for 3 images"):
        explain_many(model, images, "saliency", [0, 1])
    with pytest.raises(UserError, match="same size"):
        explain_many(model, [images[0], images[1, :, :10, :10]], "saliency")
    with pytest.raises(UserError, match="no images"):
        explain_many(model, [], "saliency")


def test_curves_of_several_images_in_one_forward_are_each_images_own(model, images):
    maps = [np.random.default_rng(i).random((20, 20)) for i in range(3)]
    targets = [None, 1, 2]
    # 7 perturbed images per forward: forwards hold steps of two images and of both curves
    many = deletion_insertion_many(model, images, maps, targets, steps=6, batch_size=7)
    for index, target in enumerate(targets):
        one = deletion_insertion(model, images[index], maps[index], target, steps=6)
        assert many[index].target == one.target and many[index].forward_passes == one.forward_passes == 16
        for kind in ("deletion", "insertion"):
            np.testing.assert_allclose(getattr(many[index], kind).scores, getattr(one, kind).scores, rtol=1e-6, atol=1e-7)
            assert getattr(many[index], kind).auc == pytest.approx(getattr(one, kind).auc, abs=1e-6)
        assert many[index].original_score == pytest.approx(one.original_score, abs=1e-6)
        assert many[index].baseline_score == pytest.approx(one.baseline_score, abs=1e-6)
    assert many[1].target == 1 and many[2].target == 2
    with pytest.raises(UserError, match="2 maps and 3 targets for 3 images"):
        deletion_insertion_many(model, images, maps[:2], targets, steps=6)
