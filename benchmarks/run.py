"""Run Sensiscope's benchmarks and write benchmarks/results/<device>-<name>.json and .md.

    .venv/bin/python benchmarks/run.py [--quick] [--only NAME ...] [--device auto|cpu|cuda]

A run with --only merges its benchmarks into the existing file for the same device and mode, so a
single benchmark can be re-run without losing the others. Quick runs go to <...>-quick.json/.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(1, str(HERE.parent))  # the engine, when Sensiscope is not installed

import torch  # noqa: E402
from common import Context, load_average, machine_info, slug  # noqa: E402
from report import render  # noqa: E402

# name -> (module, function); modules are imported only when their benchmark runs.
BENCHMARKS = {
    "local": ("bench_local", "run_local"),
    "rise": ("bench_rise", "run_rise"),
    "sobol_map": ("bench_sobol_map", "run_sobol_map"),
    "captum": ("bench_captum", "run_captum"),
    "gradcam": ("bench_gradcam", "run_gradcam"),
    "ig": ("bench_families", "run_ig"),
    "scorecam": ("bench_families", "run_scorecam"),
    "optim": ("bench_optim", "run_optim"),
    "sobol": ("bench_sobol", "run_sobol"),
    "local_scaling": ("bench_local", "run_local_scaling"),
    "pertmap_scaling": ("bench_optim", "run_pertmap_scaling"),
    "memory": ("bench_memory", "run_memory"),
    "gui": ("bench_gui", "run_gui"),
    "vit_gradcam": ("bench_vit", "run_vit_gradcam"),
    "local_incremental": ("bench_incremental", "run_local_incremental"),
    "batch": ("bench_batch", "run_batch"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes and 2 rounds: a smoke test of a few minutes")
    parser.add_argument("--only", nargs="+", choices=sorted(BENCHMARKS), metavar="NAME", help=f"run only these: {', '.join(BENCHMARKS)}")
    parser.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda or cuda:N")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per figure (default: 2 quick, 3 full)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice, usually the core count)")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="folder for the JSON and Markdown files")
    return parser.parse_args(argv)


def select_device(spec: str) -> torch.device:
    from engine.runtime.device import select_device as engine_select

    return engine_select(spec)


def result_paths(out: Path, device: torch.device, name: str, quick: bool) -> tuple[Path, Path]:
    stem = f"{device.type}-{slug(name)}" + ("-quick" if quick else "")
    return out / f"{stem}.json", out / f"{stem}.md"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def run_one(name: str, ctx: Context) -> dict:
    module_name, function = BENCHMARKS[name]
    load_before = load_average()
    start = time.perf_counter()
    try:
        result = getattr(importlib.import_module(module_name), function)(ctx)
        record = dataclasses.asdict(result)
    except Exception as exc:  # one failing benchmark must not lose the others' results
        ctx.log(f"  {name} failed: {type(exc).__name__}: {exc}")
        record = {"name": name, "title": name, "config": {}, "figures": [], "targets": [], "notes": [], "skipped": f"failed: {type(exc).__name__}: {exc}"}
    record["elapsed_s"] = time.perf_counter() - start
    record["load_before"] = load_before
    record["load_average"] = load_average()
    record["finished"] = now()
    record["key"] = name
    return record


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    repeats = args.repeats or (2 if args.quick else 3)
    ctx = Context(quick=args.quick, device=device, repeats=repeats, warmup=1, log=lambda text: print(text, flush=True))
    machine = machine_info(device)
    names = args.only or list(BENCHMARKS)
    json_path, md_path = result_paths(args.out, device, machine["device_name"], args.quick)
    previous = {}
    if args.only and json_path.is_file():
        previous = {b.get("key", b["name"]): b for b in json.loads(json_path.read_text(encoding="utf-8"))["benchmarks"]}
    print(f"device {device} ({machine['device_name']}), mode {'quick' if args.quick else 'full'}, {repeats} rounds, load average {load_average()}", flush=True)
    start = time.perf_counter()
    for name in names:
        print(f"[{name}]", flush=True)
        previous[name] = run_one(name, ctx)
        print(f"[{name}] {previous[name]['elapsed_s']:.1f} s", flush=True)
    order = [n for n in BENCHMARKS if n in previous]
    benchmarks = [previous[n] for n in order]
    run = {
        "mode": "quick" if args.quick else "full",
        "machine": machine,
        "finished": now(),
        "elapsed_s": sum(b["elapsed_s"] for b in benchmarks),
        "this_invocation_s": time.perf_counter() - start,
        "benchmarks": benchmarks,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(run, indent=1, default=str) + "\n", encoding="utf-8")
    md_path.write_text(render(run) + "\n", encoding="utf-8")
    print(f"wrote {json_path} and {md_path} ({run['this_invocation_s']:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
