"""Batch sizes from measured cost (issue 27): every perturbation method with the default run
settings (a measured batch size) against the same method with explicit batch sizes, at 32, 112
and 224 px, and a method's first call against a warm one.

    .venv/bin/python benchmarks/bench_batch_sizes.py [--device cpu] [--quick]

Prints the table and writes benchmarks/results/batch-sizes-<device>.md. Models: a SonoCNN
(Sensiscope's small CNN, 3 input channels) at 32 px, resnet18 with random weights at 112 and 224
px. At 112 and 224 px each run has about 64 model evaluations (masks, windows, design rows,
coalitions, channels), so that the whole benchmark stays within about 10 minutes on 2 CPU cores; at
32 px the runs have their usual sizes (a thousand or so evaluations; the channels of the CAMs are
the model's 64).

* first call: a fresh copy of the model (nothing cached for it: no folded copy, no remembered
  batch size) in a warm process (every method has run once, on other models at another input
  size, so imports and first uses of libraries are paid), default settings, timed once;
* warm: the same model after ``WARM_UP`` more default runs (during which the measured size goes
  on growing across runs, see engine/runtime/sizing.py), the median of ``ROUNDS`` runs;
* explicit N: ``--batch-size N`` (the run setting), the median of ``ROUNDS`` runs interleaved with
  the warm ones; sizes above the number of evaluations are left out but the first (one batch of
  all); batch 1 is timed at 32 px only (at 112 and 224 px a batch of one costs 5-10x per image on
  this CPU, never the best, and would take most of the time budget).

Extremal perturbations has no batched loop (each step evaluates its K masks in one batch), so the
run settings do not reach it; it is timed with one explicit size to show that.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(1, str(HERE.parent))

import torch  # noqa: E402
from common import device_name, load_average, make_input, slug, synchronize  # noqa: E402

from engine.methods.runner import explain  # noqa: E402
from engine.models.architectures import build_architecture  # noqa: E402
from engine.runtime.device import select_device  # noqa: E402
from engine.runtime.sizing import forget_batch_sizes  # noqa: E402

WARM_UP = 3
ROUNDS = 2
EXPLICIT = (1, 4, 16, 64, 256)
LIMIT_DEFAULT = 1.25  # default / best explicit
LIMIT_FIRST = 1.3  # first call / warm


def _cases(size: int) -> list[tuple[str, dict]]:
    """(method, params): the usual sizes at 32 px, about 64 evaluations each at 112 and 224 px."""
    if size == 32:
        return [
            ("rise", {"masks": 2000, "grid": 7}),
            ("local", {"window": 2, "stride": 2}),  # 256 windows
            ("sobol", {"grid": 4, "n": 64, "resamples": 10}),  # 64 x (16 + 2) = 1152 design rows
            ("kernelshap", {"segmentation": "grid", "grid": 4, "samples": 1000}),
            ("scorecam", {}),  # the last block: 64 channels
            ("ablationcam", {}),
            ("extremal", {"steps": 20, "areas": "0.05,0.1,0.2,0.4"}),
        ]
    window = size // 8
    return [
        ("rise", {"masks": 64, "grid": 7}),
        ("local", {"window": window, "stride": window}),
        ("sobol", {"grid": 3, "n": 8, "resamples": 10}),  # 8 x (9 + 2) = 88 design rows
        ("kernelshap", {"segmentation": "grid", "grid": 4, "samples": 64}),
        ("scorecam", {"layer": "layer1"}),  # 64 channels
        ("ablationcam", {"layer": "layer1"}),
        ("extremal", {"steps": 8, "areas": "0.05,0.1,0.2,0.4"}),
    ]


def _explicit(size: int, method: str, evaluations: int) -> list[int]:
    """The explicit sizes timed (the module docstring)."""
    if method == "extremal":
        return [16]
    sizes = [b for b in EXPLICIT if b > 1 or size == 32]
    return [b for b in sizes if b < evaluations] + [b for b in sizes if b >= evaluations][:1]


def _model(size: int, device: torch.device) -> torch.nn.Module:
    if size == 32:
        return build_architecture("sonocnn", num_classes=3, seed=0, in_channels=3).to(device).eval()
    return build_architecture("resnet18", seed=0).to(device).eval()


def _warm_up(device: torch.device) -> None:
    """Run every method once on throwaway models at other sizes (48 and 64 px): torch's own start,
    the methods' imports and first uses are nobody's first call; the benchmarked sizes stay cold."""
    for size, other in ((32, 48), (112, 64)):
        for method, params in _cases(size):
            small = {"masks": 32} if method == "rise" else {"steps": 1} if method == "extremal" else {}
            explain(_model(size, device), make_input(other, device)[0], method, params={**params, **small})


def _time(fn, device: torch.device) -> tuple[float, object]:
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def _row(size: int, method: str, params: dict, device: torch.device, quick: bool) -> dict:
    base = _model(size, device)
    x = make_input(size, device)[0]
    model = copy.deepcopy(base)
    forget_batch_sizes()
    first, result = _time(lambda: explain(model, x, method, params=params), device)
    for _ in range(WARM_UP):
        explain(model, x, method, params=params)
    rounds = 1 if quick else ROUNDS
    sizes = _explicit(size, method, result.extras.get("forward_passes") or 0)
    samples: dict[str | int, list[float]] = {"default": []}
    used: list = []
    for _ in range(rounds):  # interleaved: a drift of the machine's load touches every column alike
        seconds, result = _time(lambda: explain(model, x, method, params=params), device)
        samples["default"].append(seconds)
        used.append(result.extras.get("batch_size_used"))
        for batch in sizes:
            seconds, _ = _time(lambda batch=batch: explain(model, x, method, params=params, batch_size=batch), device)
            samples.setdefault(batch, []).append(seconds)
    medians = {key: statistics.median(values) for key, values in samples.items()}
    best = min(sizes, key=lambda b: medians[b])
    return {
        "size": size,
        "model": "sonocnn" if size == 32 else "resnet18",
        "method": method,
        "forwards": result.extras.get("forward_passes"),
        "first": first,
        "warm": medians["default"],
        "used": used[-1],
        "explicit": {b: medians[b] for b in sizes},
        "best": best,
        "default_ratio": medians["default"] / medians[best],
        "first_ratio": first / medians["default"],
    }


def _fmt(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f}"


def _table(rows: list[dict]) -> list[str]:
    head = "| px | model | method | evaluations | first call (s) | warm (s) [batch] | " + " | ".join(f"batch {b} (s)" for b in EXPLICIT)
    lines = [head + " | best explicit | warm / best | first / warm |", "|" + "---|" * (len(EXPLICIT) + 9)]
    for r in rows:
        cells = " | ".join(_fmt(r["explicit"].get(b)) for b in EXPLICIT)
        lines.append(
            f"| {r['size']} | {r['model']} | {r['method']} | {r['forwards']} | {_fmt(r['first'])} | {_fmt(r['warm'])} [{r['used'] or '-'}] | {cells} | "
            f"{r['best']} | {r['default_ratio']:.2f} | {r['first_ratio']:.2f} |"
        )
    return lines


def _write(rows: list[dict], device: torch.device, elapsed: float, load_before: list[float], out: Path) -> Path:
    perturbation = [r for r in rows if r["method"] != "extremal"]
    within = sum(r["default_ratio"] <= LIMIT_DEFAULT for r in perturbation)
    first_ok = sum(r["first_ratio"] <= LIMIT_FIRST for r in rows)
    lines = [
        f"# Batch sizes from measured cost: {device_name(device)} ({device.type})",
        "",
        f"- written {datetime.now(timezone.utc).isoformat(timespec='seconds')}; the run took {elapsed:.0f} s; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads; load average before {load_before}, after {load_average()}",
        "- `benchmarks/bench_batch_sizes.py` (its docstring has the protocol): default run settings (batch size measured) against "
        f"explicit `--batch-size` values; warm = median of {ROUNDS} runs after {WARM_UP} warm-up runs; explicit sizes interleaved with them",
        "- models: SonoCNN (3 channels, width 16) at 32 px, resnet18 with random weights at 112 and 224 px",
        "- settings at 112 and 224 px: rise 64 masks (grid 7); local window = size / 8, stride = window (64 windows, engine auto); "
        "sobol grid 3, N 8 (88 rows); kernelshap a 4 x 4 grid, 64 coalitions; scorecam and ablationcam on resnet18's layer1 "
        "(64 channels); extremal 8 steps of 4 areas (no batched loop: the run settings do not reach it)",
        "- settings at 32 px: rise 2000 masks; local window 2 (256 windows); sobol grid 4, N 64 (1152 rows); kernelshap 4 x 4 grid, "
        "1000 coalitions; scorecam and ablationcam on SonoCNN's last block (64 channels); extremal 20 steps of 4 areas",
        "- batch 1 only at 32 px; sizes above the number of evaluations left out but the first (one batch of all); '-': not timed",
        "",
        f"Targets: warm default within {LIMIT_DEFAULT}x of the best explicit size: {within} of {len(perturbation)} perturbation rows; "
        f"first call within {LIMIT_FIRST}x of a warm one: {first_ok} of {len(rows)} rows.",
        "",
        *_table(rows),
        "",
    ]
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"batch-sizes-{slug(device.type)}.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda or auto")
    parser.add_argument("--quick", action="store_true", help="one timed round, 32 and 112 px only: a smoke test")
    parser.add_argument("--only", nargs="+", default=None, help="only these methods")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    device = select_device(args.device)
    load_before, start, rows = load_average(), time.perf_counter(), []
    _warm_up(device)
    for size in (32, 112) if args.quick else (32, 112, 224):
        for method, params in _cases(size):
            if args.only and method not in args.only:
                continue
            row = _row(size, method, params, device, args.quick)
            rows.append(row)
            print(_table([row])[-1], flush=True)
    path = _write(rows, device, time.perf_counter() - start, load_before, args.out)
    print("\n".join(_table(rows)))
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
