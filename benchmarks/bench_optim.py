"""Targets 4 and 6: optimisation steps per second of pertmap and actmax against the raw forward +
backward rate of the same batch, and pertmap's time per step against its batch size.

A method's step rate is read from its progress reports: (steps - 1) / (time of the last step's
report - time of the first step's report), which leaves out the setup (a forward at batch 1, the
optimizer's creation) and the first step. The raw rate is 1 / (time of one forward of the same
batch with the input requiring grad plus the backward of a scalar to the input), measured in the
same rounds.
"""

from __future__ import annotations

import time

import torch
from common import BenchResult, Context, best_ratio, build_model, interleaved, make_input, ratios, summarise

RATE_FACTOR = 0.85


def cases(quick: bool) -> dict:
    if quick:
        return {"model": "resnet18", "size": 112, "pertmap_batch": 16, "pertmap_steps": 3, "actmax_steps": 4, "scaling_size": 64, "scaling_batches": [1, 4, 16], "scaling_steps": 3}
    return {"model": "resnet18", "size": 224, "pertmap_batch": 16, "pertmap_steps": 4, "actmax_steps": 6, "scaling_size": 112, "scaling_batches": [1, 2, 4, 8, 16, 32], "scaling_steps": 3}


class StepClock:
    """A progress callback that timestamps every 'step k/N' report."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, fraction: float, message: str = "") -> None:
        if message.startswith("step "):
            self.times.append(time.perf_counter())

    def seconds_per_step(self) -> float:
        if len(self.times) < 2:
            return float("nan")
        return (self.times[-1] - self.times[0]) / (len(self.times) - 1)


def method_fn(model, x, method: str, params: dict, per_step: list[float]) -> callable:
    from engine.methods.runner import explain

    def run() -> None:
        clock = StepClock()
        explain(model, x, method, target=None, params=params, progress=clock)
        per_step.append(clock.seconds_per_step())

    return run


def raw_fn(model, x, batch: int) -> callable:
    """One forward of ``batch`` copies of x requiring grad and the backward of their summed max logit."""

    def run() -> None:
        inputs = x.expand(batch, -1, -1, -1).clone().requires_grad_(True)
        with torch.enable_grad():
            loss = model(inputs).amax(dim=1).sum()
            torch.autograd.grad(loss, inputs)

    return run


def _compare(ctx: Context, result: BenchResult, model, x, method: str, params: dict, batch: int, label: str) -> None:
    per_step: list[float] = []
    fns = {method: method_fn(model, x, method, params, per_step), "raw": raw_fn(model, x, batch)}
    ctx.log(f"  {label}: interleaved rounds")
    samples = interleaved(fns, ctx)
    step_times = per_step[-len(samples["raw"]) :]  # the warm-up rounds' steps are dropped
    result.figure(f"{label}: {method} time per step", summarise(step_times))
    result.figure(f"{label}: {method} whole run ({params['steps']} steps)", summarise(samples[method]))
    result.figure(f"{label}: raw forward + backward, batch {batch}", summarise(samples["raw"]))
    rate_ratio = summarise(ratios(samples["raw"], step_times))
    result.figure(f"{label}: {method} steps/s", summarise([1.0 / t for t in step_times]), unit="1/s")
    result.figure(f"{label}: raw forward + backward rate", summarise([1.0 / t for t in samples["raw"]]), unit="1/s")
    result.target(f"{label}: {method} step rate / raw forward+backward rate", rate_ratio["median"], RATE_FACTOR, op=">=", spread=rate_ratio, best=best_ratio(samples["raw"], step_times))


def run_optim(ctx: Context) -> BenchResult:
    case = cases(ctx.quick)
    result = BenchResult("optimisation", "Pertmap and actmax step rate against raw forward + backward (target 4)")
    result.config.update({k: v for k, v in case.items() if not k.startswith("scaling")})
    model = build_model(case["model"], ctx.device)
    x = make_input(case["size"], ctx.device)
    batch = case["pertmap_batch"]
    label = f"{case['model']} {case['size']}px"
    _compare(ctx, result, model, x, "pertmap", {"steps": case["pertmap_steps"], "batch_size": batch}, batch, f"{label} pertmap batch {batch}")
    _compare(ctx, result, model, x, "actmax", {"steps": case["actmax_steps"]}, 1, f"{label} actmax batch 1")
    return result


def run_pertmap_scaling(ctx: Context) -> BenchResult:
    from bench_local import linear_fit

    case = cases(ctx.quick)
    result = BenchResult("pertmap_scaling", "Pertmap time per step against batch size (target 6)")
    result.config.update({"model": case["model"], "size": case["scaling_size"], "batch_sizes": case["scaling_batches"], "steps": case["scaling_steps"]})
    model = build_model(case["model"], ctx.device)
    x = make_input(case["scaling_size"], ctx.device)
    per_step = {b: [] for b in case["scaling_batches"]}
    fns = {f"batch {b}": method_fn(model, x, "pertmap", {"steps": case["scaling_steps"], "batch_size": b}, per_step[b]) for b in case["scaling_batches"]}
    ctx.log(f"  pertmap scaling {case['model']} {case['scaling_size']}px: batches {case['scaling_batches']}")
    samples = interleaved(fns, ctx, repeats=max(2, ctx.repeats - 1))
    medians = []
    for b in case["scaling_batches"]:
        stats = summarise(per_step[b][-len(samples[f"batch {b}"]) :])
        medians.append(stats["median"])
        result.figure(f"{case['model']} {case['scaling_size']}px pertmap batch {b}: time per step", stats, per_sample_ms=1000 * stats["median"] / b)
    intercept, slope, r2 = linear_fit(case["scaling_batches"], medians)
    result.figure("fit: seconds per sample per step", slope)
    result.figure("fit: fixed cost per step", intercept)
    result.figure("fit: R^2", r2, unit="")
    result.notes.append("per-sample cost falls with the batch until the CPU's cores are busy, then time per step grows linearly with the batch")
    return result
