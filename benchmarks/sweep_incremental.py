"""Incremental `local` on every architecture at hand: does it run, and does it give the dense map?

For each torchvision classifier (the largest skipped) and a list of timm models, random init, eval
mode, 10 classes: `local` with window = size / 3 and stride = window / 2 on a seeded input, with
`engine=dense`, `incremental` and `auto`. One JSON line per model: the engine each run used, its
notes, the estimated speed-up, and the maximum difference from the dense map in units of the dense
map's range. Inputs are 64 px where the model takes them (96 or 224 otherwise; transformers 224).

    .venv/bin/python benchmarks/sweep_incremental.py --out sweep.jsonl [--only tv|timm] [NAME ...]

About 25 minutes on one core for all 105 models. A model torch.fx cannot trace runs densely with a
note: that is a fallback, not a failure. A map whose range is at float32 rounding (random-init
networks whose last batch norm starts at zero) gives a large relative difference from noise alone:
the line's `spread` says so.
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
from engine.models.architectures import build_architecture  # noqa: E402

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
    maps = {}
    for choice in ("dense", "incremental", "auto"):
        start = time.perf_counter()
        try:
            result = engine.explain(model, x, "local", target=0, params={**params, "engine": choice})
        except Exception as exc:  # noqa: BLE001 - what the sweep looks for
            record[choice] = {"error": f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}"}
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
        for choice in ("incremental", "auto"):
            if choice in maps and spread > 0:
                record[choice]["difference"] = float(np.abs(maps[choice] - maps["dense"]).max()) / spread
    return record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="models to try (default: all of --only)")
    parser.add_argument("--only", choices=("tv", "timm"), help="torchvision or timm only")
    parser.add_argument("--out", required=True, help="JSON lines file (appended to)")
    parser.add_argument("--threads", type=int, default=1)
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
    with open(args.out, "a") as out:
        for source, name in jobs:
            record = sweep_one(source, name)
            out.write(json.dumps(record) + "\n")
            out.flush()
            incremental = record.get("incremental", {})
            print(name, record.get("size"), incremental.get("engine") or incremental.get("error"), incremental.get("difference"), flush=True)


if __name__ == "__main__":
    main()
