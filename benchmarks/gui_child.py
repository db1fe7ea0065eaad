"""Measures main-thread stalls of a Qt application while analyses run in gui.jobs.JobManager.

Usage: gui_child.py '{"model": "resnet18", "size": 224, "window": 16, "stride": 16}' (prints JSON).
A QTimer fires every 10 ms on the main thread and records how late each tick is. The main thread
imports no torch: as in the app, the first job imports the engine on its worker thread, so the
first (cold) job includes that import and the second (warm) one is the analysis alone. Even on a
worker, an import stalls the main thread while it holds the interpreter lock (the dynamic loading of
torch's libraries, garbage-collector passes); gui/warmup.py, which every job manager's first job
runs, keeps those stretches short, and the cold figure measures how well.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from PySide6.QtCore import QCoreApplication, QEventLoop, Qt, QTimer  # noqa: E402

from gui.jobs import JobManager  # noqa: E402

INTERVAL_MS = 10


class Ticker:
    """Records the lateness of every tick of a 10 ms timer."""

    def __init__(self) -> None:
        self.timer = QTimer()
        self.timer.setTimerType(Qt.TimerType.PreciseTimer)
        self.timer.setInterval(INTERVAL_MS)
        self.timer.timeout.connect(self._tick)
        self.last = time.perf_counter()
        self.lateness: list[tuple[float, float]] = []

    def _tick(self) -> None:
        now = time.perf_counter()
        self.lateness.append((now, max(0.0, now - self.last - INTERVAL_MS / 1000)))
        self.last = now

    def start(self) -> None:
        self.last = time.perf_counter()
        self.timer.start()

    def between(self, begin: float, end: float) -> list[float]:
        return [late for when, late in self.lateness if begin <= when <= end]


def analysis(spec: dict):
    def run(progress, cancel):
        import torch

        from engine.methods.runner import explain
        from engine.models.architectures import build_architecture

        model = build_architecture(spec["model"], seed=0)
        x = torch.randn(1, 3, spec["size"], spec["size"])
        result = explain(model, x, "local", params={"window": spec["window"], "stride": spec["stride"]}, progress=progress, cancel=cancel)
        return result.extras["windows"]

    return run


def summary(values: list[float]) -> dict:
    values = sorted(values)
    if not values:
        return {"ticks": 0, "max_ms": None, "p99_ms": None, "median_ms": None}
    return {
        "ticks": len(values),
        "max_ms": 1000 * values[-1],
        "p99_ms": 1000 * values[min(len(values) - 1, int(0.99 * len(values)))],
        "median_ms": 1000 * values[len(values) // 2],
    }


def main(spec: dict) -> dict:
    app = QCoreApplication.instance() or QCoreApplication([])
    manager = JobManager()
    ticker = Ticker()
    ticker.start()
    out = {}

    def wait(ms: int) -> None:
        loop = QEventLoop()
        QTimer.singleShot(ms, loop.quit)
        loop.exec()

    begin = time.perf_counter()
    wait(1000)
    out["idle"] = summary(ticker.between(begin, time.perf_counter()))
    for phase in ("cold", "warm"):
        loop = QEventLoop()
        state = {}
        job = manager.submit(analysis(spec), f"benchmark {phase}")
        job.signals.finished.connect(lambda value, state=state, loop=loop: (state.update(result=value), loop.quit()))
        job.signals.failed.connect(lambda message, state=state, loop=loop: (state.update(error=message), loop.quit()))
        begin = time.perf_counter()
        loop.exec()
        end = time.perf_counter()
        if "error" in state:
            raise RuntimeError(state["error"])
        out[phase] = {**summary(ticker.between(begin, end)), "job_s": end - begin, "windows": state.get("result")}
    manager.shutdown()
    del app
    return out


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
