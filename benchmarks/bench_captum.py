"""Target 2: local sensitivity (occlusion) against Captum's Occlusion: the same windows, strides,
zero baseline and target; equal maps and Sensiscope at most 0.8 x Captum's time."""

from __future__ import annotations

import numpy as np
import torch
from common import BenchResult, Context, best_ratio, build_model, interleaved, make_input, ratios, summarise

TIME_FACTOR = 0.8
MAP_TOLERANCE = 1e-4  # max |difference| relative to the map's max |value|, float32 forwards


def cases(quick: bool) -> dict:
    if quick:
        return {
            "timed": {"model": "resnet18", "size": 112, "window": 28, "stride": 28},
            "overlap": {"model": "resnet18", "size": 64, "window": 16, "stride": 10},
        }
    return {
        "timed": {"model": "resnet18", "size": 224, "window": 32, "stride": 32},
        "overlap": {"model": "resnet18", "size": 112, "window": 16, "stride": 10},
    }


def _maps(model, x, target: int, window: int, stride: int, batch_size: int, per_eval: int, out: dict) -> tuple[callable, callable]:
    """Two callables that compute Sensiscope's and Captum's maps into ``out['ours']`` and ``out['captum']``."""
    from captum.attr import Occlusion

    from engine.methods.runner import explain

    occlusion = Occlusion(model)

    def ours() -> None:
        out["ours"] = explain(model, x, "local", target=target, params={"mode": "occlusion", "window": window, "stride": stride, "baseline": "zero", "batch_size": batch_size}).map

    def theirs() -> None:
        with torch.no_grad():
            attr = occlusion.attribute(x, sliding_window_shapes=(x.shape[1], window, window), strides=(x.shape[1], stride, stride), baselines=0.0, target=target, perturbations_per_eval=per_eval)
        # Captum gives every channel of a pixel the same value (the window spans all channels).
        out["captum"] = attr[0, 0].detach().cpu().numpy()

    return ours, theirs


def _difference(out: dict) -> float:
    ours, theirs = out["ours"], out["captum"]
    scale = max(float(np.abs(ours).max()), 1e-30)
    return float(np.abs(ours - theirs).max()) / scale


def run_captum(ctx: Context) -> BenchResult:
    result = BenchResult("captum_occlusion", "Local occlusion against Captum's Occlusion (target 2)")
    try:
        import captum
    except ImportError:
        result.skipped = "captum is not installed: comparison skipped"
        return result
    config = cases(ctx.quick)
    batch_size = 64
    result.config.update({**config, "captum": captum.__version__, "batch_size": batch_size, "perturbations_per_eval": [batch_size, 1]})
    result.notes.append(f"Sensiscope's batch_size and Captum's perturbations_per_eval are both {batch_size} (Sensiscope's default); Captum's default of 1 is timed as well")

    timed = config["timed"]
    model = build_model(timed["model"], ctx.device)
    x = make_input(timed["size"], ctx.device)
    with torch.inference_mode():
        target = int(model(x).argmax(1))
    label = f"{timed['model']} {timed['size']}px w{timed['window']} s{timed['stride']}"
    out, out_one = {}, {}
    ours, theirs = _maps(model, x, target, timed["window"], timed["stride"], batch_size, batch_size, out)
    _, theirs_one = _maps(model, x, target, timed["window"], timed["stride"], batch_size, 1, out_one)
    ctx.log(f"  captum {label}: ours and Captum (perturbations_per_eval={batch_size}) interleaved")
    samples = interleaved({"ours": ours, "captum": theirs}, ctx)
    ratio = summarise(ratios(samples["ours"], samples["captum"]))
    result.figure(f"{label}: Sensiscope local", summarise(samples["ours"]))
    result.figure(f"{label}: Captum Occlusion, perturbations_per_eval={batch_size}", summarise(samples["captum"]))
    result.target(f"{label}: Sensiscope / Captum (perturbations_per_eval={batch_size})", ratio["median"], TIME_FACTOR, spread=ratio, best=best_ratio(samples["ours"], samples["captum"]))
    difference = _difference(out)
    result.figure(f"{label}: max |map difference| / max |map|", difference, unit="")
    result.target(f"{label}: maps equal (max abs difference / map max)", difference, MAP_TOLERANCE)

    # Captum's default of one perturbation per forward is slow; fewer rounds, still interleaved with ours.
    rounds = 1 if ctx.quick else 2
    ctx.log(f"  captum {label}: Captum perturbations_per_eval=1, {rounds} round(s)")
    samples_one = interleaved({"ours": ours, "captum": theirs_one}, ctx, repeats=rounds, warmup=0)
    ratio_one = summarise(ratios(samples_one["ours"], samples_one["captum"]))
    result.figure(f"{label}: Captum Occlusion, perturbations_per_eval=1", summarise(samples_one["captum"]))
    result.target(f"{label}: Sensiscope / Captum (perturbations_per_eval=1)", ratio_one["median"], TIME_FACTOR, spread=ratio_one, best=best_ratio(samples_one["ours"], samples_one["captum"]))
    out_one["ours"] = out["ours"]
    result.figure(f"{label}: max |map difference| / max |map|, perturbations_per_eval=1", _difference(out_one), unit="")

    overlap = config["overlap"]
    model = build_model(overlap["model"], ctx.device)
    x = make_input(overlap["size"], ctx.device, seed=1)
    with torch.inference_mode():
        target = int(model(x).argmax(1))
    label = f"{overlap['model']} {overlap['size']}px w{overlap['window']} s{overlap['stride']} (overlapping, cut off at the border)"
    out = {}
    ours, theirs = _maps(model, x, target, overlap["window"], overlap["stride"], batch_size, batch_size, out)
    ctx.log(f"  captum {label}: equality only")
    ours()
    theirs()
    difference = _difference(out)
    result.figure(f"{label}: max |map difference| / max |map|", difference, unit="")
    result.target(f"{label}: maps equal (max abs difference / map max)", difference, MAP_TOLERANCE)
    return result
