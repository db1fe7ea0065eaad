"""Targets 1 and 6: local sensitivity against the forward limit, and its time against the number of windows.

The forward limit of a run is n_forwards x (time of one image's forward at the best batch size),
where n_forwards counts the unperturbed forward too, and the best batch size is the fastest per
image among a few measured in the same rounds as the local runs (interleaved, so that a change of
the machine's load affects both). Forwards run on pre-built batches under ``inference_mode``: the
limit is the cost of the network alone, with nothing for building perturbed inputs.
"""

from __future__ import annotations

import numpy as np
import torch
from common import BenchResult, Context, best_ratio, build_model, interleaved, make_input, ratios, summarise

LIMIT_FACTOR = 1.15


def local_cases(quick: bool) -> list[dict]:
    if quick:
        return [{"model": "resnet18", "size": 112, "window": 28, "stride": 28, "batch_sizes": [1, 4, 16]}]
    return [
        {"model": "resnet18", "size": 224, "window": 32, "stride": 32, "batch_sizes": [1, 8, 16, 49], "also_batch": 16},
        {"model": "vgg16", "size": 224, "window": 56, "stride": 56, "batch_sizes": [1, 4, 16]},
    ]


def forward_fns(model: torch.nn.Module, x: torch.Tensor, batch_sizes: list[int]) -> dict[str, callable]:
    """One callable per batch size: a forward of that many copies of the input, in inference mode."""
    fns = {}
    for size in batch_sizes:
        batch = x.expand(size, -1, -1, -1).contiguous()

        def forward(batch=batch) -> None:
            with torch.inference_mode():
                model(batch)

        fns[f"forward_b{size}"] = forward
    return fns


def explain_fn(model, x, params: dict, record: dict) -> callable:
    from engine.methods.runner import explain

    def run() -> None:
        result = explain(model, x, "local", target=None, params=params)
        record["extras"] = result.extras

    return run


def run_local(ctx: Context) -> BenchResult:
    result = BenchResult("local", "Local sensitivity against the forward limit (target 1)")
    result.config["cases"] = local_cases(ctx.quick)
    result.config["limit"] = "n_forwards x best per-image forward time over the listed batch sizes, measured interleaved with the local runs"
    if ctx.quick:
        result.notes.append("quick mode: resnet18 at 112 x 112 only, window 28 stride 28 (16 windows); the targets are for the full mode")
    else:
        result.notes.append("vgg16 at 224 x 224 uses window 56 stride 56 (16 windows) so that a run stays near ten seconds on a 2-core CPU")
    for case in local_cases(ctx.quick):
        model = build_model(case["model"], ctx.device)
        x = make_input(case["size"], ctx.device)
        label = f"{case['model']} {case['size']}px w{case['window']} s{case['stride']}"
        records = {mode: {} for mode in ("occlusion", "additive")}
        fns = {mode: explain_fn(model, x, {"mode": mode, "window": case["window"], "stride": case["stride"]}, records[mode]) for mode in records}
        if case.get("also_batch"):
            # The engine's default batch (64) against a smaller one that suits a CPU's caches better.
            name = f"occlusion, batch_size {case['also_batch']}"
            records[name] = {}
            fns[name] = explain_fn(model, x, {"mode": "occlusion", "window": case["window"], "stride": case["stride"], "batch_size": case["also_batch"]}, records[name])
        fns.update(forward_fns(model, x, case["batch_sizes"]))
        ctx.log(f"  local {label}: {ctx.warmup} warm-up + {ctx.repeats} interleaved rounds")
        samples = interleaved(fns, ctx)
        rounds = len(samples["occlusion"])
        per_image = {b: [t / b for t in samples[f"forward_b{b}"]] for b in case["batch_sizes"]}
        best = [min(per_image[b][i] for b in case["batch_sizes"]) for i in range(rounds)]
        best_batch = min(case["batch_sizes"], key=lambda b: float(np.median(per_image[b])))
        for b in case["batch_sizes"]:
            result.figure(f"{label}: forward per image, batch {b}", summarise(per_image[b]))
        for mode, record in records.items():
            extras = record["extras"]
            n_forwards = extras["forward_passes"]
            limits = [n_forwards * t for t in best]
            ratio = summarise(ratios(samples[mode], limits))
            result.figure(f"{label}: local {mode} ({extras['windows']} windows, {n_forwards} forwards, batch {extras['batch_size_used']})", summarise(samples[mode]))
            result.figure(f"{label}: forward limit for {mode}", summarise(limits), best_batch=best_batch)
            result.target(f"{label}: local {mode} / forward limit", ratio["median"], LIMIT_FACTOR, spread=ratio, best=best_ratio(samples[mode], limits))
        del model
    return result


def scaling_cases(quick: bool) -> dict:
    if quick:
        return {"model": "resnet18", "size": 64, "window": 16, "strides": [16, 8, 4]}
    return {"model": "resnet18", "size": 112, "window": 16, "strides": [16, 12, 8, 6]}


def linear_fit(x: list[float], y: list[float]) -> tuple[float, float, float]:
    """Least-squares line y = a + b x and its coefficient of determination R^2."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    slope, intercept = np.polyfit(xs, ys, 1)
    predicted = intercept + slope * xs
    total = float(((ys - ys.mean()) ** 2).sum())
    r2 = 1.0 - float(((ys - predicted) ** 2).sum()) / total if total > 0 else 1.0
    return float(intercept), float(slope), r2


def run_local_scaling(ctx: Context) -> BenchResult:
    case = scaling_cases(ctx.quick)
    result = BenchResult("local_scaling", "Local sensitivity time against the number of windows (target 6)")
    result.config.update(case)
    result.notes.append("occlusion mode; the number of windows is varied through the stride at a fixed window")
    model = build_model(case["model"], ctx.device)
    x = make_input(case["size"], ctx.device)
    records = {s: {} for s in case["strides"]}
    fns = {f"stride {s}": explain_fn(model, x, {"window": case["window"], "stride": s}, records[s]) for s in case["strides"]}
    ctx.log(f"  local scaling {case['model']} {case['size']}px: strides {case['strides']}")
    samples = interleaved(fns, ctx)
    windows, medians = [], []
    for stride in case["strides"]:
        stats = summarise(samples[f"stride {stride}"])
        n = records[stride]["extras"]["windows"]
        windows.append(n)
        medians.append(stats["median"])
        result.figure(f"{case['model']} {case['size']}px w{case['window']} s{stride}: {n} windows", stats, per_window_ms=1000 * stats["median"] / n)
    intercept, slope, r2 = linear_fit(windows, medians)
    result.figure("fit: seconds per window", slope)
    result.figure("fit: fixed cost", intercept)
    result.figure("fit: R^2", r2, unit="")
    result.target("time against windows is linear (R^2)", r2, 0.99, op=">=")
    return result
