"""A faster, exactly equivalent copy of a model for the methods that run it many times.

``fast_model(model, example)`` returns, for a model in eval mode, a traced copy (torch.fx) in which
every batch normalisation that follows a convolution is folded into it (the convolution's weights
scaled by gamma / sqrt(var + eps) and its bias shifted: the same affine map, one pass over the data
fewer), with weights in the channels-last layout that CPU and GPU convolutions prefer; inputs are
then best fed channels-last too (``channels_last``). The copy is cached per model object (weakly,
so it dies with the model) and rebuilt when any parameter or buffer is replaced or changed in place
(their storage pointer and version counter are compared at every call).

The original model itself is returned, unchanged, whenever folding cannot be both exact and
cheap: a model in training mode (batch norm uses the batch's statistics), with hooks, without a
batch norm to fold (VGG: a copy would cost its weights' memory for nothing), TorchScript, a model
torch.fx cannot trace, or a copy whose output on ``example`` differs from the model's by more
than float rounding. The user's model object is never modified.

``first_linear(model)`` splits a traced model whose only use of its input is a zero-padded
convolution into that convolution and the rest: Integrated Gradients uses it to evaluate the first
layer on its straight path by linearity (``engine.methods._gradients.path_gradient``).

The methods reach both through ``engine.accel`` (``fast_copy``, ``first_linear``), which also
holds the switch that turns them off.
"""

from __future__ import annotations

import copy
import weakref
from dataclasses import dataclass

import torch
from torch import nn

_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_SPLITS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_TOLERANCE = 1e-3  # relative to the output's largest magnitude; float32 rounding is ~1e-6


def _signature(model: nn.Module) -> tuple:
    """What identifies the model's current weights: names, storage, version counters, dtypes."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return tuple((name, t.data_ptr(), t._version, t.dtype, t.device.type) for name, t in tensors)


def _has_hooks(model: nn.Module) -> bool:
    for module in model.modules():
        if module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or getattr(module, "_backward_pre_hooks", None):
            return True
    return False


def _foldable(model: nn.Module) -> bool:
    if isinstance(model, torch.jit.ScriptModule) or not isinstance(model, nn.Module):
        return False
    modules = list(model.modules())
    if any(m.training for m in modules) or _has_hooks(model):
        return False
    return any(isinstance(m, _BATCH_NORMS) for m in modules)


def _build(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The folded, channels-last copy, or ``model`` where that is not possible or not equal."""
    from torch.fx.experimental.optimization import fuse

    try:
        folded = fuse(copy.deepcopy(model), inplace=True)
    except Exception:  # anything fx cannot trace runs as it is  # noqa: BLE001
        return model
    folded.eval()
    for parameter in folded.parameters():
        parameter.requires_grad_(False)
    for module in folded.modules():  # the rest after ``first_linear`` may start with a ReLU
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    if example.ndim == 4:
        folded = folded.to(memory_format=torch.channels_last)
    try:
        with torch.inference_mode():
            ours, theirs = folded(channels_last(example)), model(example)
    except Exception:  # noqa: BLE001
        return model
    if not _close(ours, theirs):
        return model
    return folded


def _close(ours, theirs) -> bool:
    if isinstance(theirs, torch.Tensor):
        if not isinstance(ours, torch.Tensor) or ours.shape != theirs.shape:
            return False
        scale = float(theirs.abs().max()) if theirs.numel() else 0.0
        return bool(((ours - theirs).abs().max() <= _TOLERANCE * max(scale, 1e-12)).item()) if theirs.numel() else True
    if isinstance(theirs, (tuple, list)) and isinstance(ours, (tuple, list)) and len(ours) == len(theirs):
        return all(_close(a, b) for a, b in zip(ours, theirs, strict=True))
    if isinstance(theirs, dict) and isinstance(ours, dict) and ours.keys() == theirs.keys():
        return all(_close(ours[k], theirs[k]) for k in theirs)
    return False


def fast_model(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """The model with batch norms folded into convolutions (cached), or the model itself.

    ``example`` (one input batch of the shape the caller will use) checks the copy once per build.
    """
    if not _foldable(model):
        return model
    signature = _signature(model)
    cached = _CACHE.get(model)
    if cached is None or cached[0] != signature:
        fast = _build(model, example.detach())
        # None stands for the model itself: a value must not hold its weak key alive.
        cached = _CACHE[model] = (signature, None if fast is model else fast)
    return model if cached[1] is None else cached[1]


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 4-D batch in the channels-last layout (other ranks unchanged)."""
    return x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x


@dataclass(frozen=True)
class FirstLinear:
    """A model split as ``rest(conv(x))`` with ``conv`` a zero-padded 2-D convolution."""

    conv: nn.Conv2d
    rest: nn.Module

    def bias_free(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution without its bias (the linear part)."""
        c = self.conv
        return torch.nn.functional.conv2d(x, c.weight, None, c.stride, c.padding, c.dilation, c.groups)

    def input_gradient(self, grad: torch.Tensor, input_shape: torch.Size) -> torch.Tensor:
        """W^T grad: the gradient at the input of the convolution given the one at its output."""
        c = self.conv
        weight = c.weight.to(grad.dtype)
        return torch.nn.grad.conv2d_input(input_shape, weight, grad, c.stride, c.padding, c.dilation, c.groups)


def first_linear(fast: nn.Module) -> FirstLinear | None:
    """Split a traced model (a GraphModule from ``fast_model``) at its first layer, when its one
    input feeds only one zero-padded Conv2d with numeric padding; None otherwise (cached)."""
    if not isinstance(fast, torch.fx.GraphModule):
        return None
    if fast not in _SPLITS:
        _SPLITS[fast] = _split(fast)
    return _SPLITS[fast]


def _split(fast: torch.fx.GraphModule) -> FirstLinear | None:
    graph = copy.deepcopy(fast.graph)
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1 or len(inputs[0].users) != 1:
        return None
    (node,) = inputs[0].users
    conv = fast.get_submodule(node.target) if node.op == "call_module" else None
    if not isinstance(conv, nn.Conv2d) or conv.padding_mode != "zeros" or isinstance(conv.padding, str) or node.args != (inputs[0],) or node.kwargs:
        return None
    with graph.inserting_before(inputs[0]):
        features = graph.placeholder("first_layer_output")
    # The callers feed a leaf that requires grad: a copy keeps it out of reach of an in-place
    # operation after the convolution (F.relu(..., inplace=True) in GoogLeNet, Inception-v3).
    with graph.inserting_after(features):
        copied = graph.call_method("clone", (features,))
    node.replace_all_uses_with(copied)
    graph.erase_node(node)
    graph.erase_node(inputs[0])
    graph.lint()
    return FirstLinear(conv, torch.fx.GraphModule(fast, graph))
