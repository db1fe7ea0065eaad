"""RISE against the forward limit of its masks.

The forward limit is (masks + 1) x the time of one image's forward at the best batch size among a
few measured in the same interleaved rounds as the RISE runs, on pre-built batches under
``inference_mode``: the cost of the network alone. What RISE adds is building the masks (two small
batched products per batch), multiplying them into the image and accumulating the weighted sum.
"""

from __future__ import annotations

import numpy as np
from bench_local import forward_fns
from common import BenchResult, Context, best_ratio, build_model, interleaved, make_input, ratios, summarise

LIMIT_FACTOR = 1.15


def rise_cases(quick: bool) -> list[dict]:
    if quick:
        return [{"model": "resnet18", "size": 112, "masks": 64, "batch_sizes": [1, 4, 16]}]
    return [{"model": "resnet18", "size": 224, "masks": 256, "batch_sizes": [1, 8, 16, 64]}]


def run_rise(ctx: Context) -> BenchResult:
    from engine.methods.runner import explain

    result = BenchResult("rise", "RISE against the forward limit of its masks")
    result.config["cases"] = rise_cases(ctx.quick)
    result.config["limit"] = "(masks + 1) x best per-image forward time over the listed batch sizes, measured interleaved with the RISE runs"
    for case in rise_cases(ctx.quick):
        model = build_model(case["model"], ctx.device)
        x = make_input(case["size"], ctx.device)
        label = f"{case['model']} {case['size']}px, {case['masks']} masks"
        record: dict = {}

        def run(record=record, model=model, x=x, masks=case["masks"]) -> None:
            record["extras"] = explain(model, x, "rise", target=None, params={"masks": masks}).extras

        fns = {"rise": run, **forward_fns(model, x, case["batch_sizes"])}
        ctx.log(f"  rise {label}: {ctx.warmup} warm-up + {ctx.repeats} interleaved rounds")
        samples = interleaved(fns, ctx)
        rounds = len(samples["rise"])
        per_image = {b: [t / b for t in samples[f"forward_b{b}"]] for b in case["batch_sizes"]}
        best = [min(per_image[b][i] for b in case["batch_sizes"]) for i in range(rounds)]
        best_batch = min(case["batch_sizes"], key=lambda b: float(np.median(per_image[b])))
        n_forwards = record["extras"]["forward_passes"]
        limits = [n_forwards * t for t in best]
        for b in case["batch_sizes"]:
            result.figure(f"{label}: forward per image, batch {b}", summarise(per_image[b]))
        result.figure(f"{label}: rise ({n_forwards} forwards, batch {record['extras']['batch_size_used']})", summarise(samples["rise"]))
        result.figure(f"{label}: forward limit", summarise(limits), best_batch=best_batch)
        ratio = summarise(ratios(samples["rise"], limits))
        result.target(f"{label}: rise / forward limit", ratio["median"], LIMIT_FACTOR, spread=ratio, best=best_ratio(samples["rise"], limits))
        del model
    return result
