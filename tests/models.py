"""Small models whose answers are known, shared by the test files."""

from __future__ import annotations

import torch
from torch import nn


class LinearModel(nn.Module):
    """logits = W · flatten(x) + b: every gradient is a row of W, exactly."""

    def __init__(self, channels: int = 3, size: int = 8, classes: int = 4, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.shape = (channels, size, size)
        self.linear = nn.Linear(channels * size * size, classes)
        with torch.no_grad():
            self.linear.weight.copy_(torch.randn(classes, channels * size * size, generator=generator))
            self.linear.bias.copy_(torch.randn(classes, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.flatten(1))

    def weight_image(self, target: int) -> torch.Tensor:
        return self.linear.weight[target].detach().view(self.shape)


class TinyCNN(nn.Module):
    """A few-thousand-parameter CNN for end-to-end tests of loading and the CLI."""

    def __init__(self, channels: int = 3, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


def tiny_cnn(seed: int = 0, channels: int = 3, classes: int = 3) -> TinyCNN:
    torch.manual_seed(seed)
    return TinyCNN(channels, classes).eval()
