"""Target 7: peak resident memory of each method, each in its own process, and local's peak
against its batch size (the engine has no memory budget yet: see the README)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from common import BenchResult, Context

HERE = Path(__file__).resolve().parent


def cases(quick: bool) -> dict:
    if quick:
        return {
            "model": "resnet18",
            "size": 112,
            "methods": {
                "none": {},
                "local": {"window": 28, "stride": 28},
                "pertmap": {"steps": 1, "batch_size": 16},
            },
            "sweep": [{"model": "resnet18", "size": 112, "window": 14, "stride": 14, "batches": [1, 64]}],
        }
    return {
        "model": "vgg16",
        "size": 224,
        "methods": {
            "none": {},
            "saliency": {},
            "gradcam": {},
            "local": {"window": 56, "stride": 56},
            "pertmap": {"steps": 1, "batch_size": 16},
            "actmax": {"steps": 2},
        },
        "sweep": [
            {"model": "resnet18", "size": 224, "window": 28, "stride": 28, "batches": [1, 4, 16, 64]},
            {"model": "vgg16", "size": 224, "window": 56, "stride": 56, "batches": [1, 4, 16]},
        ],
    }


def run_child(spec: dict, timeout: float = 600.0) -> dict:
    """Run memory_child.py in a fresh interpreter and parse the JSON on its last line."""
    completed = subprocess.run([sys.executable, str(HERE / "memory_child.py"), json.dumps(spec)], capture_output=True, text=True, timeout=timeout, cwd=HERE.parent)
    if completed.returncode != 0:
        raise RuntimeError(f"memory child failed ({completed.returncode}): {completed.stderr.strip().splitlines()[-1:]}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def run_memory(ctx: Context) -> BenchResult:
    case = cases(ctx.quick)
    result = BenchResult("memory", "Peak resident memory per method and of local against its batch size (target 7)")
    result.config.update(case)
    result.notes.append(
        "peak RSS is the peak resident set of a fresh process per run (getrusage's ru_maxrss; psutil's peak working set on Windows); "
        "'added by the method' is the peak after the method minus the peak before it (imports, model and input)"
    )
    device = str(ctx.device)
    label = f"{case['model']} {case['size']}px"
    for method, params in case["methods"].items():
        ctx.log(f"  memory {label}: {method}")
        out = run_child({"model": case["model"], "size": case["size"], "method": method, "params": params, "device": device})
        extra = {"peak_before_mb": out["peak_before_mb"], "elapsed_s": out["elapsed_s"], "params": params}
        if "cuda_peak_mb" in out:
            extra["cuda_peak_mb"] = out["cuda_peak_mb"]
        result.figure(f"{label} {method}: peak RSS of the process", out["peak_after_mb"], unit="MiB", **extra)
        result.figure(f"{label} {method}: peak added by the method", out["method_mb"], unit="MiB")

    for sweep in case["sweep"]:
        batches, added = [], []
        for batch in sweep["batches"]:
            sweep_label = f"{sweep['model']} {sweep['size']}px local w{sweep['window']} s{sweep['stride']}"
            ctx.log(f"  memory {sweep_label}: batch_size {batch}")
            params = {"window": sweep["window"], "stride": sweep["stride"], "batch_size": batch}
            out = run_child({"model": sweep["model"], "size": sweep["size"], "method": "local", "params": params, "device": device})
            batches.append(batch)
            added.append(out["method_mb"])
            windows = out["extras"].get("windows")
            result.figure(f"{sweep_label} batch_size {batch}: peak added", out["method_mb"], unit="MiB", peak_rss_mb=out["peak_after_mb"], elapsed_s=out["elapsed_s"], windows=windows)
        if len(batches) >= 2:
            slope, intercept = np.polyfit(batches, added, 1)
            result.figure(f"{sweep['model']} {sweep['size']}px local: MiB per image of batch (fit)", float(slope), unit="MiB")
            result.figure(f"{sweep['model']} {sweep['size']}px local: fixed MiB (fit)", float(intercept), unit="MiB")
    result.notes.append(
        "there is no memory-budget parameter in the engine: the batch is halved only after an out-of-memory error, "
        "which on a CPU rarely comes as an exception (the OS swaps or kills the process); see the README for the change proposed"
    )
    return result
