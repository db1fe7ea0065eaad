"""The image Sobol method (``--method sobol``) against the forward limit of its N(D+2) passes.

As for ``local`` (bench_local.py): the limit is N(D+2) x the best per-image forward time over a few
batch sizes, measured interleaved with the Sobol runs; the run itself also does the forward of the
unperturbed image, the mask blending and SALib's analysis with its bootstrap and convergence view,
so the ratio shows what all of that adds to the network's own cost. Also: the forward passes of
the grid sizes and design sizes the README tabulates.
"""

from __future__ import annotations

import numpy as np
from bench_local import LIMIT_FACTOR, forward_fns
from common import BenchResult, Context, best_ratio, build_model, interleaved, make_input, ratios, summarise

GRIDS = (4, 6, 8, 12, 16)
DESIGN_SIZES = (16, 32, 64, 128)


def sobol_cases(quick: bool) -> list[dict]:
    if quick:
        return [{"model": "resnet18", "size": 112, "grid": 4, "n": 16, "batch_sizes": [1, 4, 16]}]
    return [{"model": "resnet18", "size": 224, "grid": 8, "n": 32, "batch_sizes": [1, 8, 16]}]


def cost_table() -> list[dict]:
    """Forward passes N(D+2) for D = g x g, from the method's own cost estimate."""
    from engine.methods.sobol import SobolMapParams, cost

    return [{"grid": g, "n": n, "forward_passes": cost(SobolMapParams(grid=g, n=n), 224, 224).forward} for g in GRIDS for n in DESIGN_SIZES]


def run_sobol_map(ctx: Context) -> BenchResult:
    from engine.methods.runner import explain

    result = BenchResult("sobol_map", "Image Sobol indices against the forward limit of their N(D+2) passes")
    result.config["cases"] = sobol_cases(ctx.quick)
    result.config["limit"] = "N(D+2) x best per-image forward time over the listed batch sizes, measured interleaved with the Sobol runs"
    result.config["cost_table"] = cost_table()
    if ctx.quick:
        result.notes.append("quick mode: resnet18 at 112 x 112, grid 4, N = 16 (288 passes); the target is for the full mode")
    for case in sobol_cases(ctx.quick):
        model = build_model(case["model"], ctx.device)
        x = make_input(case["size"], ctx.device)
        label = f"{case['model']} {case['size']}px grid {case['grid']} N {case['n']}"
        record: dict = {}

        def run(model=model, x=x, record=record, case=case) -> None:
            outcome = explain(model, x, "sobol", target=None, params={"grid": case["grid"], "n": case["n"]})
            record["extras"] = outcome.extras

        fns = {"sobol": run, **forward_fns(model, x, case["batch_sizes"])}
        ctx.log(f"  sobol {label}: {ctx.warmup} warm-up + {ctx.repeats} interleaved rounds")
        samples = interleaved(fns, ctx)
        rounds = len(samples["sobol"])
        per_image = {b: [t / b for t in samples[f"forward_b{b}"]] for b in case["batch_sizes"]}
        best = [min(per_image[b][i] for b in case["batch_sizes"]) for i in range(rounds)]
        best_batch = min(case["batch_sizes"], key=lambda b: float(np.median(per_image[b])))
        for b in case["batch_sizes"]:
            result.figure(f"{label}: forward per image, batch {b}", summarise(per_image[b]))
        extras = record["extras"]
        passes = extras["forward_passes"]
        limits = [passes * t for t in best]
        ratio = summarise(ratios(samples["sobol"], limits))
        result.figure(f"{label}: sobol ({extras['regions']} regions, {passes} forwards, batch {extras['batch_size_used']})", summarise(samples["sobol"]))
        result.figure(f"{label}: forward limit", summarise(limits), best_batch=best_batch)
        result.target(f"{label}: sobol / forward limit", ratio["median"], LIMIT_FACTOR, spread=ratio, best=best_ratio(samples["sobol"], limits))
        del model
    return result
