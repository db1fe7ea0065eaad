"""Grad-CAM and Grad-CAM++ against known answers, pytorch-grad-cam, and a model that sees one region."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import engine
from engine import UserError
from engine.models.architectures import build_architecture
from engine.models.layers import get_layer
from tests.models import region_model, tiny_cnn

METHODS = ("gradcam", "gradcam++")


class KnownCam(nn.Module):
    """Features A = 2 x 2 average pooling of the input, seen through an Identity layer called "cam",
    then global average pooling and a linear head: d logit_c / d A_kij = W[c, k] / (h * w) exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.cam = nn.Identity()
        self.head = nn.Linear(4, 3)
        with torch.no_grad():
            # Mixed signs so the ReLU matters; W[0, 3] = 0 gives a channel with zero gradient.
            self.head.weight.copy_(torch.tensor([[1.0, -2.0, 0.5, 0.0], [-1.0, 0.25, 2.0, 1.5], [0.3, 0.3, -0.7, 1.0]]))
            self.head.bias.copy_(torch.tensor([0.1, -0.2, 0.0]))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.cam(self.features(x)).mean(dim=(2, 3)))


def _input(shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _reference(model, layer, x, target, method):
    """pytorch-grad-cam's map, on a copy: it calls .backward() and needs parameters that require grad."""
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    copied = copy.deepcopy(model)
    for p in copied.parameters():
        p.requires_grad_(True)
    for module in copied.modules():
        # With an in-place ReLU after the layer pytorch-grad-cam mixes the ReLU's output (activations
        # share storage on the CPU) with the gradient before it; give it the plain graph instead.
        if isinstance(module, nn.ReLU):
            module.inplace = False
    cls = GradCAM if method == "gradcam" else GradCAMPlusPlus
    with cls(model=copied, target_layers=[get_layer(copied, layer)]) as cam:
        return cam(input_tensor=x[None].clone(), targets=[ClassifierOutputTarget(target)])[0]


def _correlation(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.fixture(scope="module")
def resnet18():
    return build_architecture("resnet18", seed=0)


@pytest.fixture(scope="module")
def vgg16():
    return build_architecture("vgg16", seed=0)


# ------------------------------------------------------------------------------ known answers


@pytest.mark.parametrize("target", [0, 1, 2])
def test_gradcam_weights_and_raw_map_are_known_by_construction(target):
    model, x = KnownCam(), _input((4, 8, 8), seed=target)
    result = engine.explain(model, x, "gradcam", target=target, params={"layer": "cam"})
    features = model.features(x[None])[0]
    w = model.head.weight[target].detach()
    np.testing.assert_allclose(result.extras["weights"], (w / 16).numpy(), rtol=1e-6, atol=1e-8)
    raw = torch.relu(torch.einsum("k,khw->hw", w / 16, features))
    np.testing.assert_allclose(result.extras["raw_map"], raw.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(result.extras["activations"], features.numpy(), rtol=1e-6)
    upsampled = F.interpolate(raw[None, None], size=(8, 8), mode="bilinear", align_corners=False)[0, 0]
    np.testing.assert_allclose(result.map, upsampled.numpy(), rtol=1e-5, atol=1e-7)
    assert result.extras["layer"] == "cam"


def test_without_relu_the_map_is_the_signed_weighted_sum():
    model, x = KnownCam(), _input((4, 8, 8), seed=4)
    result = engine.explain(model, x, "gradcam", target=0, params={"layer": "cam", "relu": False})
    signed = torch.einsum("k,khw->hw", model.head.weight[0].detach() / 16, model.features(x[None])[0])
    np.testing.assert_allclose(result.extras["raw_map"], signed.numpy(), rtol=1e-5, atol=1e-7)
    assert signed.min() < 0, "the construction must give a map of both signs"
    assert result.map.min() < 0


def test_log_probability_output_uses_its_own_gradient():
    # d log p_c / d A_kij = (W[c, k] - sum_j p_j W[j, k]) / (h * w).
    model, x = KnownCam(), _input((4, 8, 8), seed=5)
    result = engine.explain(model, x, "gradcam", target=1, params={"layer": "cam", "output": "log_probability"})
    with torch.no_grad():
        p = torch.softmax(model(x[None])[0], 0)
        expected = (model.head.weight[1] - (p[:, None] * model.head.weight).sum(0)) / 16
    np.testing.assert_allclose(result.extras["weights"], expected.numpy(), rtol=1e-5, atol=1e-8)


def test_gradcam_pp_weights_follow_the_closed_form():
    # With g_kij = W[c, k] / 16 constant over positions: alpha_k = 1 / (2 + S_k g_k) where g_k != 0,
    # so w_k = 16 * ReLU(g_k) / (2 + S_k g_k), and 0 for the channel whose gradient is exactly 0.
    model, x = KnownCam(), _input((4, 8, 8), seed=6)
    result = engine.explain(model, x, "gradcam++", target=0, params={"layer": "cam"})
    features = model.features(x[None])[0].double()
    g = model.head.weight[0].detach().double() / 16
    total = features.sum(dim=(1, 2))
    expected = torch.where(g != 0, 16 * torch.relu(g) / (2 + total * g), torch.zeros_like(g))
    np.testing.assert_allclose(result.extras["weights"], expected.numpy(), rtol=1e-5, atol=1e-9)
    assert result.extras["weights"][3] == 0.0 and np.isfinite(result.map).all()
    raw = torch.relu(torch.einsum("k,khw->hw", expected, features))
    np.testing.assert_allclose(result.extras["raw_map"], raw.numpy(), rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("method", METHODS)
def test_in_place_relu_after_the_layer_does_not_change_the_map(method):
    plain, in_place = tiny_cnn(seed=2), tiny_cnn(seed=2)
    in_place.features[3].inplace = True
    x = _input((3, 12, 12), seed=7)
    a = engine.explain(plain, x, method, params={"layer": "features.2", "relu": False})
    b = engine.explain(in_place, x, method, params={"layer": "features.2", "relu": False})
    np.testing.assert_allclose(b.map, a.map, rtol=1e-6, atol=1e-9)
    assert (a.extras["activations"] < 0).any(), "the conv output (before the ReLU) must be recorded"


# ------------------------------------------------------------------------------ reference implementation


@pytest.mark.parametrize("method", METHODS)
def test_agrees_with_pytorch_grad_cam_on_resnet18(method, resnet18):
    x = _input((3, 64, 64), seed=1)
    result = engine.explain(resnet18, x, method)
    assert result.extras["layer"] == "layer4"
    assert _correlation(result.map, _reference(resnet18, "layer4", x, result.target, method)) >= 0.99


@pytest.mark.parametrize("method", METHODS)
def test_agrees_with_pytorch_grad_cam_on_vgg16_and_uses_its_last_conv(method, vgg16):
    x = _input((3, 64, 64), seed=2)
    result = engine.explain(vgg16, x, method, target=5)
    assert result.extras["layer"] == "features.28"
    assert result.extras["activations"].shape == (512, 4, 4)
    assert _correlation(result.map, _reference(vgg16, "features.28", x, 5, method)) >= 0.99


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("layer", ["features.2", "features.3"])
def test_agrees_with_pytorch_grad_cam_on_tiny_cnn(method, layer):
    model = tiny_cnn(seed=0)
    if method == "gradcam++":
        # pytorch-grad-cam adds 1e-6 to the alpha denominator 2 g^2 + S g^3; this net's gradients are
        # ~1e-4, so g^2 is below that epsilon. A larger head makes the epsilon negligible.
        with torch.no_grad():
            model.classifier.weight.mul_(1000)
    x = _input((3, 16, 16), seed=3)
    result = engine.explain(model, x, method, params={"layer": layer})
    assert _correlation(result.map, _reference(model, layer, x, result.target, method)) >= 0.99


# ------------------------------------------------------------------------------ behaviour


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("layer", ["features.2", "features.3"])
def test_region_model_map_lies_inside_the_region(method, layer):
    model = region_model(seed=0)
    result = engine.explain(model, _input((3, 16, 16), seed=8), method, params={"layer": layer})
    r0, r1, c0, c1 = model.region
    inside = np.zeros((16, 16), dtype=bool)
    inside[max(r0 - 3, 0) : r1 + 3, max(c0 - 3, 0) : c1 + 3] = True
    total = result.map.sum()
    assert total > 0
    assert result.map[inside].sum() >= 0.95 * total


def test_extras_and_upsampling_on_a_cnn():
    result = engine.explain(tiny_cnn(seed=1), _input((3, 10, 14)), "gradcam", params={"layer": "features.3"})
    extras = result.extras
    assert extras["activations"].shape == (8, 10, 14) and extras["weights"].shape == (8,)
    assert extras["raw_map"].shape == (10, 14)
    np.testing.assert_allclose(result.map, extras["raw_map"], rtol=1e-6, atol=1e-9)  # same size: no resampling


def test_unknown_layer_is_a_user_error():
    with pytest.raises(UserError, match="no layer 'features.9'"):
        engine.explain(tiny_cnn(), _input((3, 8, 8)), "gradcam", params={"layer": "features.9"})


@pytest.mark.parametrize("method", METHODS)
def test_layer_without_a_feature_map_is_a_user_error_naming_the_shape(method):
    with pytest.raises(UserError, match=r"shape \(1, 3\)"):
        engine.explain(tiny_cnn(), _input((3, 8, 8)), method, params={"layer": "classifier"})


@pytest.mark.parametrize("method", METHODS)
def test_torchscript_model_is_a_user_error(method, scripted_tiny):
    path, _ = scripted_tiny
    loaded = engine.load_model(str(path))
    for params in ({}, {"layer": "features.2"}):
        with pytest.raises(UserError, match="TorchScript"):
            engine.explain(loaded, _input((3, 8, 8)), method, params=params)


@pytest.mark.parametrize("method", METHODS)
def test_the_model_is_not_changed_and_needs_no_grad_setup(method):
    model = tiny_cnn(seed=3)
    for p in model.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = engine.explain(model, _input((3, 8, 8)), method)
    assert result.extras["layer"] == "features.2"  # the last Conv2d of a plain `features` block
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert not model.features[2]._forward_hooks, "the recording hook must be removed"
