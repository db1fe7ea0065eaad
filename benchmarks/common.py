"""Shared helpers of the benchmarks: timing with warm-up and repeats, statistics, the machine's
description, models and inputs, peak resident memory of a child process, and the result record."""

from __future__ import annotations

import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
import torch

from engine.runtime.device import cpu_name


@dataclass
class Context:
    """What every benchmark receives: the mode, the device and the repeat counts."""

    quick: bool
    device: torch.device
    repeats: int
    warmup: int = 1
    log: Callable[[str], None] = print


@dataclass
class BenchResult:
    """One benchmark's output: its configuration, figures (timings with spread), targets and notes."""

    name: str
    title: str
    config: dict[str, Any] = field(default_factory=dict)
    figures: list[dict[str, Any]] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None
    elapsed_s: float = 0.0
    load_average: list[float] = field(default_factory=list)

    def figure(self, label: str, stats: dict[str, Any] | float | None, unit: str = "s", **extra: Any) -> None:
        """Record a figure: a stats dict from :func:`summarise`, or a single number."""
        if isinstance(stats, dict):
            row = {"label": label, "unit": unit, **stats}
        else:
            row = {"label": label, "unit": unit, "median": stats}
        row.update(extra)
        self.figures.append(row)

    def target(self, label: str, value: float | None, limit: float, op: str = "<=", note: str = "", spread: dict[str, Any] | None = None, best: float | None = None) -> None:
        """Record a target check; ``op`` is '<=' (value must not exceed limit) or '>='.

        ``best`` is the same ratio taken between the fastest runs of each side: on a shared
        machine the fastest run is the least disturbed one, so it is shown beside the median.
        """
        if value is None:
            met = None
        else:
            met = value <= limit if op == "<=" else value >= limit
        margin = None
        if value is not None and limit:
            # Positive margin: by how much (relative to the limit) the target is missed.
            margin = (value - limit) / limit if op == "<=" else (limit - value) / limit
        row = {"label": label, "value": value, "op": op, "limit": limit, "met": met, "miss_by": margin if met is False else None, "note": note, "best": best}
        if spread:
            row["spread"] = {k: spread[k] for k in ("min", "max", "q1", "q3", "n") if k in spread}
        self.targets.append(row)


def summarise(samples: list[float]) -> dict[str, Any]:
    """Median, min, max and quartiles of a list of measurements."""
    values = sorted(float(v) for v in samples)
    if not values:
        return {"median": None, "min": None, "max": None, "q1": None, "q3": None, "n": 0, "samples": []}
    if len(values) >= 2:
        q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    else:
        q1 = q3 = values[0]
    return {"median": statistics.median(values), "min": values[0], "max": values[-1], "q1": q1, "q3": q3, "n": len(values), "samples": values}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def time_once(fn: Callable[[], Any], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def interleaved(fns: dict[str, Callable[[], Any]], ctx: Context, repeats: int | None = None, warmup: int | None = None) -> dict[str, list[float]]:
    """Time several callables back to back, ``warmup`` untimed rounds then ``repeats`` timed rounds.

    Interleaving (A, B, A, B, ...) rather than (A, A, B, B) makes the ratio of two timings from
    the same round robust to slow drifts of a shared machine's load.
    """
    repeats = ctx.repeats if repeats is None else repeats
    warmup = ctx.warmup if warmup is None else warmup
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(time_once(fn, ctx.device))
    return samples


def ratios(numerator: list[float], denominator: list[float]) -> list[float]:
    """Per-round ratios of two interleaved series."""
    return [a / b for a, b in zip(numerator, denominator, strict=True) if b > 0]


def best_ratio(numerator: list[float], denominator: list[float]) -> float | None:
    """Ratio of the fastest numerator run to the fastest denominator run."""
    return min(numerator) / min(denominator) if numerator and denominator and min(denominator) > 0 else None


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "apple-mps"
    return cpu_name()


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def machine_info(device: torch.device) -> dict[str, Any]:
    return {
        "device": str(device),
        "device_name": device_name(device),
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def build_model(name: str, device: torch.device) -> torch.nn.Module:
    """A randomly initialised torchvision classifier (weights do not change the timings)."""
    from engine.models.architectures import build_architecture

    return build_architecture(name, seed=0).to(device).eval()


def make_input(size: int, device: torch.device, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((1, 3, size, size), generator=generator).to(device)


def read_peak_rss_mb() -> float | None:
    """This process's peak resident set in MiB: psutil's peak working set on Windows (which has no
    getrusage), else getrusage's ru_maxrss (psutil reports no peak on Linux and macOS)."""
    peak = getattr(psutil.Process().memory_info(), "peak_wset", None)
    if peak is not None:
        return peak / 2**20
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # ru_maxrss counts bytes on macOS but KiB on Linux and the BSDs.
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024.0


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 1000 or abs(value) < 1e-3:
            return f"{value:.{digits}g}"
        return f"{value:.{digits}g}" if abs(value) < 1 else f"{value:.{max(digits, 1)}g}"
    return str(value)
