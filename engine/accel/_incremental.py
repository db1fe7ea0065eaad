"""Incremental inference for window perturbations (after Krypton: Nakandala, Kumar and
Papakonstantinou, "Incremental and Approximate Inference for Faster Occlusion-based Deep CNN
Explanations", SIGMOD 2019).

A perturbed image differs from the unperturbed one only inside its window, so a layer's output
differs only inside the window's projection through the layers before it: a box that grows by the
halo of every sliding-window operation (output o of a kernel k, stride s, padding p, dilation d
reads the inputs o s - p ... o s - p + d (k - 1)). The model is traced with torch.fx, the
unperturbed image is run once keeping every node's output, and a batch of perturbed images then
runs node by node on boxes: convolutions and pooling read their input box with its halo from the
cached map (padding values outside the map) and compute their output box without padding;
batch norm (eval), activations and other elementwise operations work on the box alone; additions,
products and channel concatenations work on the union of their inputs' boxes. The result is pasted
into nothing: a box stays a box until a node that is not understood (global pooling, flatten,
linear, attention, anything unknown) or whose box would cover most of its map (the cost model,
``DENSE_FRACTION``), where the whole perturbed maps are rebuilt and the rest of the network runs
densely on them.
"""

from __future__ import annotations

import copy
import operator
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from engine.accel._regions import Box, crop, materialise, reached, read, sliding_extent, union_extent

# A box covering more than this fraction of its map is computed densely from there on: a box of
# most of the map saves little and pays for the gathers around it. Measured on ResNet-18 at 224 px
# (benchmarks/bench_incremental.py, whole local runs): 0.75 ran 10-15% faster than 0.5 (which
# goes dense from layer3.1 on) and than 0.9-1.0 (box-wise 7 x 7 maps of layer4).
DENSE_FRACTION = 0.75

_INPLACE_FUNCTIONS = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul, operator.itruediv: operator.truediv}

POINTWISE_MODULES = (
    nn.BatchNorm2d, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Softplus, nn.PReLU, nn.Identity,
    nn.Dropout, nn.Dropout2d,
)  # fmt: skip
POINTWISE_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, torch.add, torch.sub, torch.mul,
    torch.div, torch.relu, torch.sigmoid, torch.tanh, torch.clamp, F.relu, F.relu6, F.hardtanh, F.gelu,
    F.silu, F.sigmoid, F.hardswish, F.hardsigmoid, F.leaky_relu, F.elu,
}  # fmt: skip
POINTWISE_METHODS = {"relu", "sigmoid", "tanh", "add", "sub", "mul", "div", "clamp", "contiguous", "neg"}


class Untraceable(Exception):
    """The model cannot run incrementally; the message says why (it goes into the result's notes)."""


class _Same:
    """State of a node whose output equals the unperturbed one."""


SAME = _Same()


@dataclass
class Dense:
    """State of a node computed for the whole perturbed batch."""

    value: object


@dataclass
class Stats:
    """Work of the incremental runs so far: multiply-accumulates of convolutions and linear layers,
    done against what the dense forwards would have done, and optionally each node's time."""

    macs_full: float = 0.0
    macs_done: float = 0.0
    profile: dict | None = None
    nodes: dict = field(default_factory=dict)

    @property
    def estimated_speedup(self) -> float:
        return self.macs_full / self.macs_done if self.macs_done else 1.0


def _without_inplace(model: nn.Module) -> fx.GraphModule:
    """A traced copy of ``model`` with in-place operations made out-of-place, so that every
    node's cached output stays what that node computed."""
    if isinstance(model, torch.jit.ScriptModule):
        raise Untraceable("TorchScript models cannot be traced")
    try:
        traced = _traced_copy(model)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means: run densely
        raise Untraceable(f"torch.fx could not trace the model ({type(exc).__name__}: {str(exc)[:120]})") from None
    order = {node: index for index, node in enumerate(traced.graph.nodes)}
    for node in traced.graph.nodes:
        if _mutates_input(traced, node):
            source = node.args[0] if node.args else None
            if isinstance(source, fx.Node) and any(order[user] > order[node] for user in source.users):
                raise Untraceable(f"the in-place operation {node.name} changes a value that is used again later")
            _make_out_of_place(traced, node)
    for module in traced.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False
    traced.recompile()
    return traced


def _traced_copy(model: nn.Module) -> fx.GraphModule:
    """A traced copy; in eval mode with every batch norm after a convolution folded into it (the
    same affine map, exact up to float rounding: one pass over each box fewer)."""
    copied = copy.deepcopy(model)
    if any(m.training for m in copied.modules()) or not any(isinstance(m, nn.BatchNorm2d) for m in copied.modules()):
        return fx.symbolic_trace(copied)
    from torch.fx.experimental.optimization import fuse

    return fuse(copied, inplace=True)


def _mutates_input(traced: fx.GraphModule, node: fx.Node) -> bool:
    """Whether ``node`` changes its first argument in place."""
    if node.op == "call_module":
        return getattr(traced.get_submodule(node.target), "inplace", False) is True
    if node.op == "call_function" and node.target in _INPLACE_FUNCTIONS:
        return True
    if node.op == "call_method" and node.target.endswith("_") and hasattr(torch.Tensor, node.target[:-1]):
        return True
    return node.kwargs.get("inplace") is True


def _make_out_of_place(traced: fx.GraphModule, node: fx.Node) -> None:
    if node.op == "call_function" and node.target in _INPLACE_FUNCTIONS:
        node.target = _INPLACE_FUNCTIONS[node.target]
    elif node.op == "call_method" and node.target.endswith("_"):
        node.target = node.target[:-1]
    if node.kwargs.get("inplace") is True:
        node.kwargs = {**node.kwargs, "inplace": False}


def _macs(module: nn.Module, output: torch.Tensor) -> float:
    """Multiply-accumulates per image of a convolution or linear layer producing ``output``."""
    per_image = output[0].numel()
    if isinstance(module, nn.Conv2d):
        return per_image * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
    if isinstance(module, nn.Linear):
        return per_image * module.in_features
    return 0.0


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _sliding(module: nn.Module):
    """(kernel, stride, padding, dilation, padding value, function) of a supported sliding-window
    module, or None."""
    if isinstance(module, nn.Conv2d) and module.padding_mode == "zeros" and not isinstance(module.padding, str):

        def conv(region):
            return F.conv2d(region, module.weight, module.bias, module.stride, 0, module.dilation, module.groups)

        return module.kernel_size, module.stride, module.padding, module.dilation, 0.0, conv
    if isinstance(module, nn.MaxPool2d) and not module.return_indices:
        kernel, dilation = _pair(module.kernel_size), _pair(module.dilation)
        stride = _pair(module.stride or module.kernel_size)

        def max_pool(region):
            return F.max_pool2d(region, kernel, stride, 0, dilation)

        return kernel, stride, _pair(module.padding), dilation, float("-inf"), max_pool
    if isinstance(module, nn.AvgPool2d) and not module.ceil_mode and (module.count_include_pad or _pair(module.padding) == (0, 0)):
        kernel, stride = _pair(module.kernel_size), _pair(module.stride or module.kernel_size)

        def avg_pool(region):
            return F.avg_pool2d(region, kernel, stride, 0, False, True, module.divisor_override)

        return kernel, stride, _pair(module.padding), (1, 1), 0.0, avg_pool
    return None


def _kind(gm: fx.GraphModule, node: fx.Node) -> str:
    """How a node runs on boxes: 'sliding', 'pointwise', 'union' or 'dense'."""
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if _sliding(module) is not None:
            return "sliding"
        return "pointwise" if isinstance(module, POINTWISE_MODULES) else "dense"
    if node.op == "call_function":
        if node.target is torch.cat:
            dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
            return "union" if dim in (1, -3) else "dense"
        if node.target is F.batch_norm:
            return "pointwise" if _eval_batch_norm(node) else "dense"
        return "pointwise" if node.target in POINTWISE_FUNCTIONS else "dense"
    if node.op == "call_method":
        return "pointwise" if node.target in POINTWISE_METHODS else "dense"
    return "dense"


def _eval_batch_norm(node: fx.Node) -> bool:
    """F.batch_norm with running statistics (training False): a per-channel affine map, as timm's
    BatchNormAct2d traces. With batch statistics it mixes positions and runs densely."""
    training = node.args[5] if len(node.args) > 5 else node.kwargs.get("training", False)
    return training is False


def _batch_dependent(graph: fx.Graph) -> set:
    """Nodes whose value depends on the input."""
    dependent = set()
    for node in graph.nodes:
        if node.op == "placeholder" or any(n in dependent for n in node.all_input_nodes):
            dependent.add(node)
    return dependent


def _shape_like(value) -> bool:
    """A value that is neither a tensor nor holds one (sizes, shapes, numbers)."""
    if isinstance(value, torch.Tensor):
        return False
    if isinstance(value, (tuple, list)):
        return all(_shape_like(v) for v in value)
    return True


def _broadcast_safe(value) -> bool:
    """A constant operand that broadcasts the same over every position of a map."""
    if not isinstance(value, torch.Tensor):
        return True
    return value.numel() == 1 or (value.dim() >= 2 and tuple(value.shape[-2:]) == (1, 1))


def _meta(value, count: int):
    """A shape-only stand-in for the perturbed batch's version of ``value``."""
    if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == 1:
        return torch.empty((count, *value.shape[1:]), dtype=value.dtype, device="meta")
    return value


class IncrementalExecutor:
    """Runs batches of window perturbations of one image incrementally (module docstring).

    Build it with the model (in eval mode) and the unperturbed 1 x C x H x W input; it raises
    :class:`Untraceable` when the model cannot be traced or has more than one input. ``output`` is
    the traced graph's output on the unperturbed input (callers compare it with the model's).
    """

    def __init__(self, model: nn.Module, x: torch.Tensor) -> None:
        if any(m.training for m in model.modules()):
            raise Untraceable("the model is in training mode (batch statistics); incremental inference needs eval mode")
        self.gm = _without_inplace(model)
        self.nodes = list(self.gm.graph.nodes)
        if sum(node.op == "placeholder" for node in self.nodes) != 1:
            raise Untraceable("the model takes more than one input")
        self.dependent = _batch_dependent(self.gm.graph)
        self.kinds = {node: _kind(self.gm, node) for node in self.nodes}
        self.sliding = {node: _sliding(self.gm.get_submodule(node.target)) for node in self.nodes if self.kinds[node] == "sliding"}
        if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
            # Channels-last weights for channels-last maps: oneDNN then runs every box as it is. Only
            # the convolutions' own weights: code that reshapes a weight itself (a .view() in a
            # traced custom layer) needs the layout it was written for.
            for node in self.sliding:
                module = self.gm.get_submodule(node.target)
                if isinstance(module, nn.Conv2d):
                    module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last)
        self.last_use = {}
        for index, node in enumerate(self.nodes):
            for parent in node.all_input_nodes:
                self.last_use[parent] = index
        try:
            with torch.inference_mode():
                self.cache = self._run_cached(x)
        except Exception as exc:  # noqa: BLE001 - the copy cannot run what the model runs: run densely
            raise Untraceable(f"the traced copy failed on the input ({type(exc).__name__}: {str(exc)[:120]})") from None
        self.output = self.cache[self.nodes[-1]]
        self.macs = {node: _macs(self.gm.get_submodule(node.target), self.cache[node]) for node in self.nodes if node.op == "call_module" and isinstance(self.cache[node], torch.Tensor)}
        self.shape_nodes = {node for node in self.dependent if _shape_like(self.cache[node])}
        self.stats = Stats()

    def _call(self, node: fx.Node, args, kwargs):
        if node.op == "call_module":
            return self.gm.get_submodule(node.target)(*args, **kwargs)
        if node.op == "call_function":
            return node.target(*args, **kwargs)
        if node.op == "call_method":
            return getattr(args[0], node.target)(*args[1:], **kwargs)
        if node.op == "get_attr":
            value = self.gm
            for part in node.target.split("."):
                value = getattr(value, part)
            return value
        raise Untraceable(f"unexpected graph node {node.op}")

    def _run_cached(self, x: torch.Tensor) -> dict:
        cache: dict = {}
        for node in self.nodes:
            if node.op == "placeholder":
                cache[node] = x
            elif node.op == "output":
                cache[node] = fx.node.map_arg(node.args[0], cache.__getitem__)
            else:
                args = fx.node.map_arg(node.args, cache.__getitem__)
                kwargs = fx.node.map_arg(node.kwargs, cache.__getitem__)
                cache[node] = self._call(node, args, kwargs)
        return cache

    def run(self, perturbed: torch.Tensor, origin: torch.Tensor, size: tuple[int, int], profile: dict | None = None):
        """The model's output on ``perturbed`` (N x C x H x W), which differs from the unperturbed
        input only inside the boxes at ``origin`` (N x 2) of ``size`` (h, w), kept inside the image.
        ``profile``, if given, collects each node's seconds under its name."""
        count = perturbed.shape[0]
        origin = origin.to("cpu", torch.long)
        states: dict = {}
        for index, node in enumerate(self.nodes):
            start = time.perf_counter() if profile is not None else 0.0
            if node.op == "output":
                return fx.node.map_arg(node.args[0], lambda a: self._full(a, states, count))
            if node.op == "placeholder":
                states[node] = Box(crop(perturbed, origin, size), origin)
            elif node in self.shape_nodes:
                states[node] = self._shapes(node, states, count)
            elif node not in self.dependent or all(states[a] is SAME for a in node.all_input_nodes if a in self.dependent):
                states[node] = SAME
                self._count(node, count, 0.0)
            else:
                states[node] = self._step(node, states, count)
            for parent in node.all_input_nodes:
                if self.last_use.get(parent) == index:
                    del states[parent]
            if profile is not None:
                profile[node.name] = profile.get(node.name, 0.0) + time.perf_counter() - start
        raise Untraceable("the graph has no output")

    def run_dense(self, perturbed: torch.Tensor, profile: dict | None = None):
        """The model's output on ``perturbed`` computed densely by the same interpreter (for
        per-layer comparisons)."""
        origin = torch.zeros((perturbed.shape[0], 2), dtype=torch.long)
        return self.run(perturbed, origin, tuple(perturbed.shape[-2:]), profile)

    def axis_costs(self, origins: torch.Tensor, length: int, axis: int) -> torch.Tensor:
        """For windows of ``length`` starting at ``origins`` along one axis (0: rows, 1: columns):
        the sum over the convolutions and linear layers of their dense multiply-accumulates times
        the share of that axis their window's own box covers (clipped at the border, not shifted),
        up to the first node that runs densely. Windows near a border have smaller boxes in the
        deep layers; sorting windows by these costs puts like boxes into one batch, whose common
        box size is the largest of its windows'."""
        low, high = origins.to("cpu", torch.long), origins.to("cpu", torch.long) + length - 1
        extent: dict = {}
        total = torch.zeros(len(low), dtype=torch.float64)
        for node in self.nodes:
            if node.op == "placeholder":
                size = self.cache[node].shape[-2 + axis]
                extent[node] = (low.clamp(0, size - 1), high.clamp(0, size - 1))
                continue
            parents = [a for a in node.all_input_nodes if a in extent]
            if not parents or node in self.shape_nodes:
                continue
            kind, value = self.kinds[node], self.cache[node]
            if kind == "dense" or (kind == "sliding" and len(node.all_input_nodes) != 1) or (kind != "sliding" and not self._operands_ok(node)):
                break
            size = value.shape[-2 + axis]
            if kind == "sliding":
                kernel, stride, padding, dilation = (part[axis] for part in self.sliding[node][:4])
                first, last = reached(*extent[parents[0]], kernel, stride, padding, dilation)
            else:
                first = torch.stack([extent[a][0] for a in parents]).min(0).values
                last = torch.stack([extent[a][1] for a in parents]).max(0).values
            extent[node] = (first.clamp(0, size - 1), last.clamp(0, size - 1))
            total += self.macs.get(node, 0.0) * (extent[node][1] - extent[node][0] + 1) / size
        return total

    def _count(self, node: fx.Node, count: int, fraction: float) -> None:
        macs = self.macs.get(node, 0.0) * count
        self.stats.macs_full += macs
        self.stats.macs_done += macs * fraction
        self.stats.nodes[node.name] = fraction

    def _full(self, node: fx.Node, states: dict, count: int):
        """The value of ``node`` for the whole perturbed batch."""
        value = self.cache[node]
        state = states.get(node, SAME) if node in self.dependent else None
        if isinstance(state, Dense):
            return state.value
        if isinstance(state, Box):
            return materialise(value, state)
        if state is SAME and isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == 1:
            return value.expand(count, *value.shape[1:])
        return value

    def _shapes(self, node: fx.Node, states: dict, count: int) -> Dense:
        """Sizes and shapes of the perturbed batch's maps (batch ``count``), from shape-only tensors;
        a size computed from another (``b, c, h, w = x.size()``) takes that one's batch-``count`` value."""

        def value(a):
            if a in self.shape_nodes and isinstance(states.get(a), Dense):
                return states[a].value
            return _meta(self.cache[a], count) if a in self.dependent else self.cache[a]

        try:
            args = fx.node.map_arg(node.args, value)
            kwargs = fx.node.map_arg(node.kwargs, value)
            return Dense(self._call(node, args, kwargs))
        except Exception:  # noqa: BLE001 - an operation without meta support: compute it for real
            return self._dense(node, states, count)

    def _step(self, node: fx.Node, states: dict, count: int):
        kind = self.kinds[node]
        if kind != "dense" and not any(isinstance(states.get(a), Dense) for a in node.all_input_nodes):
            rule = {"sliding": self._sliding, "pointwise": self._pointwise, "union": self._union}[kind]
            state = rule(node, states)
            if state is not None:
                return state
        return self._dense(node, states, count)

    def _dense(self, node: fx.Node, states: dict, count: int) -> Dense:
        args = fx.node.map_arg(node.args, lambda a: self._full(a, states, count))
        kwargs = fx.node.map_arg(node.kwargs, lambda a: self._full(a, states, count))
        self._count(node, count, 1.0)
        return Dense(self._call(node, args, kwargs))

    def _sliding(self, node: fx.Node, states: dict) -> Box | None:
        source = node.args[0] if node.args else None
        box = states.get(source)
        cached_in, cached_out = self.cache.get(source), self.cache[node]
        if len(node.all_input_nodes) != 1 or not isinstance(box, Box) or cached_in.dim() != 4 or node.kwargs:
            return None
        kernel, stride, padding, dilation, fill, function = self.sliding[node]
        height, width = cached_out.shape[-2:]
        low, high = box.bounds()
        first_r, last_r, rows, h, in_rows, in_h = sliding_extent(low[:, 0], high[:, 0], height, kernel[0], stride[0], padding[0], dilation[0])
        first_c, last_c, cols, w, in_cols, in_w = sliding_extent(low[:, 1], high[:, 1], width, kernel[1], stride[1], padding[1], dilation[1])
        fraction = h * w / (height * width)
        if fraction > DENSE_FRACTION:
            return None
        region = read(cached_in, box, torch.stack([in_rows, in_cols], 1), (in_h, in_w), fill)
        self._count(node, box.count, fraction)
        return Box(function(region), torch.stack([rows, cols], 1), torch.stack([first_r, first_c], 1), torch.stack([last_r, last_c], 1))

    def _operands_ok(self, node: fx.Node) -> bool:
        """Every operand either a map of the node's output size, or broadcast over positions."""
        out = self.cache[node]
        if not isinstance(out, torch.Tensor) or out.dim() != 4:
            return False
        per_channel = node.op == "call_function" and node.target is F.batch_norm  # its statistics and affine are C-vectors
        for parent in node.all_input_nodes:
            value = self.cache[parent]
            if parent in self.dependent:
                if not (isinstance(value, torch.Tensor) and value.dim() == 4 and value.shape[-2:] == out.shape[-2:]):
                    return False
            elif not (_broadcast_safe(value) or (per_channel and isinstance(value, torch.Tensor) and value.dim() == 1)):
                return False
        return True

    def _pointwise(self, node: fx.Node, states: dict) -> Box | None:
        parents = [a for a in node.all_input_nodes if a in self.dependent]
        if len(parents) != 1:
            return self._union(node, states)
        box = states[parents[0]]
        if not isinstance(box, Box) or not self._operands_ok(node):
            return None
        args = fx.node.map_arg(node.args, lambda a: box.patch if a is parents[0] else self.cache[a])
        kwargs = fx.node.map_arg(node.kwargs, lambda a: box.patch if a is parents[0] else self.cache[a])
        out = self._call(node, args, kwargs)
        self._count(node, box.count, 0.0)
        return Box(out, box.origin, box.low, box.high) if out.shape[-2:] == box.patch.shape[-2:] else None

    def _union(self, node: fx.Node, states: dict) -> Box | None:
        if not self._operands_ok(node):
            return None
        parents = [a for a in node.all_input_nodes if a in self.dependent]
        boxes = [states[a] for a in parents if isinstance(states[a], Box)]
        height, width = self.cache[node].shape[-2:]
        low, high, origin, size = union_extent(boxes, height, width)
        if size[0] * size[1] > DENSE_FRACTION * height * width:
            return None
        regions = {a: read(self.cache[a], states[a] if isinstance(states[a], Box) else None, origin, size) for a in parents}
        args = fx.node.map_arg(node.args, lambda a: regions[a] if a in regions else self.cache[a])
        kwargs = fx.node.map_arg(node.kwargs, lambda a: regions[a] if a in regions else self.cache[a])
        self._count(node, boxes[0].count, 0.0)
        return Box(self._call(node, args, kwargs), origin, low, high)
