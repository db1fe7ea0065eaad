"""Programs written by ``torch.export.save`` (``.pt2`` files) as models.

The program is read with ``torch.export.load`` and rebuilt with ``torch.export.unflatten``, which
restores the original module hierarchy from the graph's ``nn_module_stack``: every sub-module the
exported model called is a module again under its original dotted path (``body.2.conv``,
``layer4.1``), holding its own parameters, and it runs when the model runs. Forward hooks on those
modules fire and gradients flow through them to the input, so every image method - the gradient
methods, guided backpropagation (ReLUs are called through ``torch.relu`` so that its rule reaches
them), the class-activation maps that hook a layer (Grad-CAM, Score-CAM, Ablation-CAM ...), the
perturbation and optimisation methods - gives the same map on a ``.pt2`` as on the original
module, and ``--layer`` takes the original names. A module called more than once (a ResNet
block's shared ReLU) stays one module whose hooks fire on every call, as in the original; only
where torch.export cannot merge the calls' graphs does it become one module per call (``name``,
``name@1``), and a hook on ``name`` then sees the first call.

Batch size. A program exported with static shapes (the default: ``torch.export.export(model,
(x,))``) runs only the batch size of its example input: its graph has that size baked into views
and reshapes, so it must never run another one. The module returned here splits a batch into
slices of the exported size (the last one padded by repeating its last image, whose outputs are
dropped) and concatenates the outputs. When a layer is hooked, the slices run side by side, node by
node ("in lockstep"), and each hooked module is called once on the whole batch (its inputs joined,
its output split again), so a hook sees - and may replace - the layer's output for the whole
batch, as on the original model, and that output stays in the autograd graph (batched Grad-CAM,
Score-CAM's masks). A hook that changes the batch inside such a program (Ablation-CAM's ablated
copies of one input) raises ``BatchChanged``, a RuntimeError on which Ablation-CAM repeats the input
instead, as it does for eager models that cannot broadcast: the same map, computed more slowly.
Slicing costs speed (Score-CAM on a ResNet-18 about five times slower than the original); a
program exported with a dynamic batch (``dynamic_shapes={"x": {0: torch.export.Dim.DYNAMIC}}``)
runs every batch in its range directly, hooks and all, as fast as the original.

What does not carry over, and why:

* The unflattened modules are ``InterpreterModule`` objects, not ``nn.Conv2d``, ``nn.MaxPool2d`` or
  ``nn.LayerNorm``, so what recognises layers by their class cannot. The default Grad-CAM layer is
  found by output shapes alone, without skipping pooling layers: on a VGG-like model it may pick
  the pooled ``features`` where the original picks the last convolution (name the layer with
  ``--layer``). A LayerNorm's output (Swin) is told channels-last by its shape alone, without the
  hint its class gives where the shape is ambiguous. Batch norms are not folded into convolutions
  to speed up gradients, and local sensitivity's incremental engine is not used for a fixed-batch
  program (torch.fx would trace a graph with the batch baked in; its perturbed images run densely,
  with a note): the same maps, only slower.
* The class count is not read from a last ``nn.Linear`` but from the program's output shape
  (``num_classes``), and the input size and channels from its input (``preprocess()``).
* The input size is fixed unless the program was exported with a dynamic height and width.
* A hooked module whose input or output does not have the batch first cannot be hooked on a
  batch the program does not run (a one-line error says so): explain one image at a time, or
  export with a dynamic batch.
* A program exported in training mode (batch norm on batch statistics, dropout on) is refused.

Safety. ``torch.export.load`` unpickles some parts of an archive without ``weights_only``
(tensor subclasses, opaque objects, sample inputs that a ``weights_only`` load refuses, the
pre-2.8 format). The archive is inspected first and such a file is refused unless the user trusts
it (``UntrustedFile``), as a pickled model is; an AOTInductor package (compiled native code) is
refused outright.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.export.unflatten import InterpreterModule, InterpreterModuleDispatcher, UnflattenedModule
from torch.utils import _pytree as pytree

from engine.core.errors import UserError
from engine.io.preprocess import Preprocess
from engine.models.exported_archive import _check_archive, _first_line, _read_program, _Signature, _signature, _training_mode

_ONE_TENSOR = pytree.tree_structure(((0,), {}))


class BatchChanged(RuntimeError):
    """A hook changed the batch size inside the program (Ablation-CAM's copies of one input):
    the graph was traced for the input's batch, so the caller must feed the whole batch instead
    (Ablation-CAM then repeats the input, as it does for models that cannot broadcast a batch)."""


class _Slices:
    """One value per slice of the batch (a leaf for pytree)."""

    __slots__ = ("values",)

    def __init__(self, values) -> None:
        self.values = list(values)


@dataclass(frozen=True)
class _Layout:
    rows: int  # images in the batch
    size: int  # images per slice (the last slice padded)

    @property
    def count(self) -> int:
        return -(-self.rows // self.size)

    def split(self, full: torch.Tensor) -> _Slices:
        if self.size == self.rows:
            return _Slices([full])
        pieces = []
        for start in range(0, self.count * self.size, self.size):
            piece = full[start : start + self.size]
            if piece.shape[0] < self.size:  # repeat the last image; its outputs are dropped
                piece = torch.cat([piece, piece[-1:].expand(self.size - piece.shape[0], *piece.shape[1:])])
            pieces.append(piece)
        return _Slices(pieces)

    def joinable(self, value) -> bool:
        return isinstance(value, _Slices) and all(isinstance(v, torch.Tensor) and v.ndim >= 1 and v.shape[0] == self.size for v in value.values)

    def join(self, value: _Slices, what: str) -> torch.Tensor:
        if not self.joinable(value):
            raise UserError(
                f"{what} does not have the batch as its first dimension, so it cannot be put together for a batch of {self.rows} "
                f"from a program exported for batches of {self.size}; explain one image at a time, or export with a dynamic batch"
            )
        if len(value.values) == 1:
            return value.values[0][: self.rows]
        return torch.cat(value.values)[: self.rows]


def _slice_count(tree) -> int | None:
    counts = {len(leaf.values) for leaf in pytree.tree_leaves(tree) if isinstance(leaf, _Slices)}
    return counts.pop() if counts else None


def _pick(tree, index: int):
    return pytree.tree_map(lambda leaf: leaf.values[index] if isinstance(leaf, _Slices) else leaf, tree)


def _per_slice(function, args, kwargs, count: int) -> _Slices:
    return _Slices(function(*_pick(args, i), **_pick(kwargs, i)) for i in range(count))


def _own_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks)


def _global_hooks() -> bool:
    from torch.nn.modules import module as base

    names = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks", "_global_backward_pre_hooks")
    return any(getattr(base, name, None) for name in names)


def _hooked(root: nn.Module) -> set[int]:
    """The ids of the modules that have hooks or hold one that has."""
    found: set[int] = set()
    everything = _global_hooks()

    def visit(module: nn.Module) -> bool:
        hooked = everything or _own_hooks(module)
        inner = list(module.children())
        if isinstance(module, InterpreterModuleDispatcher):
            inner += [m for call in module.call_modules() for m in (call, *call.children())]
        for child in inner:
            hooked = visit(child) or hooked
        if hooked:
            found.add(id(module))
        return hooked

    visit(root)
    return found


class _Run:
    """One forward of a batch in lockstep slices; hooked modules are called on the whole batch."""

    def __init__(self, layout: _Layout, hooked: set[int], names: dict[int, str]) -> None:
        self.layout, self.hooked, self.names = layout, hooked, names

    def graph(self, module: nn.Module, args, kwargs):
        """Run ``module``'s graph with sliced values, without calling its hooks."""
        if isinstance(module, InterpreterModuleDispatcher):  # one graph per call of a shared module
            call = module._call_modules[module._num_calls]
            module._num_calls = (module._num_calls + 1) % len(module._call_modules)
            return self.graph(call, args, kwargs)
        if isinstance(module, (InterpreterModule, UnflattenedModule)):
            if kwargs:
                args = (*args, *(kwargs[name] for name in module.arg_names[len(args) :] if name in kwargs))
            return _Lockstep(self, module).run(*args, enable_io_processing=False)
        count = _slice_count((args, kwargs)) or 1
        return _per_slice(lambda *a, **k: type(module).forward(module, *a, **k), args, kwargs, count)

    def call(self, module: nn.Module, args, kwargs):
        count = _slice_count((args, kwargs))
        if count is None:
            return module(*args, **kwargs)
        if id(module) not in self.hooked:  # nothing inside is watched: slice by slice
            if not isinstance(module, InterpreterModuleDispatcher):
                return _per_slice(module, args, kwargs, count)
            turn = module._num_calls  # every slice makes the same call of the shared module
            results = []
            for index in range(count):
                module._num_calls = turn
                results.append(module(*_pick(args, index), **_pick(kwargs, index)))
            return _Slices(results)
        if not _own_hooks(module) and not _global_hooks():
            return self.graph(module, args, kwargs)
        return self._whole(module, self.names.get(id(module), type(module).__name__), args, kwargs)

    def _whole(self, module: nn.Module, name: str, args, kwargs):
        """Call a hooked module once on the whole batch: its hooks see the joined inputs and output."""
        layout = self.layout
        leaves, spec = pytree.tree_flatten((args, kwargs))
        sliced = [isinstance(leaf, _Slices) for leaf in leaves]
        joined = [layout.join(leaf, f"an input of layer '{name}'") if flag else leaf for leaf, flag in zip(leaves, sliced, strict=True)]
        out_flags: list[bool] = []

        def resplit(tree, flags, what):
            parts, tree_spec = pytree.tree_flatten(tree)
            if len(flags) != len(parts):  # a hook changed the structure: slice what has the batch first
                flags = [isinstance(p, torch.Tensor) and p.ndim >= 1 and p.shape[0] == layout.rows for p in parts]
            for part, flag in zip(parts, flags, strict=True):
                if flag and not (isinstance(part, torch.Tensor) and part.ndim >= 1 and part.shape[0] == layout.rows):
                    got = tuple(part.shape) if isinstance(part, torch.Tensor) else type(part).__name__
                    raise BatchChanged(f"a hook on layer '{name}' changed {what} for a batch of {layout.rows} to {got}; the exported program cannot follow a batch that changes inside it")
            return pytree.tree_unflatten([layout.split(p) if f else p for p, f in zip(parts, flags, strict=True)], tree_spec)

        def forward(*a, **k):
            out = self.graph(module, *resplit((a, k), sliced, "its input"))
            parts, tree_spec = pytree.tree_flatten(out)
            out_flags.extend(isinstance(p, _Slices) for p in parts)
            return pytree.tree_unflatten([layout.join(p, f"the output of layer '{name}'") if isinstance(p, _Slices) else p for p in parts], tree_spec)

        call_args, call_kwargs = pytree.tree_unflatten(joined, spec)
        module.forward = forward  # for this one call: nn.Module's __call__ runs the hooks around it
        try:
            result = module(*call_args, **call_kwargs)
        finally:
            del module.forward
        return resplit(result, out_flags, "its output")


class _Lockstep(torch.fx.Interpreter):
    """Runs a graph on values that are one per slice: each operation once per slice, sub-modules
    through ``_Run.call`` (so the hooked ones see the whole batch)."""

    def __init__(self, run: _Run, module: nn.Module) -> None:
        super().__init__(module, garbage_collect_values=True, graph=module.graph)
        self.slices = run
        self.extra_traceback = False  # errors keep their one-line message

    def call_function(self, target, args, kwargs):
        count = _slice_count((args, kwargs))
        if count is None:
            return target(*args, **kwargs)
        return _per_slice(target, args, kwargs, count)

    def call_method(self, target, args, kwargs):
        count = _slice_count((args, kwargs))
        method = lambda obj, *a, **k: getattr(obj, target)(*a, **k)  # noqa: E731
        if count is None:
            return method(*args, **kwargs)
        return _per_slice(method, args, kwargs, count)

    def call_module(self, target, args, kwargs):
        return self.slices.call(self.fetch_attr(target), args, kwargs)


# --- the module -----------------------------------------------------------------------------------


def _all_modules(root: nn.Module) -> list[nn.Module]:
    """Every module, with the per-call graphs of shared modules (not children of anything)."""
    modules = list(root.modules())
    return modules + [call for m in modules if isinstance(m, InterpreterModuleDispatcher) for call in m.call_modules()]


class ExportedModule(UnflattenedModule):
    """An unflattened ``torch.export`` program (its original sub-modules under their original
    names) that runs any batch size: see the module's docstring. ``torch.export.unflatten`` builds
    it; ``load_exported`` then gives it this class."""

    _program_path: Path
    _program_signature: _Signature

    def preprocess(self) -> Preprocess:
        """The program's input size (images resized to it, so no border is cut off) and its
        channels; a dynamic size keeps 256 / 224."""
        _, channels, height, width = self._program_signature.shape
        channels = channels if channels in (1, 3) else 3
        stats = {"mean": (0.449,), "std": (0.226,)} if channels == 1 else {}  # ImageNet's, averaged
        if height is None or height != width:
            return Preprocess(channels=channels, **stats)
        return Preprocess(resize=height, crop=height, channels=channels, **stats)

    @property
    def num_classes(self) -> int | None:
        return self._program_signature.classes

    def extra_repr(self) -> str:
        return f"{self._program_path.name}, {self._program_signature.describe()}"

    def _check(self, x: torch.Tensor) -> None:
        signature = self._program_signature
        if x.ndim != 4:
            raise UserError(f"{self._program_path.name} takes N x C x H x W images, got shape {tuple(x.shape)}")
        expected = signature.shape[1:]
        if any(e is not None and e != g for e, g in zip(expected, x.shape[1:], strict=True)):
            want = " x ".join("?" if e is None else str(e) for e in expected)
            raise UserError(
                f"{self._program_path.name} was exported for C x H x W = {want} inputs, got {' x '.join(map(str, x.shape[1:]))}; "
                "preprocess to that size (--resize/--crop) or export with dynamic_shapes"
            )

    def forward(self, *args, **kwargs):
        if torch.fx._symbolic_trace.is_fx_symbolic_tracing():
            if self._program_signature.high is not None:
                raise RuntimeError("a program exported with a fixed batch size runs other batches only in slices, which torch.fx cannot trace")
            return super().forward(*args, **kwargs)
        if kwargs or len(args) != 1 or not isinstance(args[0], torch.Tensor):
            raise UserError(f"{self._program_path.name} takes one image batch (N x C x H x W)")
        x = args[0]
        self._check(x)
        signature = self._program_signature
        if x.dtype != signature.dtype:
            x = x.to(signature.dtype)
        rows = x.shape[0]
        if rows == 0:
            raise UserError("an empty batch has nothing to explain")
        hooked = _hooked(self)
        watched = bool(hooked - {id(self)}) or _global_hooks()  # hooks on the model's own layers
        if signature.runs(rows) and (not watched or signature.high != signature.low):
            return super().forward(x)
        layout = _Layout(rows, rows if signature.runs(rows) else signature.slice_size(rows))
        try:
            if watched:
                # With a fixed batch, even the exported batch goes through the lockstep run, which
                # checks that no hook changes the batch inside a graph with that batch baked in.
                names = {id(m): n for n, m in self.named_modules(remove_duplicate=False)}
                leaves = pytree.tree_leaves(_Lockstep(_Run(layout, hooked, names), self).run(layout.split(x), enable_io_processing=False))
            else:
                outputs = [pytree.tree_flatten(super(ExportedModule, self).forward(piece))[0] for piece in layout.split(x).values]
                leaves = [_Slices(column) for column in zip(*outputs, strict=True)]
            joined = [layout.join(leaf, "the program's output") if isinstance(leaf, _Slices) and isinstance(leaf.values[0], torch.Tensor) else leaf for leaf in leaves]
        except UserError as exc:  # torch.fx may have added the failing node to the message
            exc.args = (_first_line(exc),)
            raise
        joined = [leaf.values[0] if isinstance(leaf, _Slices) else leaf for leaf in joined]
        return pytree.tree_unflatten(joined, self.module_call_graph[0].signature.out_spec)

    def __deepcopy__(self, memo):
        """A copy that shares the graphs' fake example values (shapes only, never changed) instead of
        copying them, which torch warns about."""
        from torch._subclasses.fake_tensor import FakeTensor

        for module in _all_modules(self):
            graph = getattr(module, "graph", None)
            for node in graph.nodes if isinstance(graph, torch.fx.Graph) else ():
                for value in pytree.tree_leaves(dict(node.meta)):
                    if isinstance(value, FakeTensor):
                        memo[id(value)] = value
        clone = self.__class__.__new__(self.__class__)
        memo[id(self)] = clone
        for key, value in self.__dict__.items():
            clone.__dict__[key] = copy.deepcopy(value, memo)
        return clone

    def _apply(self, fn, recurse=True):
        """``.to(device)`` also moves the tensor constants (plain attributes, not buffers) and the
        devices written into the graphs (``torch.arange(..., device=x.device)`` is recorded as the
        device of export)."""
        super()._apply(fn, recurse)
        modules = _all_modules(self)
        for module in modules:
            for key, value in list(vars(module).items()):
                if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter) and key != "graph_module":
                    object.__setattr__(module, key, fn(value))
        device = next((t.device for t in [*self.parameters(), *self.buffers()]), None)
        if device is not None:
            for module in modules:
                graph = getattr(module, "graph", None)
                moved = False
                for node in graph.nodes if isinstance(graph, torch.fx.Graph) else ():
                    if isinstance(node.kwargs.get("device"), torch.device) and node.kwargs["device"] != device:
                        node.update_kwarg("device", device)
                        moved = True
                if moved:
                    _compile(module)
        return self


def _python_relus(root: nn.Module) -> None:
    """Call ReLUs through ``torch.relu`` rather than the ATen operator the graph records: the same
    computation, but visible to torch's function dispatch, where guided backpropagation
    (``engine.methods._gradients.GuidedReLUs``) changes their gradient as it does in the original
    model's ``nn.ReLU`` and ``F.relu``."""
    python = {torch.ops.aten.relu.default: torch.relu, torch.ops.aten.relu_.default: torch.relu_}
    for module in _all_modules(root):
        graph = getattr(module, "graph", None)
        for node in graph.nodes if isinstance(graph, torch.fx.Graph) else ():
            if node.op == "call_function" and node.target in python:
                node.target = python[node.target]


def _compile(module: nn.Module) -> None:
    """Run ``module``'s graph as generated Python code rather than through torch.fx's
    Interpreter (the same operations; a batch-1 ResNet-18 forward takes about half the time)."""
    if isinstance(module, (InterpreterModule, UnflattenedModule)):
        module._run_with_interpreter = False
        module.finalize()


def load_exported(path: Path, *, trust: bool = False) -> tuple[nn.Module, str]:
    """The program in ``path`` as an eval-mode module with its original layer names, and a
    one-line description of the source. Every problem is a one-line UserError."""
    path = Path(path)
    _check_archive(path, trust)
    program = _read_program(path)
    signature = _signature(program, path)
    training = _training_mode(program)
    if training:
        raise UserError(f"{path}: the program was exported in training mode ({training}), so batch statistics and dropout would change every result; call model.eval() before torch.export.export")
    try:
        module = torch.export.unflatten(program)
    except Exception as exc:  # unflatten asserts on programs it cannot rebuild
        raise UserError(f"{path}: the program's module hierarchy could not be rebuilt ({_first_line(exc)})") from None
    module.__class__ = ExportedModule
    _python_relus(module)
    for sub in _all_modules(module):
        _compile(sub)
    module._program_path = path
    module._program_signature = signature
    module.eval()
    return module, f"torch.export program {path.name} ({signature.describe()})"
