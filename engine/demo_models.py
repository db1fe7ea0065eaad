"""Sensiscope's own small architectures, built by name like torchvision's."""

from __future__ import annotations

from torch import nn


class SonoCNN(nn.Module):
    """A compact CNN for grayscale ultrasound: four conv blocks (conv-BN-ReLU, max-pool), global
    average pooling and a linear head. About 100 thousand parameters (under 0.5 MB)."""

    def __init__(self, num_classes: int = 3, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        widths = [width, width * 2, width * 4, width * 4]
        layers: list[nn.Module] = []
        channels = in_channels
        for index, out in enumerate(widths):
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
            if index < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.classifier(self.dropout(self.pool(self.features(x)).flatten(1)))


OWN_ARCHITECTURES = {"sonocnn": SonoCNN}
