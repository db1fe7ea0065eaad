"""Issue 19: local sensitivity with incremental inference against the dense forward limit.

The forward limit is the one of bench_local: n_forwards x the best per-image forward time over a
few batch sizes, measured interleaved with the local runs. The local runs use ``engine=incremental``
(the executor of engine/accel/_incremental.py). The per-layer table times one batch of 16
interior windows node by node, incrementally and densely through the same interpreter, and sums
the nodes from each convolution up to the next one. ``theoretical_bound`` gives, per layer and in
all, the multiply-accumulates any exact incremental executor must do (each layer's changed box,
averaged over the run's windows) against the dense ones: where it lies above a target, no exact
executor meets that target.
"""

from __future__ import annotations

import numpy as np
import torch
from bench_local import explain_fn, forward_fns
from common import BenchResult, Context, best_ratio, build_model, interleaved, make_input, ratios, summarise, synchronize


def incremental_cases(quick: bool) -> list[dict]:
    if quick:
        return [
            {"model": "resnet18", "size": 112, "window": 16, "stride": 8, "target": 0.35},
            {"model": "resnet18", "size": 112, "window": 32, "stride": 16, "target": 0.6},
            {"model": "vgg16", "size": 112, "window": 16, "stride": 8, "target": 0.35},
        ]
    return [
        {"model": "resnet18", "size": 224, "window": 16, "stride": 8, "target": 0.35},
        {"model": "resnet18", "size": 224, "window": 32, "stride": 16, "target": 0.6},
        {"model": "vgg16", "size": 224, "window": 16, "stride": 8, "target": 0.35},
        {"model": "vgg16", "size": 224, "window": 32, "stride": 16, "target": 0.6},
    ]


def _slide(interval: tuple[int, int], module: torch.nn.Module, length_out: int) -> tuple[int, int]:
    """The outputs of a sliding-window module that read the changed inputs ``interval`` (one axis)."""

    def first(value) -> int:
        return value if isinstance(value, int) else value[0]

    kernel, stride, padding = first(module.kernel_size), first(module.stride), first(module.padding)
    dilation = first(getattr(module, "dilation", 1))
    low = -((-(interval[0] + padding - dilation * (kernel - 1))) // stride)
    return max(low, 0), min((interval[1] + padding) // stride, length_out - 1)


def _intervals(gm, shapes: dict, start: int, window: int, size: int) -> dict:
    """Per node, the changed interval of one spatial axis for a window at ``start`` (None: unchanged,
    "all": a global operation, everything from here on is recomputed)."""
    sliding = (torch.nn.Conv2d, torch.nn.MaxPool2d, torch.nn.AvgPool2d)
    pointwise = (torch.nn.BatchNorm2d, torch.nn.ReLU, torch.nn.ReLU6, torch.nn.Dropout, torch.nn.Identity, torch.nn.SiLU, torch.nn.Hardswish)
    state: dict = {}
    for node in gm.graph.nodes:
        inputs = [state.get(a) for a in node.all_input_nodes]
        module = gm.get_submodule(node.target) if node.op == "call_module" else None
        shape = shapes.get(node.name)
        if node.op == "placeholder":
            state[node] = (start, min(start + window, size) - 1)
        elif "all" in inputs or shape is None or len(shape) != 4:
            state[node] = "all" if any(i is not None for i in inputs) else None
        elif isinstance(module, sliding):
            state[node] = None if inputs[0] is None else _slide(inputs[0], module, shape[-1])
        elif isinstance(module, pointwise) or node.op in ("call_function", "call_method"):
            changed = [i for i in inputs if i is not None]  # elementwise or union of boxes (add, cat)
            state[node] = (min(i[0] for i in changed), max(i[1] for i in changed)) if changed else None
        else:
            state[node] = "all" if any(i is not None for i in inputs) else None
    return state


def theoretical_bound(model, size: int, window: int, stride: int) -> tuple[float, list[tuple[str, float, float]]]:
    """The multiply-accumulates of exact incremental inference over all windows of a run against the
    dense ones: per convolution and linear layer, the mean over windows of the changed box's area
    (the window projected through the layers with every halo) over its map's area. Rows and
    columns are independent, so that mean is the square of the one-axis mean. Returns the overall
    ratio and (layer, dense MACs per image, mean computed fraction) per layer."""
    from torch.fx.passes.shape_prop import ShapeProp

    from engine.methods.local import window_starts

    gm = torch.fx.symbolic_trace(model)
    device = next(model.parameters()).device
    with torch.inference_mode():
        ShapeProp(gm).propagate(torch.zeros(1, 3, size, size, device=device))
    shapes = {n.name: tuple(n.meta["tensor_meta"].shape) for n in gm.graph.nodes if hasattr(n.meta.get("tensor_meta"), "shape")}
    fractions: dict = {}
    starts = window_starts(size, window, stride)
    for start in starts:
        for node, interval in _intervals(gm, shapes, start, window, size).items():
            length = shapes.get(node.name, (0,))[-1]
            share = 1.0 if interval == "all" else 0.0 if interval is None else (interval[1] - interval[0] + 1) / length
            fractions[node.name] = fractions.get(node.name, 0.0) + share / len(starts)
    rows = []
    for node in gm.graph.nodes:
        module = gm.get_submodule(node.target) if node.op == "call_module" else None
        if isinstance(module, torch.nn.Conv2d):
            out = shapes[node.name]
            macs = module.out_channels * module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1] * out[2] * out[3]
            rows.append((node.target, float(macs), fractions[node.name] ** 2))
        elif isinstance(module, torch.nn.Linear):
            rows.append((node.target, float(module.in_features * module.out_features), 1.0))
    total = sum(m for _, m, _ in rows)
    return sum(m * f for _, m, f in rows) / total, rows


def _folded_forward(model, x: torch.Tensor):
    """A forward of 16 copies through the fast executor (batch norms folded, channels-last)."""
    from engine.accel._fast import channels_last, fast_model

    fast, batch = fast_model(model, x), channels_last(x.expand(16, -1, -1, -1).contiguous())

    def forward() -> None:
        with torch.inference_mode():
            fast(batch)

    return forward


def _profile_batch(model, x: torch.Tensor, window: int, count: int = 16) -> tuple[dict, dict, dict]:
    """Per-node seconds of one batch of ``count`` occluded interior windows, incremental and dense
    (best of two rounds each), and each node's computed fraction of its map."""
    from engine.accel._incremental import IncrementalExecutor

    x = x.contiguous(memory_format=torch.channels_last)  # as `local` feeds it
    size = x.shape[-1]
    executor = IncrementalExecutor(model, x)
    generator = torch.Generator().manual_seed(0)
    origin = torch.randint(window, size - 2 * window, (count, 2), generator=generator)
    batch = x.repeat(count, 1, 1, 1)
    for i, (r, c) in enumerate(origin.tolist()):
        batch[i, :, r : r + window, c : c + window] = 0.0
    batch = batch.contiguous(memory_format=torch.channels_last)
    incremental, dense = {}, {}
    with torch.inference_mode():
        for _ in range(2):
            step: dict = {}
            executor.run(batch, origin, (window, window), profile=step)
            incremental = {k: min(v, incremental.get(k, v)) for k, v in step.items()}
            fractions = dict(executor.stats.nodes)
            step = {}
            executor.run_dense(batch, profile=step)
            dense = {k: min(v, dense.get(k, v)) for k, v in step.items()}
    return incremental, dense, fractions


def _per_layer(model, incremental: dict, dense: dict, fractions: dict) -> list[tuple[str, float, float, float]]:
    """(layer, incremental s, dense s, computed fraction of the layer's map) per convolution,
    each with the nodes after it up to the next convolution (batch norm, activation, pooling...)."""
    convs = {name.replace(".", "_") for name, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    rows: list[list] = []
    for name in incremental:
        if name in convs or not rows:
            rows.append([name, 0.0, 0.0, fractions.get(name, 0.0)])
        rows[-1][1] += incremental[name]
        rows[-1][2] += dense.get(name, 0.0)
    return [tuple(row) for row in rows]


def dense_layer_times(model, x: torch.Tensor, count: int = 16, rounds: int = 2) -> dict[str, float]:
    """Seconds of each convolution and linear layer of the plain model (the forward limit's) in a
    forward of ``count`` copies of ``x``, each with the leaf modules that run after it up to the
    next one (batch norm, activation, pooling), best of ``rounds``; timed with module hooks, which
    wait for the device (CUDA, MPS) before reading the clock."""
    import time

    def now() -> float:
        synchronize(x.device)
        return time.perf_counter()

    leaves = [(name, m) for name, m in model.named_modules() if not list(m.children())]
    spans: list[tuple[str, bool, float]] = []
    starts: dict = {}
    hooks = []
    for name, module in leaves:
        heads = isinstance(module, (torch.nn.Conv2d, torch.nn.Linear))
        hooks.append(module.register_forward_pre_hook(lambda m, a, name=name: starts.__setitem__(name, now())))
        hooks.append(module.register_forward_hook(lambda m, a, o, name=name, heads=heads: spans.append((name, heads, now() - starts[name]))))
    batch = x.expand(count, -1, -1, -1).contiguous()
    best: dict[str, float] = {}
    try:
        with torch.inference_mode():
            for _ in range(rounds):
                spans.clear()
                model(batch)
                groups: dict[str, float] = {}
                current = None
                for name, heads, seconds in spans:
                    current = name if heads or current is None else current
                    groups[current] = groups.get(current, 0.0) + seconds
                best = {k: min(v, best.get(k, v)) for k, v in groups.items()}
    finally:
        for hook in hooks:
            hook.remove()
    return best


def time_weighted_bound(times: dict[str, float], layers: list[tuple[str, float, float]]) -> float:
    """``theoretical_bound`` with each layer weighted by its dense time (``dense_layer_times``)
    instead of its multiply-accumulates: layers that are slow per MAC in a dense forward
    (ResNet-18's first convolution on three channels with its pooling) count for more."""
    share = {name: fraction for name, _, fraction in layers}
    total = sum(times.values())
    return sum(seconds * share.get(name, 1.0) for name, seconds in times.items()) / total


def run_local_incremental(ctx: Context) -> BenchResult:
    result = BenchResult("local_incremental", "Local sensitivity with incremental inference against the forward limit (issue 19)")
    result.config["cases"] = incremental_cases(ctx.quick)
    result.config["limit"] = "n_forwards x best per-image forward time over batch sizes 1 and 16, measured interleaved with the local runs"
    result.notes.append("local runs with engine=incremental, mode occlusion, baseline zero, the engine's automatic batch size")
    if ctx.quick:
        result.notes.append("quick mode: 112 x 112 inputs; the targets are stated for 224 x 224 (full mode)")
    for case in incremental_cases(ctx.quick):
        model = build_model(case["model"], ctx.device)
        x = make_input(case["size"], ctx.device)
        label = f"{case['model']} {case['size']}px w{case['window']} s{case['stride']}"
        record: dict = {}
        fns = {"incremental": explain_fn(model, x, {"window": case["window"], "stride": case["stride"], "engine": "incremental"}, record)}
        fns.update(forward_fns(model, x, [1, 16]))
        fns["folded_b16"] = _folded_forward(model, x)
        ctx.log(f"  local incremental {label}: {ctx.warmup} warm-up + {ctx.repeats} interleaved rounds")
        samples = interleaved(fns, ctx)
        best = [min(a, b / 16) for a, b in zip(samples["forward_b1"], samples["forward_b16"], strict=True)]
        extras = record["extras"]
        limits = [extras["forward_passes"] * t for t in best]
        ratio = summarise(ratios(samples["incremental"], limits))
        result.figure(
            f"{label}: local incremental ({extras['windows']} windows, engine {extras['engine']})", summarise(samples["incremental"]), estimated_speedup=extras["incremental_estimated_speedup"]
        )
        result.figure(f"{label}: forward limit", summarise(limits))
        result.target(f"{label}: local incremental / forward limit", ratio["median"], case["target"], spread=ratio, best=best_ratio(samples["incremental"], limits))
        # The incremental executor folds batch norms and runs channels-last: the same tricks on the
        # dense forwards give a lower limit, against which only the incrementality itself counts.
        folded = [extras["forward_passes"] * t / 16 for t in samples["folded_b16"]]
        result.figure(f"{label}: local incremental / folded channels-last forward limit", summarise(ratios(samples["incremental"], folded)), unit="x")
        bound, layers = theoretical_bound(model, case["size"], case["window"], case["stride"])
        result.figure(f"{label}: exact incremental MACs / dense MACs over all windows (a lower bound of the time ratio)", bound, unit="x")
        if case["window"] == 16:
            for layer, macs, fraction in layers:
                result.figure(f"{label}: bound, layer {layer} ({macs / 1e6:.0f} M MACs dense): mean changed fraction of its map", fraction, unit="")
        incremental, dense, fractions = _profile_batch(model, x, case["window"])
        total_inc, total_dense = sum(incremental.values()), sum(dense.values())
        result.figure(f"{label}: the exact bound weighted by each layer's dense time instead of its MACs", time_weighted_bound(dense_layer_times(model, x), layers), unit="x")
        result.figure(f"{label}: one batch of 16 windows, incremental / dense through the same interpreter", total_inc / total_dense, unit="x")
        if case["window"] == 16:
            for layer, inc, den, fraction in _per_layer(model, incremental, dense, fractions):
                result.figure(f"{label}: layer {layer} ({100 * fraction:.0f}% of its map computed)", inc, speedup=float(np.round(den / inc, 2)) if inc > 0 else None, dense_s=den)
        del model
    return result
