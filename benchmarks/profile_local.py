"""Profile of `local` (occlusion) against Captum's Occlusion and the bare forwards, with torch.profiler.

    .venv/bin/python benchmarks/profile_local.py [--size 224] [--window 32] [--model resnet18]

Prints the share of each run spent in the network's operators against everything else (building
perturbed inputs, accumulating the map), and times two candidate engine changes on the same
batch: channels_last memory format, and the unperturbed image evaluated inside the first batch
instead of in a forward of its own.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from common import build_model, make_input, summarise  # noqa: E402

MODEL_OPS = ("conv", "batch_norm", "relu", "pool", "addmm", "linear", "add_", "mkldnn", "threshold")


def profile(fn) -> tuple[float, float]:
    """(total CPU ms, CPU ms in the network's own operators) of one call."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1000
    model = sum(e.self_cpu_time_total for e in events if any(k in e.key for k in MODEL_OPS)) / 1000
    return total, model


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--window", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from captum.attr import Occlusion

    from engine.methods.runner import explain

    device = torch.device("cpu")
    model = build_model(args.model, device)
    x = make_input(args.size, device)
    with torch.inference_mode():
        target = int(model(x).argmax(1))
    params = {"window": args.window, "stride": args.window, "baseline": "zero"}
    n = explain(model, x, "local", target=target, params=params).extras["windows"]
    batch = x.expand(n, -1, -1, -1).contiguous()
    batch_plus = x.expand(n + 1, -1, -1, -1).contiguous()
    occlusion = Occlusion(model)

    def ours():
        explain(model, x, "local", target=target, params=params)

    def captum():
        with torch.no_grad():
            occlusion.attribute(x, sliding_window_shapes=(3, args.window, args.window), strides=(3, args.window, args.window), baselines=0.0, target=target, perturbations_per_eval=64)

    def forwards():
        with torch.inference_mode():
            model(x)
            model(batch)

    def one_batch():
        with torch.inference_mode():
            model(batch_plus)

    runs = {"sensiscope local": ours, "captum occlusion": captum, "forward b1 + forward bN": forwards, "one forward of N + 1": one_batch}
    for name, fn in runs.items():
        fn()
        total, in_model = profile(fn)
        print(f"{name:28s} profiled CPU {total:8.0f} ms, in network operators {in_model:8.0f} ms ({100 * in_model / total:.0f}%)")
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, fn in runs.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    model_cl = build_model(args.model, device).to(memory_format=torch.channels_last)
    batch_cl = batch.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model_cl(batch_cl)
        cl = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            model_cl(batch_cl)
            cl.append(time.perf_counter() - start)
        plain = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            model(batch)
            plain.append(time.perf_counter() - start)
    times["forward bN, channels_last"] = cl
    times["forward bN, contiguous"] = plain
    print(f"{n} windows, {args.model} at {args.size}")
    for name, values in times.items():
        stats = summarise(values)
        print(f"{name:28s} median {stats['median']:.3f} s (min {stats['min']:.3f}, max {stats['max']:.3f})")


if __name__ == "__main__":
    main()
