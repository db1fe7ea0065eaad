"""engine.accel against the plain path: the fast copy and the incremental executor give the plain
model's outputs on small networks (the check benchmarks/sweep_incremental.py runs on every
architecture), and with acceleration switched off every method takes its plain path."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from torch import nn

import engine
from engine import accel
from engine.accel import _fast, _incremental
from engine.models.architectures import build_architecture


class Branches(nn.Module):
    """Conv-BN-ReLU, a dilated residual branch, a strided max-pool and a channel concatenation."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.dilated = nn.Sequential(nn.Conv2d(8, 8, 3, padding=2, dilation=2), nn.BatchNorm2d(8))
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.side = nn.Conv2d(8, 4, 1)
        self.head = nn.Linear(12, 5)

    def forward(self, x):
        y = self.stem(x)
        y = torch.relu(y + self.dilated(y))
        y = self.pool(y)
        y = torch.cat([y, self.side(y)], 1)
        return self.head(y.mean((2, 3)))


def _branches() -> nn.Module:
    torch.manual_seed(0)
    model = Branches()
    with torch.no_grad():  # statistics far from the identity, so that folding matters
        for bn in (model.stem[1], model.dilated[1]):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    return model.eval()


def _image(size: int, channels: int = 3, seed: int = 1) -> torch.Tensor:
    return torch.randn((1, channels, size, size), generator=torch.Generator().manual_seed(seed))


NETWORKS = [
    # name, builder, input channels and size, window
    ("resnet18", lambda: build_architecture("resnet18", num_classes=10, seed=0), 3, 40, 9),
    ("mobilenet_v3_small", lambda: build_architecture("mobilenet_v3_small", num_classes=10, seed=0), 3, 48, 11),
    ("sonocnn", lambda: build_architecture("sonocnn", seed=0, in_channels=1), 1, 44, 7),
    ("branches", _branches, 3, 24, 5),
]


@pytest.mark.parametrize("name,build,channels,size,window", NETWORKS, ids=[n[0] for n in NETWORKS])
def test_the_fast_copy_and_the_incremental_executor_give_the_plain_outputs(name, build, channels, size, window):
    model, x = build(), _image(size, channels)
    check = accel.verify(model, x, window=window, count=4)
    assert check.folded, name  # every one of them has a batch norm to fold
    assert check.fast_difference < 1e-4, check
    assert check.incremental_unavailable is None, check.incremental_unavailable
    assert check.incremental_difference < 1e-4, check
    assert check.estimated_speedup > 1.0, check


def test_the_switch_follows_the_environment_and_the_context(monkeypatch):
    monkeypatch.delenv("SENSISCOPE_ACCEL", raising=False)
    assert accel.enabled()
    for off in ("0", "false", "OFF", "no"):
        monkeypatch.setenv("SENSISCOPE_ACCEL", off)
        assert not accel.enabled()
    monkeypatch.setenv("SENSISCOPE_ACCEL", "1")
    assert accel.enabled()
    seen = {}
    with accel.disabled():
        assert not accel.enabled()
        other = threading.Thread(target=lambda: seen.setdefault("other thread", accel.enabled()))
        other.start()
        other.join()
    assert accel.enabled() and seen == {"other thread": True}  # one thread's block leaves the others alone


def test_switched_off_every_entry_gives_the_plain_path(monkeypatch):
    model, x = _branches(), _image(24)
    with accel.disabled():
        assert accel.fast_copy(model, x) is model
        assert accel.channels_last(x) is x
        assert accel.first_linear(accel.fast_copy(model, x)) is None
        with pytest.raises(accel.Untraceable, match="switched off"):
            accel.incremental_executor(model, x)
        check = accel.verify(model, x, window=5)
    assert not check.folded and check.fast_difference == 0.0 and "switched off" in check.incremental_unavailable


def _refuse(*_args, **_kwargs):
    raise AssertionError("an accelerated path ran while acceleration was switched off")


# Methods that use engine.accel, with small parameters: the map switched off equals the map switched on.
ACCELERATED = [
    ("ig", {"steps": 8}),
    ("smoothgrad", {"samples": 6}),
    ("scorecam", {"layer": "dilated"}),
    ("rise", {"masks": 40, "grid": 4}),
    ("kernelshap", {"segmentation": "grid", "grid": 3, "samples": 40}),
    ("sobol", {"n": 8, "grid": 2}),
    ("local", {"window": 6, "stride": 5, "engine": "incremental"}),
]


@pytest.mark.parametrize("method,params", ACCELERATED, ids=[m for m, _ in ACCELERATED])
def test_switched_off_the_methods_take_their_plain_path_and_give_the_same_map(method, params, monkeypatch):
    model, x = _branches(), _image(24)
    calls = []
    for name in ("fast_model", "channels_last"):  # switched on, the accelerated path runs
        monkeypatch.setattr(_fast, name, lambda *args, _original=getattr(_fast, name), _name=name: calls.append(_name) or _original(*args))
    accelerated = engine.explain(model, x, method, target=1, params=params)
    assert calls
    monkeypatch.setenv("SENSISCOPE_ACCEL", "0")
    for name in ("fast_model", "first_linear", "channels_last"):
        monkeypatch.setattr(_fast, name, _refuse)
    monkeypatch.setattr(_incremental.IncrementalExecutor, "__init__", _refuse)
    plain = engine.explain(model, x, method, target=1, params=params)
    scale = max(float(np.abs(accelerated.map).max()), 1e-12)
    assert float(np.abs(plain.map - accelerated.map).max()) <= 1e-4 * scale, method
    if method == "local":
        assert accelerated.extras["engine"] == "incremental" and plain.extras["engine"] == "dense"
        assert any("switched off" in note for note in plain.extras["notes"])
