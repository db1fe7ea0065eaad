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


class RegionModel(nn.Module):
    """A CNN that only sees the rows r0:r1 and columns c0:c1 of its input.

    The input is multiplied by a fixed 0/1 mask; the convolutions have no bias, so every feature
    map is exactly zero outside the region (up to the receptive field at its border). Any honest
    attribution method must put (almost) all of its mass inside the region.
    """

    def __init__(self, size: int = 16, region: tuple[int, int, int, int] = (4, 10, 6, 12), channels: int = 3, classes: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.region = region
        mask = torch.zeros(1, 1, size, size)
        r0, r1, c0, c1 = region
        mask[..., r0:r1, c0:c1] = 1.0
        self.register_buffer("mask", mask)
        self.features = nn.Sequential(nn.Conv2d(channels, 6, 3, padding=1, bias=False), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x * self.mask)).flatten(1))

    def region_mask(self) -> torch.Tensor:
        return self.mask[0, 0].bool()


def region_model(seed: int = 0, **kwargs) -> RegionModel:
    return RegionModel(seed=seed, **kwargs).eval()


class RectangleModel(nn.Module):
    """Two classes whose scores depend only on the rows r0:r1 and columns c0:c1 of the input.

    Class 0's logit is the mean over the rectangle of the squared response of a fixed 3 x 3
    convolution (no bias) of the input cut to the rectangle, so it grows with the texture there,
    and blurring or zeroing pixels inside the rectangle lowers it; class 1's logit is its negative.
    Pixels outside the rectangle never reach the output, so a perturbation map's mass belongs
    inside it. With ``taper`` the energy is weighted by a Hann window over the rectangle, so that
    the pixels near its border matter less than those at its centre: a smooth-mask method (RISE)
    blurs the map by about a mask cell, and a taper keeps that blur inside the rectangle.
    """

    def __init__(self, size: int = 32, region: tuple[int, int, int, int] = (8, 20, 10, 26), channels: int = 3, seed: int = 0, taper: bool = False) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.region = region
        mask = torch.zeros(1, 1, size, size)
        r0, r1, c0, c1 = region
        mask[..., r0:r1, c0:c1] = 1.0
        self.register_buffer("mask", mask)
        self.conv = nn.Conv2d(channels, 4, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=generator))
        weight = mask.clone()
        if taper:
            rows = torch.hann_window(r1 - r0 + 2, periodic=False)[1:-1]
            cols = torch.hann_window(c1 - c0 + 2, periodic=False)[1:-1]
            weight[..., r0:r1, c0:c1] = rows[:, None] * cols[None, :]
        self.register_buffer("weight", weight / weight.sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        energy = (self.conv(x * self.mask) ** 2 * self.weight).sum(dim=(1, 2, 3))
        return torch.stack([energy, -energy], dim=1)

    def region_mask(self) -> torch.Tensor:
        return self.mask[0, 0].bool()


def rectangle_model(seed: int = 0, **kwargs) -> RectangleModel:
    return RectangleModel(seed=seed, **kwargs).eval()
