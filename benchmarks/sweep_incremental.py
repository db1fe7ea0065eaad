"""engine.accel on every architecture at hand: does each speed-up run, and does it give the plain
path's answer? The check tests/engine/test_accel.py makes on four small networks, made on all.

For each torchvision classifier (the largest skipped) and a list of timm models, random init (seed
0), eval mode, 10 classes, on a seeded input:

* ``accel``: ``engine.accel.verify``, the fast copy (batch norms folded) and the incremental
  executor against the plain model on four occluded copies of the input (largest output
  difference over the largest output);
* ``local`` with window = size / 3 and stride = window / 2, with ``engine=dense``, ``incremental``
  and ``auto``, and ``off`` (``incremental`` with acceleration switched off, which must run the
  dense path): the engine each run used, its notes, the estimated speed-up, and the largest
  difference from the dense map in units of the dense map's range.

Inputs are 64 px where the model takes them (96 or 224 otherwise; transformers 224). The first JSON
line records the versions and threads, one line follows per model, and the run ends with the
models whose differences exceed ``--tolerance`` (exit status 1 if any), so two runs on the same
versions can be compared line by line.

    .venv/bin/python benchmarks/sweep_incremental.py --out sweep.jsonl [--only tv|timm] [--tolerance 1e-3] [NAME ...]

About 30 minutes on one core for all 105 models. A model torch.fx cannot trace runs densely with a
note: that is a fallback, not a failure. A map whose range is at float32 rounding (random-init
networks whose last batch norm starts at zero) gives a large relative difference from noise alone:
the line's `spread` says so, and such maps are not held to the tolerance.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import engine  # noqa: E402
from engine import accel  # noqa: E402
from engine.core.versions import versions  # noqa: E402
from engine.models.architectures import build_architecture  # noqa: E402

CHOICES = ("dense", "incremental", "auto", "off")
# A dense map whose range is below this is float32 noise: its relative differences mean nothing.
NOISE_SPREAD = 1e-5

SKIP_TORCHVISION = {
    "vit_h_14", "vit_l_16", "vit_l_32", "regnet_y_128gf", "regnet_y_32gf", "regnet_x_32gf",
    "efficientnet_b7", "efficientnet_b6", "efficientnet_v2_l", "swin_v2_b", "swin_b", "convnext_large",
}  # fmt: skip
TRANSFORMERS = ("vit_", "swin", "maxvit")
TIMM = [
    "convnext_atto", "efficientnet_b0", "tf_efficientnet_b0", "regnety_002", "mobilenetv3_small_050",
    "resnest14d", "rexnet_100", "ghostnet_100", "dla34", "dpn68", "hrnet_w18_small", "cspresnet50",
    "repvgg_a0", "res2net50_14w_8s", "selecsls42b", "tresnet_m", "vgg11_bn", "densenet121", "inception_v3",
    "xception41", "levit_128s", "coat_lite_tiny", "mobilevit_xxs", "edgenext_xx_small", "poolformer_s12",
    "lcnet_050", "mixnet_s", "resnet18d", "seresnext26d_32x4d", "cspdarknet53", "vovnet39a", "nfnet_l0",
    "regnetz_b16", "fbnetc_100", "efficientvit_b0", "fastvit_t8", "mobileone_s0",
]  # fmt: skip


def build(source: str, name: str) -> torch.nn.Module:
    if source == "tv":
        return build_architecture(name, num_classes=10, seed=0).eval()
    import timm

    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=10).eval()


def input_size(model: torch.nn.Module, name: str) -> int | None:
    for size in (224,) if name.startswith(TRANSFORMERS) else (64, 96, 224):
        try:
            with torch.inference_mode():
                model(torch.zeros(1, 3, size, size))
            return size
        except Exception:  # noqa: BLE001 - too small for this network: try the next size
            continue
    return None


def sweep_one(source: str, name: str) -> dict:
    record: dict = {"source": source, "name": name}
    model = build(source, name)
    size = input_size(model, name)
    if size is None:
        return {**record, "error": "no input size of 64, 96 or 224 runs"}
    window = size // 3
    params = {"window": window, "stride": max(1, window // 2)}
    x = torch.randn((1, 3, size, size), generator=torch.Generator().manual_seed(1))
    record.update(size=size, **params)
    try:
        record["accel"] = accel.verify(model, x, window=window).to_dict()
    except Exception as exc:  # noqa: BLE001 - what the sweep looks for
        record["accel"] = {"error": _error(exc)}
    maps = {}
    for choice in CHOICES:
        start = time.perf_counter()
        try:
            result = _local(model, x, params, choice)
        except Exception as exc:  # noqa: BLE001 - what the sweep looks for
            record[choice] = {"error": _error(exc)}
            continue
        maps[choice] = result.map
        record[choice] = {
            "seconds": round(time.perf_counter() - start, 2),
            "engine": result.extras.get("engine"),
            "estimated_speedup": result.extras.get("incremental_estimated_speedup"),
            "notes": result.extras.get("notes") or [],
        }
    if "dense" in maps:
        spread = float(maps["dense"].max() - maps["dense"].min())
        record["spread"] = spread
        for choice in CHOICES[1:]:
            if choice in maps and spread > 0:
                record[choice]["difference"] = float(np.abs(maps[choice] - maps["dense"]).max()) / spread
    return record


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"


def _local(model: torch.nn.Module, x: torch.Tensor, params: dict, choice: str):
    if choice == "off":
        with accel.disabled():
            return engine.explain(model, x, "local", target=0, params={**params, "engine": "incremental"})
    return engine.explain(model, x, "local", target=0, params={**params, "engine": choice})


def problems(record: dict, tolerance: float) -> list[str]:
    """What in a model's line is wrong: an error, a difference above ``tolerance``, or a run with
    acceleration off that did not take the dense path. Fallbacks with a note are not problems."""
    found = [f"{key}: {value['error']}" for key, value in record.items() if isinstance(value, dict) and "error" in value]
    check = record.get("accel", {})
    for key in ("fast_difference", "incremental_difference"):
        if (check.get(key) or 0.0) > tolerance:
            found.append(f"accel {key} {check[key]:.2e}")
    if record.get("spread", 0.0) > NOISE_SPREAD:
        for choice in CHOICES[1:]:
            difference = record.get(choice, {}).get("difference")
            if difference is not None and difference > tolerance:
                found.append(f"local {choice} differs from dense by {difference:.2e} of the map's range")
    if record.get("off", {}).get("engine") not in (None, "dense"):
        found.append(f"acceleration off ran {record['off']['engine']}")
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="models to try (default: all of --only)")
    parser.add_argument("--only", choices=("tv", "timm"), help="torchvision or timm only")
    parser.add_argument("--out", required=True, help="JSON lines file (appended to)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest relative difference from the plain path accepted")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    jobs: list[tuple[str, str]] = []
    if args.names:
        jobs = [("timm" if name in TIMM else "tv", name) for name in args.names]
    else:
        if args.only in (None, "tv"):
            import torchvision

            jobs += [("tv", n) for n in torchvision.models.list_models(module=torchvision.models) if n not in SKIP_TORCHVISION]
        if args.only in (None, "timm"):
            jobs += [("timm", n) for n in TIMM]
    failed = {}
    with open(args.out, "a") as out:
        out.write(json.dumps({"versions": versions(), "threads": args.threads, "tolerance": args.tolerance, "models": len(jobs)}) + "\n")
        for source, name in jobs:
            record = sweep_one(source, name)
            out.write(json.dumps(record) + "\n")
            out.flush()
            incremental = record.get("incremental", {})
            print(name, record.get("size"), incremental.get("engine") or incremental.get("error"), incremental.get("difference"), flush=True)
            if found := problems(record, args.tolerance):
                failed[name] = found
    for name, found in failed.items():
        print(f"{name}: {'; '.join(found)}")
    print(f"{len(jobs) - len(failed)} of {len(jobs)} models within {args.tolerance:g} of the plain path")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
