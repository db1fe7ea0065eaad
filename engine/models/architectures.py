"""Architectures by name: torchvision's classifiers and Sensiscope's own small ones, randomly
initialised with a seed."""

from __future__ import annotations

import difflib
from functools import lru_cache

import torch
import torchvision
from torch import nn

from engine.core.errors import UserError
from engine.core.vocab import MAX_CLASSES


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


@lru_cache(maxsize=1)
def classification_models() -> tuple[str, ...]:
    """Every classification architecture torchvision provides, and Sensiscope's own, by name."""
    return tuple(torchvision.models.list_models(module=torchvision.models)) + tuple(OWN_ARCHITECTURES)


def adapt_input_channels(model: nn.Module, channels: int) -> nn.Module:
    """Replace the first convolution so the model takes ``channels`` input channels (e.g. 1 for
    grayscale ultrasound). Pretrained RGB filters, when present, are summed over their channels."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            if module.in_channels == channels:
                return model
            replacement = nn.Conv2d(channels, module.out_channels, module.kernel_size, module.stride, module.padding, module.dilation, module.groups, module.bias is not None, module.padding_mode)
            with torch.no_grad():
                summed = module.weight.sum(dim=1, keepdim=True)
                replacement.weight.copy_(summed.repeat(1, channels, 1, 1) / channels)
                if module.bias is not None:
                    replacement.bias.copy_(module.bias)
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, replacement)
            return model
    raise UserError("the model has no convolution whose input channels could be changed")


def suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def build_architecture(name: str, num_classes: int | None = None, seed: int = 0, in_channels: int = 3) -> nn.Module:
    """A randomly initialised classifier (torchvision's or Sensiscope's own); the seed makes the
    initialisation repeatable; ``in_channels`` other than 3 replaces the first convolution."""
    if name in OWN_ARCHITECTURES:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return OWN_ARCHITECTURES[name](num_classes=num_classes or 3, in_channels=in_channels).eval()
    if name not in classification_models():
        raise UserError(f"unknown architecture '{name}'{suggest(name, classification_models())}; `main.py info` lists them")
    kwargs = {"weights": None}
    if num_classes is not None:
        if not 1 <= num_classes <= MAX_CLASSES:
            raise UserError(f"the number of classes must be from 1 to {MAX_CLASSES}, not {num_classes}")
        kwargs["num_classes"] = int(num_classes)
    if name in ("googlenet", "inception_v3"):
        kwargs["aux_logits"] = False  # the auxiliary heads only matter for training
        kwargs["init_weights"] = True
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torchvision.models.get_model(name, **kwargs)
        if in_channels != 3:
            adapt_input_channels(model, in_channels)
    return model.eval()
