"""A model summary: each module's name, type, output shape and parameter count, from one dry forward."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from engine.models.layers import channels_last_hint
from engine.models.tokens import layout_of


@dataclass(frozen=True)
class LayerInfo:
    name: str  # dotted module path, '' for the model itself
    type: str
    output_shape: tuple[int, ...] | None
    parameters: int  # own parameters, not counting children
    depth: int
    is_leaf: bool
    # how a class-activation map reads the output: "7 x 7 map", "channels-last 7 x 7 map",
    # "tokens on a 14 x 14 grid, 1 prefix token dropped"; None when it is no spatial map
    grid: str | None = None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["output_shape"] = list(self.output_shape) if self.output_shape else None
        return data


def _shape_of(output) -> tuple[int, ...] | None:
    if isinstance(output, torch.Tensor):
        return tuple(output.shape)
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return tuple(output[0].shape)
    return None


def summarize(model: nn.Module, input_shape: tuple[int, ...], device: torch.device | str = "cpu") -> list[LayerInfo]:
    """Run one forward on zeros of ``input_shape`` (C x H x W) with hooks and describe every module.

    TorchScript modules do not accept Python hooks; for them only the model's own output is known.
    """
    device = torch.device(device)
    shapes: dict[str, tuple[int, ...]] = {}
    handles = []
    scripted = isinstance(model, torch.jit.ScriptModule)
    if not scripted:
        for name, module in model.named_modules():
            def hook(_module, _inputs, output, name=name):
                shape = _shape_of(output)
                if shape is not None:
                    shapes[name] = shape

            handles.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            output = model(torch.zeros((1, *input_shape), device=device))
        shapes.setdefault("", _shape_of(output) or ())
    finally:
        for handle in handles:
            handle.remove()
    layers = []
    for name, module in model.named_modules():
        own = sum(p.numel() for p in module.parameters(recurse=False))
        is_leaf = next(iter(module.children()), None) is None
        shape = shapes.get(name)
        layout = layout_of(shape, tuple(input_shape[-2:]), channels_last_hint(module), strict=True) if shape and name else None
        grid = layout.describe() if layout is not None and min(layout.grid) > 1 else None
        kind = type(module).__name__ if not scripted else module.original_name
        layers.append(LayerInfo(name, kind, shape, own, name.count(".") + (1 if name else 0), is_leaf, grid))
    return layers


def conv_layers(layers: list[LayerInfo]) -> list[str]:
    """Names of modules whose output is a feature map (N x C x H x W, channels-last, or patch
    tokens on a grid): candidates for Grad-CAM."""
    return [layer.name for layer in layers if layer.name and layer.output_shape and (len(layer.output_shape) == 4 or layer.grid)]
