"""Target 8: GUI responsiveness while a long analysis runs in the job manager (gui/jobs.py).

A child process (gui_child.py, QT_QPA_PLATFORM=offscreen) runs a QTimer every 10 ms on the main
thread and records its lateness while local-sensitivity jobs run on the job manager's device lane;
the longest stall must stay at or under 50 ms.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

from common import BenchResult, Context, summarise

HERE = Path(__file__).resolve().parent
STALL_MS = 50.0


def spec(quick: bool) -> dict:
    if quick:
        return {"model": "resnet18", "size": 112, "window": 8, "stride": 8}
    return {"model": "resnet18", "size": 224, "window": 16, "stride": 16}


def run_gui(ctx: Context) -> BenchResult:
    result = BenchResult("gui", "Main-thread stalls while an analysis runs in the job manager (target 8)")
    if importlib.util.find_spec("gui.jobs") is None or importlib.util.find_spec("PySide6") is None:
        result.skipped = "gui/jobs.py (the job manager) or PySide6 is missing"
        return result
    job = spec(ctx.quick)
    result.config.update(job)
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    runs = []
    for index in range(max(1, ctx.repeats - 1)):
        ctx.log(f"  gui stalls: child process {index + 1}")
        completed = subprocess.run([sys.executable, str(HERE / "gui_child.py"), json.dumps(job)], capture_output=True, text=True, timeout=600, cwd=HERE.parent, env=env)
        if completed.returncode != 0:
            raise RuntimeError(f"gui child failed: {completed.stderr.strip().splitlines()[-1:]}")
        runs.append(json.loads(completed.stdout.strip().splitlines()[-1]))
    for phase, text in (("idle", "idle, no job"), ("cold", "first job (imports torch and the engine on the worker)"), ("warm", "second job (the analysis alone)")):
        result.figure(f"{text}: longest stall", summarise([r[phase]["max_ms"] for r in runs]), unit="ms")
        result.figure(f"{text}: 99th percentile lateness", summarise([r[phase]["p99_ms"] for r in runs]), unit="ms")
        if phase != "idle":
            result.figure(f"{text}: job wall time", summarise([r[phase]["job_s"] for r in runs]))
    warm = summarise([r["warm"]["max_ms"] for r in runs])
    result.target(f"longest main-thread stall during a local job ({runs[0]['warm']['windows']} windows)", warm["median"], STALL_MS, spread=warm)
    cold = summarise([r["cold"]["max_ms"] for r in runs])
    result.target("longest main-thread stall during the first job (engine import on the worker)", cold["median"], STALL_MS, spread=cold)
    result.notes.append("lateness = time between two ticks of a 10 ms QTimer minus 10 ms, on the main thread of a QCoreApplication in a fresh process")
    return result
