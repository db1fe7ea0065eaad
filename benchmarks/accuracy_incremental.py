"""Issue 19: how far the incremental and dense float32 `local` maps lie from the float64 map.

Additive finite differences amplify the rounding of each forward by 1 / delta, so at small deltas
the float32 maps carry visible rounding noise whichever path computes them. This script measures,
for a seeded ResNet-18, the maximum difference of each float32 map (incremental, dense at the
automatic batch, dense one image at a time) from the float64 dense map, in units of that map's
range. It prints a Markdown table (the one in the README's incremental-inference section).

    .venv/bin/python benchmarks/accuracy_incremental.py [--size 224] [--cases 0.1:0,0.1:1,0.5:1]

Each case is delta:central. At 224 px a case takes a few minutes on two cores (the float64 run
dominates).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import engine  # noqa: E402
from engine.models.architectures import build_architecture  # noqa: E402


def measure(size: int, delta: float, central: bool, window: int = 16, stride: int = 8) -> dict[str, float]:
    model = build_architecture("resnet18", seed=0).eval()
    x = torch.randn((1, 3, size, size), generator=torch.Generator().manual_seed(1))
    params = {"mode": "additive", "delta": delta, "central": central, "window": window, "stride": stride}

    def run(net, image, **overrides):
        return engine.explain(net, image, "local", target=3, params={**params, **overrides})

    incremental = run(model, x, engine="incremental")
    if incremental.extras["engine"] != "incremental":
        raise SystemExit(f"the incremental path did not run: {incremental.extras.get('notes')}")
    dense = run(model, x, engine="dense").map
    single = run(model, x, engine="dense", batch_size=1).map
    exact = run(model.double(), x.double(), engine="dense").map
    spread = float(exact.max() - exact.min())

    def gap(a, b):
        return float(np.abs(a - b).max()) / spread

    return {
        "incremental - float64": gap(incremental.map, exact),
        "dense - float64": gap(dense, exact),
        "dense batch 1 - float64": gap(single, exact),
        "incremental - dense": gap(incremental.map, dense),
        "dense batch 1 - dense": gap(single, dense),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--cases", default="0.1:0,0.1:1,0.5:1", help="comma-separated delta:central (central 0 or 1)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    header = None
    for case in args.cases.split(","):
        delta, central = case.split(":")
        row = measure(args.size, float(delta), central == "1")
        if header is None:
            header = list(row)
            print("| additive, delta | " + " | ".join(header) + " |")
            print("|---" * (len(header) + 1) + "|")
        label = f"{float(delta):g}, {'central' if central == '1' else 'one-sided'}"
        print(f"| {label} | " + " | ".join(f"{row[k]:.1e}" for k in header) + " |", flush=True)


if __name__ == "__main__":
    main()
