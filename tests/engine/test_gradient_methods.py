"""The gradient family (ig, smoothgrad, inputxgrad, guidedbp, guided-gradcam) against Captum and
against answers known in closed form."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import engine
from engine import UserError
from engine.methods._gradients import quadrature, reduce_channels
from engine.models.architectures import build_architecture
from engine.models.layers import get_layer
from tests.models import LinearModel, tiny_cnn

captum_attr = pytest.importorskip("captum.attr")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _pearson(a, b) -> float:
    return float(np.corrcoef(np.ravel(a).astype(np.float64), np.ravel(np.asarray(b)).astype(np.float64))[0, 1])


def _input(shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _out_of_place(model: nn.Module) -> nn.Module:
    """A copy for Captum, whose backward hooks cannot handle in-place ReLUs."""
    copied = copy.deepcopy(model)
    for module in copied.modules():
        if isinstance(module, nn.ReLU):
            module.inplace = False
    return copied


@pytest.fixture(scope="module", params=[("resnet18", "layer4"), ("vgg11", "features.18")], ids=["resnet18", "vgg11"])
def network(request):
    name, layer = request.param
    model = build_architecture(name, num_classes=10, seed=0).eval()
    x = _input((1, 3, 64, 64))
    with torch.no_grad():
        target = int(model(x).argmax())
    return model, _out_of_place(model), layer, x, target


def test_ig_equals_captum(network):
    model, reference, _layer, x, target = network
    ours = engine.explain(model, x[0], "ig", target=target, params={"steps": 12, "batch_size": 5})
    theirs = captum_attr.IntegratedGradients(reference).attribute(x, target=target, n_steps=12, internal_batch_size=12)
    assert _pearson(ours.extras["attribution"], theirs.detach()) >= 0.999
    assert _pearson(ours.map, theirs[0].sum(0).detach()) >= 0.999


@pytest.mark.parametrize("rule", ["riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"])
def test_ig_riemann_rules_equal_captum(rule):
    model = tiny_cnn(seed=2)
    x = _input((1, 3, 16, 16), seed=3)
    ours = engine.explain(model, x[0], "ig", target=1, params={"steps": 7, "rule": rule, "baseline": "zero"})
    theirs = captum_attr.IntegratedGradients(model).attribute(x, target=1, n_steps=7, method=rule)
    assert _pearson(ours.extras["attribution"], theirs.detach()) >= 0.999


def test_inputxgrad_equals_captum(network):
    model, reference, _layer, x, target = network
    ours = engine.explain(model, x[0], "inputxgrad", target=target)
    theirs = captum_attr.InputXGradient(reference).attribute(x.clone(), target=target)
    assert _pearson(ours.extras["attribution"], theirs.detach()) >= 0.999


def test_guidedbp_equals_captum_with_in_place_relus(network):
    model, reference, _layer, x, target = network
    assert any(isinstance(m, nn.ReLU) and m.inplace for m in model.modules())  # ours runs on the in-place model
    ours = engine.explain(model, x[0], "guidedbp", target=target)
    theirs = captum_attr.GuidedBackprop(reference).attribute(x.clone(), target=target)
    assert _pearson(ours.extras["attribution"], theirs.detach()) >= 0.999
    assert _pearson(ours.map, theirs[0].abs().amax(0).detach()) >= 0.999


def test_guided_gradcam_equals_captum(network):
    model, reference, layer, x, target = network
    ours = engine.explain(model, x[0], "guided-gradcam", target=target, params={"layer": layer, "reduce": "sum"})
    theirs = captum_attr.GuidedGradCam(reference, get_layer(reference, layer)).attribute(x.clone(), target=target, interpolate_mode="bilinear")
    assert _pearson(ours.extras["attribution"], theirs.detach()) >= 0.999
    assert _pearson(ours.map, theirs[0].sum(0).detach()) >= 0.999


class _FunctionalNet(nn.Module):
    """The same network written with F.relu, Tensor.relu_ and Tensor.relu instead of modules."""

    def __init__(self, modular: nn.Module) -> None:
        super().__init__()
        self.conv1, self.conv2, self.head = modular.conv1, modular.conv2, modular.head

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = self.conv2(x).relu_().relu()
        return self.head(x.mean(dim=(2, 3)))


class _ModularNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.conv1, self.conv2, self.head = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1), nn.Linear(6, 3)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.head(self.relu(self.conv2(self.relu(self.conv1(x)))).mean(dim=(2, 3)))


def test_guidedbp_reaches_functional_relus():
    modular = _ModularNet().eval()
    functional = _FunctionalNet(modular).eval()
    x = _input((3, 12, 12), seed=5)
    with_modules = engine.explain(modular, x, "guidedbp", target=0, params={"reduce": "sum"})
    with_functions = engine.explain(functional, x, "guidedbp", target=0, params={"reduce": "sum"})
    plain = engine.explain(functional, x, "saliency", target=0, params={"reduce": "sum"})
    np.testing.assert_allclose(with_functions.map, with_modules.map, rtol=1e-5, atol=1e-7)
    theirs = captum_attr.GuidedBackprop(_out_of_place(modular)).attribute(x[None].clone(), target=0)
    np.testing.assert_allclose(with_modules.extras["attribution"], theirs[0].detach().numpy(), rtol=1e-4, atol=1e-7)
    assert not np.allclose(plain.map, with_functions.map)  # the guided rule did change the gradient


def test_guided_methods_refuse_torchscript():
    scripted = torch.jit.script(tiny_cnn())
    for method in ("guidedbp", "guided-gradcam"):
        with pytest.raises(UserError, match="TorchScript"):
            engine.explain(scripted, _input((3, 16, 16)), method)


class _Smooth(nn.Module):
    """A small network of smooth functions (softplus, tanh): IG's integral converges fast."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(7)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8 * 8 * 8, 4)

    def forward(self, x):
        return self.head(torch.tanh(F.softplus(self.conv(x)) - 0.5).flatten(1))


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_trapezoid", "riemann_middle"])
def test_ig_completeness_gap_below_one_percent_at_64_steps(rule):
    result = engine.explain(_Smooth().eval(), _input((3, 8, 8), seed=8) * 3, "ig", target=2, params={"steps": 64, "rule": rule, "reduce": "sum"})
    delta = result.extras["f_input"] - result.extras["f_baseline"]
    assert abs(delta) > 0.1
    assert abs(result.extras["relative_completeness_gap"]) < 0.01
    assert float(result.map.sum()) == pytest.approx(result.extras["attribution_sum"], rel=1e-4)


def test_ig_of_a_linear_model_is_weight_times_input_for_every_baseline():
    model, x = LinearModel(3, 8, 4), _input((3, 8, 8), seed=9)
    for baseline in ("zero", "mean", "blur", "noise"):
        result = engine.explain(model, x, "ig", target=1, params={"steps": 3, "baseline": baseline}, seed=2)
        assert abs(result.extras["completeness_gap"]) < 1e-3
    zero = engine.explain(model, x, "ig", target=1, params={"steps": 3, "reduce": "sum"})
    np.testing.assert_allclose(zero.map, (model.weight_image(1) * x).sum(0).numpy(), rtol=1e-4, atol=1e-5)


def test_quadrature_weights_integrate_polynomials():
    for rule in ("gausslegendre", "riemann_trapezoid", "riemann_middle", "riemann_left", "riemann_right"):
        alphas, weights = quadrature(rule, 400)
        assert float(weights.sum()) == pytest.approx(1.0, abs=1e-9)
        assert float((weights * alphas**2).sum()) == pytest.approx(1 / 3, abs=3e-3)


def test_reductions():
    a = torch.tensor([[[3.0, -1.0]], [[-4.0, 2.0]]])  # 2 channels x 1 x 2
    assert reduce_channels(a, "maxabs").tolist() == [[4.0, 2.0]]
    assert reduce_channels(a, "sum").tolist() == [[-1.0, 1.0]]
    assert reduce_channels(a, "abs").tolist() == [[7.0, 3.0]]
    assert reduce_channels(a, "l2").flatten().tolist() == pytest.approx([5.0, 5**0.5])


def test_vargrad_of_a_linear_model_is_zero():
    model = LinearModel(3, 8, 4)
    result = engine.explain(model, _input((3, 8, 8)), "smoothgrad", target=2, params={"variant": "vargrad", "samples": 16, "sigma": 0.5, "batch_size": 5})
    assert np.abs(result.map).max() == 0.0
    mean = engine.explain(model, _input((3, 8, 8)), "smoothgrad", target=2, params={"variant": "smoothgrad", "samples": 16, "reduce": "sum"})
    np.testing.assert_allclose(mean.map, model.weight_image(2).sum(0).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("base", ["saliency", "inputxgrad", "ig"])
def test_smoothgrad_without_noise_is_its_base_method(base):
    model, x = tiny_cnn(seed=3), _input((3, 16, 16), seed=4)
    smooth = engine.explain(model, x, "smoothgrad", target=1, params={"base": base, "samples": 3, "sigma": 0.0, "reduce": "sum", "steps": 5})
    params = {"reduce": "sum", "steps": 5} if base == "ig" else {"reduce": "sum"}
    plain = engine.explain(model, x, base, target=1, params=params)
    np.testing.assert_allclose(smooth.map, plain.map, rtol=1e-4, atol=1e-6)
    squared = engine.explain(model, x, "smoothgrad", target=1, params={"base": base, "samples": 2, "sigma": 0.0, "variant": "smoothgrad_sq", "reduce": "sum", "steps": 5})
    np.testing.assert_allclose(squared.extras["attribution"], smooth.extras["attribution"] ** 2, rtol=1e-4, atol=1e-9)


def test_smoothgrad_does_not_depend_on_the_batch_size():
    model, x = tiny_cnn(seed=3), _input((3, 16, 16), seed=4)
    maps = [engine.explain(model, x, "smoothgrad", params={"samples": 7, "batch_size": b}, seed=11).map for b in (1, 3, 0)]
    np.testing.assert_allclose(maps[0], maps[1], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(maps[0], maps[2], rtol=1e-5, atol=1e-7)


class _SmoothCnn(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(12)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.head = nn.Linear(6 * 10 * 10, 3)

    def forward(self, x):
        return self.head(F.softplus(self.conv(x), beta=2.0).flatten(1))


@pytest.mark.parametrize("variant", ["smoothgrad", "smoothgrad_sq", "vargrad"])
@pytest.mark.parametrize("base", ["saliency", "inputxgrad"])
def test_smoothgrad_converges_to_captum_noise_tunnel(variant, base):
    model, x = _SmoothCnn().eval(), _input((1, 3, 10, 10), seed=13)
    sigma, samples = 0.2, 400
    std = sigma * float(x.max() - x.min())
    ours = engine.explain(model, x[0], "smoothgrad", target=0, params={"base": base, "variant": variant, "samples": samples, "sigma": sigma}, seed=1)
    inner = captum_attr.Saliency(model) if base == "saliency" else captum_attr.InputXGradient(model)
    tunnel = captum_attr.NoiseTunnel(inner)
    torch.manual_seed(0)
    extra = {"abs": False} if base == "saliency" else {}
    theirs = tunnel.attribute(x.clone(), nt_type=variant, nt_samples=samples, nt_samples_batch_size=100, stdevs=std, target=0, **extra)
    # Both are Monte Carlo estimates from different noise; a sample variance converges slowly
    # (relative error about sqrt(2 / samples), 7% here), so vargrad gets a looser bound.
    assert _pearson(ours.extras["attribution"], theirs.detach()) >= (0.9 if variant == "vargrad" else 0.97)
