"""The CAM family (layercam, xgradcam, hirescam, eigencam, scorecam, ablationcam) against
pytorch-grad-cam's same-named classes and against answers known in closed form."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import engine
from engine import UserError
from engine.models.architectures import build_architecture
from engine.models.layers import get_layer
from tests.models import tiny_cnn

grad_cam = pytest.importorskip("pytorch_grad_cam")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

REFERENCES = {
    "layercam": "LayerCAM",
    "xgradcam": "XGradCAM",
    "hirescam": "HiResCAM",
    "eigencam": "EigenCAM",
    "scorecam": "ScoreCAM",
    "ablationcam": "AblationCAM",
}


def _pearson(a, b) -> float:
    return float(np.corrcoef(np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64))[0, 1])


def _input(shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _reference(model: nn.Module, layer: str, x: torch.Tensor, target: int, method: str) -> np.ndarray:
    """pytorch-grad-cam's map, on a copy with parameters that require grad and out-of-place ReLUs
    (with an in-place ReLU after the layer it records the ReLU's output, see test_gradcam.py)."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    copied = copy.deepcopy(model)
    for p in copied.parameters():
        p.requires_grad_(True)
    for module in copied.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    cls = getattr(grad_cam, REFERENCES[method])
    with cls(model=copied, target_layers=[get_layer(copied, layer)]) as cam:
        return cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0]


def _small_head(model: nn.Module) -> nn.Module:
    """vgg11's features with a small head: its 4096-wide classifier (100 M multiply-adds per image
    whatever the input size) would dominate the 2 x 512 forwards of Score-CAM and Ablation-CAM and
    their references; the layer under test (features.18, then an in-place ReLU) is unchanged."""
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    torch.manual_seed(1)
    model.classifier = nn.Sequential(nn.Flatten(), nn.Linear(512, 64), nn.ReLU(inplace=True), nn.Linear(64, 10))
    return model.eval()


def _network(name: str, size: int, small_head: bool = False):
    model = build_architecture(name, num_classes=10, seed=0).eval()
    if small_head:
        model = _small_head(model)
    x = _input((1, 3, size, size))
    with torch.no_grad():
        target = int(model(x).argmax())
    return model, x, target


# The layers: layer4 of resnet18 and the last convolution of vgg11 (features.18), 2 x 2 or larger.
@pytest.fixture(scope="module", params=[("resnet18", "layer4", 64), ("vgg11", "features.18", 48)], ids=["resnet18", "vgg11"])
def network(request):
    name, layer, size = request.param
    return (*_network(name, size), layer)


@pytest.mark.parametrize("method", ["layercam", "xgradcam", "hirescam", "eigencam"])
def test_one_pass_cams_equal_pytorch_grad_cam(network, method):
    model, x, target, layer = network
    ours = engine.explain(model, x[0], method, target=target, params={"layer": layer})
    theirs = _reference(model, layer, x, target, method)
    assert np.std(ours.map) > 0 and np.std(theirs) > 0
    assert _pearson(ours.map, theirs) >= 0.99


# One forward per channel (512) on both sides: small inputs, resnet18 at 40 x 40 (layer4 is 2 x 2)
# and vgg11 with a small head at 32 x 32 (features.18 is 2 x 2).
@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
@pytest.mark.parametrize("name,layer,size,small_head", [("resnet18", "layer4", 40, False), ("vgg11", "features.18", 32, True)], ids=["resnet18", "vgg11"])
def test_batched_cams_equal_pytorch_grad_cam(method, name, layer, size, small_head):
    model, x, target = _network(name, size, small_head)
    ours = engine.explain(model, x[0], method, target=target, params={"layer": layer})
    theirs = _reference(model, layer, x, target, method)
    assert ours.extras["raw_map"].shape == (2, 2)
    assert np.std(ours.map) > 0 and np.std(theirs) > 0
    assert _pearson(ours.map, theirs) >= 0.99


def test_default_layer_is_the_named_one_for_vgg():
    model = build_architecture("vgg11", num_classes=10, seed=0).eval()
    result = engine.explain(model, _input((3, 32, 32)), "layercam")
    assert result.extras["layer"] == "features.18"


class _Gap(nn.Module):
    """Features through an Identity called "cam", global average pooling, a linear head:
    d logit_c / d A_kij = W[c, k] / (h w) exactly."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(3)
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.cam = nn.Identity()
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.cam(self.body(x)).mean(dim=(2, 3)))


def test_hirescam_and_layercam_have_their_closed_forms():
    model, x = _Gap().eval(), _input((3, 8, 8), seed=1)
    with torch.no_grad():
        feature = model.body(x[None])[0]
    weight = model.head.weight[1].detach() / 64
    hires = engine.explain(model, x, "hirescam", target=1, params={"layer": "cam", "relu": False})
    np.testing.assert_allclose(hires.extras["raw_map"], torch.einsum("k,khw->hw", weight, feature).numpy(), rtol=1e-5, atol=1e-7)
    layer = engine.explain(model, x, "layercam", target=1, params={"layer": "cam", "relu": False})
    np.testing.assert_allclose(layer.extras["raw_map"], torch.einsum("k,khw->hw", weight.clamp(min=0), feature).numpy(), rtol=1e-5, atol=1e-7)
    xgrad = engine.explain(model, x, "xgradcam", target=1, params={"layer": "cam"})
    np.testing.assert_allclose(xgrad.extras["weights"], weight.numpy(), rtol=1e-4, atol=1e-7)  # sum(g A) / sum(A) = g when g is constant


def test_ablationcam_weights_are_the_relative_drops():
    model, x = _Gap().eval(), _input((3, 8, 8), seed=2)
    result = engine.explain(model, x, "ablationcam", target=0, params={"layer": "cam", "batch_size": 3})
    with torch.no_grad():
        feature = model.body(x[None])[0]
        y = float(model(x[None])[0, 0])
    # Zeroing map k removes W[0, k] * mean(A_k) from the logit.
    expected = (model.head.weight[0].detach() * feature.mean(dim=(1, 2))).numpy() / y
    np.testing.assert_allclose(result.extras["weights"], expected, rtol=1e-4, atol=1e-6)
    assert result.extras["rest_of_network_only"]


class _Concat(nn.Module):
    """The layer's output is concatenated with an earlier tensor: the rest of the network cannot
    take a batch from one input, so Ablation-CAM must repeat the input instead."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.block = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(8, 2)

    def forward(self, x):
        stem = torch.relu(self.stem(x))
        return self.head(torch.cat([self.block(stem), stem], dim=1).mean(dim=(2, 3)))


def test_ablationcam_falls_back_to_repeating_the_input():
    model, x = _Concat().eval(), _input((3, 10, 10), seed=3)
    result = engine.explain(model, x, "ablationcam", target=1, params={"layer": "block", "batch_size": 2})
    assert not result.extras["rest_of_network_only"]
    with torch.no_grad():
        y = float(model(x[None])[0, 1])
        stem = torch.relu(model.stem(x[None]))
        feature = model.block(stem)
        expected = []
        for k in range(4):
            ablated = feature.clone()
            ablated[:, k] = 0
            expected.append((y - float(model.head(torch.cat([ablated, stem], 1).mean(dim=(2, 3)))[0, 1])) / y)
    np.testing.assert_allclose(result.extras["weights"], expected, rtol=1e-4, atol=1e-6)


def test_ablationcam_refuses_a_layer_that_runs_twice():
    model = build_architecture("resnet18", num_classes=4, seed=0).eval()
    with pytest.raises(UserError, match="runs 2 times"):
        engine.explain(model, _input((3, 32, 32)), "ablationcam", params={"layer": "layer4.1.relu"})


@pytest.mark.parametrize("method", ["scorecam", "ablationcam"])
def test_batched_cams_do_not_depend_on_the_batch_or_the_budget(method):
    model, x = tiny_cnn(seed=4), _input((3, 16, 16), seed=5)
    maps = [engine.explain(model, x, method, params=p).map for p in ({"batch_size": 1}, {"batch_size": 5}, {}, {"memory_budget_mb": 1})]
    for other in maps[1:]:
        np.testing.assert_allclose(other, maps[0], rtol=1e-5, atol=1e-7)


def test_scorecam_constant_maps_share_one_forward():
    model = tiny_cnn(seed=6)
    with torch.no_grad():  # a dead channel: its feature map is constant (zero after the ReLU)
        model.features[2].weight[3] = 0
        model.features[2].bias[3] = -1
    x = _input((3, 16, 16), seed=7)
    result = engine.explain(model, x, "scorecam", params={"layer": "features.3"})
    assert result.extras["constant_maps"] >= 1
    assert result.extras["forward_passes"] == 8 - result.extras["constant_maps"] + 2
    with torch.no_grad():
        zero_score = float(model(torch.zeros(1, 3, 16, 16))[0, result.target])
    assert result.extras["scores"][3] == pytest.approx(zero_score, rel=1e-5)
    reference = _reference(model, "features.3", x[None], result.target, "scorecam")
    assert _pearson(result.map, reference) >= 0.99


def test_eigencam_is_the_first_principal_component():
    model, x = tiny_cnn(seed=8), _input((3, 16, 16), seed=9)
    result = engine.explain(model, x, "eigencam", params={"layer": "features.3", "relu": False})
    feature = result.extras["activations"].reshape(8, -1).T.astype(np.float64)
    centred = feature - feature.mean(0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    projection = centred @ vt[0]
    assert abs(_pearson(result.extras["raw_map"], projection)) == pytest.approx(1.0, abs=1e-6)
    assert np.dot(result.extras["raw_map"].ravel(), feature.sum(1) - feature.sum(1).mean()) > 0  # the sign convention


def test_cams_refuse_torchscript():
    scripted = torch.jit.script(tiny_cnn())
    for method in REFERENCES:
        with pytest.raises(UserError, match="TorchScript"):
            engine.explain(scripted, _input((3, 16, 16)), method)
