"""Finding layers by name, choosing a default layer for class-activation maps, and recording a
layer's activations and gradients during one forward and backward."""

from __future__ import annotations

import difflib

import torch
from torch import nn

from engine.core.errors import UserError
from engine.models.tokens import layout_of

# The first norm of a transformer block in timm, torchvision and Hugging Face.
FIRST_NORMS = ("norm1", "ln_1", "layernorm_before")
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
            if isinstance(output, (tuple, list)) and output:
                output = output[0]
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


def channels_last_hint(module: nn.Module) -> bool:
    """A LayerNorm normalises the last axis, so its 4-D output is channels-last (Swin) unless it is
    one of the channels-first variants (timm's and ConvNeXt's LayerNorm2d)."""
    return isinstance(module, nn.LayerNorm) and "2d" not in type(module).__name__.lower()


def _vit_block_norm(fired: list[tuple[str, nn.Module, tuple]]) -> str | None:
    """The first norm of the last transformer block that ran (``norm1`` in timm, ``ln_1`` in
    torchvision, ``layernorm_before`` in Hugging Face): the layer pytorch-grad-cam's tutorial uses for ViT,
    since after the last block only the class token reaches the head and the patch tokens get no gradient."""
    norms = [name for name, _, _ in fired if name.rpartition(".")[2] in FIRST_NORMS]
    return norms[-1] if norms else None


def default_cam_layer(model: nn.Module, input_shape: tuple[int, ...]) -> str:
    """The layer Grad-CAM uses when none is named: ``layer4`` for ResNets, the last Conv2d of
    ``features`` for VGG, the first norm of the last block for vision transformers with a class
    token (ViT, DeiT, BEiT), otherwise the last module (in execution order) whose output is a
    feature map larger than 1 x 1 (channels first or last, as in Swin, or a grid of patch tokens)
    and which is not a pooling or dropout layer."""
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
    fired = _execution_order(model, input_shape, device)
    size = tuple(input_shape[-2:])
    layouts = [(name, module, layout_of(shape, size, channels_last_hint(module), strict=True)) for name, module, shape in fired]
    if any(layout is not None and layout.kind == "tokens" and layout.prefix for _, _, layout in layouts):
        chosen = _vit_block_norm(fired)
        if chosen:
            return chosen
    candidates = [
        name
        for name, module, layout in layouts
        if layout is not None and min(layout.grid) > 1 and not isinstance(module, _POOLING) and type(module).__name__ != "Permute"
    ]
    if not candidates:
        raise UserError("no convolutional feature map or patch-token layer found in this model; name a layer with --layer")
    return candidates[-1]


def resolve_layer(model: nn.Module, name: str, input_shape: tuple[int, ...]) -> tuple[str, nn.Module]:
    """The named layer (or the default one when ``name`` is empty) and its module."""
    if isinstance(model, torch.jit.ScriptModule):
        raise UserError("Grad-CAM needs hooks on a layer, which a TorchScript model cannot have; load the architecture with its weights instead")
    if not getattr(model, "has_gradients", True):
        raise UserError("this model is a graph without layers to hook (ONNX); layer methods need a torch model")
    name = name or default_cam_layer(model, input_shape)
    return name, get_layer(model, name)


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


class UntouchedRecorder(LayerRecorder):
    """A LayerRecorder that hands the rest of the network a copy of the layer's output.

    Without the copy an in-place operation after the layer (VGG's ReLU(inplace=True) right after
    its last Conv2d) would overwrite the recorded activation and re-route its gradient, so the map
    would silently describe the ReLU's output instead of the named layer.
    """

    def _hook(self, module, inputs, output):
        super()._hook(module, inputs, output)
        if isinstance(output, torch.Tensor):
            return output.clone()
        return None
