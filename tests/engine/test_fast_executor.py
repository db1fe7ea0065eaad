"""The fast executor (engine/accel/_fast.py): batch norms folded into convolutions, exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from engine.accel._fast import channels_last, fast_model, first_linear
from engine.core.progress import CancelToken
from engine.methods._gradients import path_gradient, quadrature


class Residual(nn.Module):
    """conv-BN-ReLU, a residual block with a BN on each branch, pooling and a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(8)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(y + self.bn2(self.conv2(y)))
        return self.fc(torch.flatten(self.pool(y), 1))


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = Residual()
    for bn in (model.bn1, model.bn2):  # statistics far from the identity, so folding matters
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        nn.init.uniform_(bn.weight, 0.5, 1.5)
        nn.init.uniform_(bn.bias, -0.5, 0.5)
    return model.eval()


def _input(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, 12, 12, generator=torch.Generator().manual_seed(1))


def _input_gradient(model, x, target: int = 2) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[:, target].sum(), x)
    return grad


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def test_folded_copy_equals_the_model_outputs_and_input_gradients():
    model, x = _model(), _input()
    fast = fast_model(model, x[:1])
    assert fast is not model
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    with torch.no_grad():
        assert _relative(fast(channels_last(x)), model(x)) < 1e-4
    assert _relative(_input_gradient(fast, channels_last(x)), _input_gradient(model, x)) < 1e-4


def test_users_model_is_not_modified():
    model, x = _model(), _input()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    fast_model(model, x[:1])
    assert [type(m) for m in model.modules()] == types
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model.relu.inplace and all(p.requires_grad for p in model.parameters())
    assert not model.training and not any(m._forward_hooks for m in model.modules())


def test_cached_per_model_and_rebuilt_when_weights_change():
    model, x = _model(), _input()
    fast = fast_model(model, x[:1])
    assert fast_model(model, x[:1]) is fast
    with torch.no_grad():
        model.bn2.running_var.mul_(4.0)  # in place: the version counter moves
    rebuilt = fast_model(model, x[:1])
    assert rebuilt is not fast
    with torch.no_grad():
        assert _relative(rebuilt(x), model(x)) < 1e-4
        assert _relative(fast(x), model(x)) > 1e-3  # the stale copy would have been wrong
    model.conv2 = nn.Conv2d(8, 8, 3, padding=1).eval()  # a replaced module: new parameters
    with torch.no_grad():
        assert _relative(fast_model(model, x[:1])(x), model(x)) < 1e-4


def test_training_mode_hooks_and_nothing_to_fold_return_the_model():
    x = _input()
    training = _model().train()
    assert fast_model(training, x[:1]) is training
    hooked = _model()
    handle = hooked.conv2.register_forward_hook(lambda *_: None)
    assert fast_model(hooked, x[:1]) is hooked
    handle.remove()
    assert fast_model(hooked, x[:1]) is not hooked
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    plain(x)
    assert fast_model(plain.eval(), x[:1]) is plain


class DataDependent(Residual):
    """Control flow on the data: torch.fx cannot trace it."""

    def forward(self, x):
        y = self.bn1(self.conv1(x))
        if float(y.sum()) > 0:
            y = -y
        return self.fc(torch.flatten(self.pool(y), 1))


def test_untraceable_model_falls_back_to_itself():
    torch.manual_seed(0)
    model = DataDependent().eval()
    assert fast_model(model, _input()[:1]) is model


def test_first_linear_split_reproduces_the_model():
    model, x = _model(), _input()
    fast = fast_model(model, x[:1])
    split = first_linear(fast)
    assert split is not None and first_linear(fast) is split
    with torch.no_grad():
        assert _relative(split.rest(split.conv(x)), model(x)) < 1e-4
        bias = split.conv.bias.view(1, -1, 1, 1)
        assert _relative(split.bias_free(x) + bias, split.conv(x)) < 1e-6
    assert first_linear(model) is None  # not traced: no split


@pytest.mark.parametrize("rule", ["gausslegendre", "riemann_trapezoid"])
def test_integrated_gradients_through_the_split_equal_point_by_point(rule):
    """path_gradient (first layer by linearity, folded copy) against the plain loop on the model."""
    model, x = _model(), _input(1)
    baseline = torch.full_like(x, 0.3)
    alphas, weights = quadrature(rule, 7)
    expected = torch.zeros(x.shape[1:], dtype=torch.float64)
    for alpha, weight in zip(alphas.tolist(), weights.tolist(), strict=True):
        expected += weight * _input_gradient(model, baseline + alpha * (x - baseline))[0].double()
    got, used = path_gradient(model, x, baseline, 2, "logit", (alphas, weights), batch_size=3, cancel=CancelToken(), progress=lambda *_a, **_k: None, span=(0.0, 1.0))
    assert used == 3
    assert first_linear(fast_model(model, x)) is not None  # the split path was the one taken
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-4 * float(expected.abs().max()))


class _InplaceAfterFirstConv(nn.Module):
    """GoogLeNet's and Inception-v3's pattern: conv -> batch norm -> F.relu(inplace=True)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        x = nn.functional.relu(self.bn(self.conv(x)), inplace=True)
        return self.fc(x.mean((2, 3)))


def test_integrated_gradients_through_the_split_survive_an_inplace_operation_after_the_first_layer():
    torch.manual_seed(1)
    model = _InplaceAfterFirstConv()
    model.bn.running_mean.uniform_(-0.2, 0.2)
    model.eval()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(2))
    baseline = torch.zeros_like(x)
    alphas, weights = quadrature("gausslegendre", 5)
    expected = torch.zeros(x.shape[1:], dtype=torch.float64)
    for alpha, weight in zip(alphas.tolist(), weights.tolist(), strict=True):
        expected += weight * _input_gradient(model, baseline + alpha * (x - baseline), target=1)[0].double()
    got, _ = path_gradient(model, x, baseline, 1, "logit", (alphas, weights), batch_size=5, cancel=CancelToken(), progress=lambda *_a, **_k: None, span=(0.0, 1.0))
    assert first_linear(fast_model(model, x)) is not None  # the split path was the one taken
    np.testing.assert_allclose(got.numpy(), expected.numpy(), atol=1e-4 * float(expected.abs().max()))
