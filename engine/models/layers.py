"""Finding layers by name, choosing a default layer for class-activation maps, and recording a
layer's activations and gradients during one forward and backward."""

from __future__ import annotations

import difflib

import torch
from torch import nn

from engine.core.errors import UserError

_POOLING = (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout, nn.Dropout2d, nn.Identity, nn.Flatten)


def get_layer(model: nn.Module, name: str) -> nn.Module:
    """The sub-module called ``name`` (dotted path as in ``model.named_modules()``)."""
    modules = dict(model.named_modules())
    if name in modules and name:
        return modules[name]
    close = difflib.get_close_matches(name, [n for n in modules if n], n=4)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UserError(f"the model has no layer '{name}'{hint}; `main.py info --model ...` lists the layers")


def _execution_order(model: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> list[tuple[str, nn.Module, tuple]]:
    fired: list[tuple[str, nn.Module, tuple]] = []
    handles = []
    for name, module in model.named_modules():
        if not name:
            continue

        def hook(mod, _inputs, output, name=name):
            if isinstance(output, torch.Tensor):
                fired.append((name, mod, tuple(output.shape)))

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model(torch.zeros((1, *input_shape), device=device))
    finally:
        for handle in handles:
            handle.remove()
    return fired


def default_cam_layer(model: nn.Module, input_shape: tuple[int, ...]) -> str:
    """The layer Grad-CAM uses when none is named: ``layer4`` for ResNets, the last Conv2d of
    ``features`` for VGG, otherwise the last module (in execution order) whose output is a
    spatial feature map larger than 1 x 1 and which is not a pooling or dropout layer."""
    if isinstance(model, torch.jit.ScriptModule):
        raise UserError("layers of a TorchScript model cannot be hooked; load the architecture with its weights instead")
    modules = dict(model.named_modules())
    if "layer4" in modules and "fc" in modules:
        return "layer4"
    features = modules.get("features")
    plain = isinstance(features, nn.Sequential) and all(next(iter(child.children()), None) is None for child in features)
    if plain and "classifier" in modules:
        convs = [f"features.{n}" for n, m in features.named_children() if isinstance(m, nn.Conv2d)]
        if convs:
            return convs[-1]
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    candidates = [
        name
        for name, module, shape in _execution_order(model, input_shape, device)
        if len(shape) == 4 and shape[2] > 1 and shape[3] > 1 and not isinstance(module, _POOLING)
    ]
    if not candidates:
        raise UserError("no convolutional feature map found in this model; name a layer with --layer")
    return candidates[-1]


class LayerRecorder:
    """Context manager that keeps a layer's output (and, after backward, its gradient).

    The recorded activation stays in the autograd graph, so ``torch.autograd.grad(out, rec.activation)``
    gives the gradient with respect to it without touching parameter gradients.
    """

    def __init__(self, layer: nn.Module) -> None:
        self.layer = layer
        self.activation: torch.Tensor | None = None
        self._handle = None

    def _hook(self, _module, _inputs, output):
        if isinstance(output, (tuple, list)):
            output = output[0]
        if not isinstance(output, torch.Tensor):
            raise UserError(f"layer {type(self.layer).__name__} does not output a tensor")
        self.activation = output

    def __enter__(self) -> LayerRecorder:
        self._handle = self.layer.register_forward_hook(self._hook)
        return self

    def __exit__(self, *exc) -> None:
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
