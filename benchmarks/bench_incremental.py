"""Issue 19: local sensitivity with incremental inference against the dense forward limit.

The forward limit is the one of bench_local: n_forwards x the best per-image forward time over a
few batch sizes, measured interleaved with the local runs. The local runs use ``engine=incremental``
(the executor of engine/methods/_incremental.py). The per-layer table times one batch of 16
interior windows node by node, incrementally and densely through the same interpreter, and sums
the nodes from each convolution up to the next one.
"""

from __future__ import annotations

import numpy as np
import torch
from bench_local import explain_fn, forward_fns
from common import BenchResult, Context, best_ratio, build_model, interleaved, make_input, ratios, summarise


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


def _profile_batch(model, x: torch.Tensor, window: int, count: int = 16) -> tuple[dict, dict, dict]:
    """Per-node seconds of one batch of ``count`` occluded interior windows, incremental and dense
    (best of two rounds each), and each node's computed fraction of its map."""
    from engine.methods._incremental import IncrementalExecutor

    size = x.shape[-1]
    executor = IncrementalExecutor(model, x)
    generator = torch.Generator().manual_seed(0)
    origin = torch.randint(window, size - 2 * window, (count, 2), generator=generator)
    batch = x.repeat(count, 1, 1, 1)
    for i, (r, c) in enumerate(origin.tolist()):
        batch[i, :, r : r + window, c : c + window] = 0.0
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
        incremental, dense, fractions = _profile_batch(model, x, case["window"])
        total_inc, total_dense = sum(incremental.values()), sum(dense.values())
        result.figure(f"{label}: one batch of 16 windows, incremental / dense through the same interpreter", total_inc / total_dense, unit="x")
        if case["window"] == 16:
            for layer, inc, den, fraction in _per_layer(model, incremental, dense, fractions):
                result.figure(f"{label}: layer {layer} ({100 * fraction:.0f}% of its map computed)", inc, speedup=float(np.round(den / inc, 2)) if inc > 0 else None, dense_s=den)
        del model
    return result
