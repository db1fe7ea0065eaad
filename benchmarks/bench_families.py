"""Issue 15's speed targets for the gradient and CAM families:

* ``ig``: Integrated Gradients against Captum's IntegratedGradients at the same steps (Captum's
  internal_batch_size set to the steps, ours automatic): time <= 0.8 x Captum's, maps equal, and
  <= 1.2 x the forward+backward passes it needs (``steps`` inputs in one batch).
* ``scorecam``: Score-CAM against pytorch-grad-cam's ScoreCAM (same layer, same target, its batch
  of 16): time <= 0.5 x theirs, correlation of the maps >= 0.99.
"""

from __future__ import annotations

import copy
import time

import numpy as np
import torch
from common import BenchResult, Context, best_ratio, build_model, interleaved, make_input, ratios, summarise

IG_PEER_FACTOR = 0.8
IG_PASSES_FACTOR = 1.2
SCORECAM_PEER_FACTOR = 0.5
CORRELATION = 0.99


def _correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    a, b = np.ravel(a).astype(np.float64), np.ravel(b).astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _target(model, x) -> int:
    with torch.inference_mode():
        return int(model(x).argmax(1))


def _cpu_timed(fns: dict, cpu: dict) -> dict:
    """The callables, each also recording the process CPU time it took into ``cpu[name]``: on a
    machine shared with other jobs the CPU time is less disturbed than the wall-clock time."""

    def wrap(name, fn):
        def run() -> None:
            start = time.process_time()
            fn()
            cpu.setdefault(name, []).append(time.process_time() - start)

        return run

    return {name: wrap(name, fn) for name, fn in fns.items()}


def _cpu_ratio(result: BenchResult, label: str, cpu: dict, ours: str, theirs: str, repeats: int) -> None:
    """The median ratio of CPU times over the timed rounds (the last ``repeats`` samples)."""
    pairs = ratios(cpu[ours][-repeats:], cpu[theirs][-repeats:])
    result.figure(f"{label} (process CPU time)", summarise(pairs), unit="x")


def _passes_fn(model, x, target: int, steps: int):
    """The forward and backward of ``steps`` inputs in one batch: what IG cannot do without."""

    def run() -> None:
        batch = x.detach().expand(steps, *x.shape[1:]).clone().requires_grad_(True)
        with torch.enable_grad():
            torch.autograd.grad(model(batch)[:, target].sum(), batch)

    return run


def run_ig(ctx: Context) -> BenchResult:
    result = BenchResult("ig", "Integrated Gradients against Captum and the forward+backward passes it needs")
    try:
        import captum
        from captum.attr import IntegratedGradients
    except ImportError:
        result.skipped = "captum is not installed: comparison skipped"
        return result
    from engine.methods.runner import explain

    case = {"model": "resnet18", "size": 112 if ctx.quick else 224, "steps": 16 if ctx.quick else 32}
    result.config.update({**case, "captum": captum.__version__})
    model = build_model(case["model"], ctx.device)
    x = make_input(case["size"], ctx.device)
    target, steps = _target(model, x), case["steps"]
    label = f"{case['model']} {case['size']}px {steps} steps"
    out: dict = {}
    ig = IntegratedGradients(model)

    def ours() -> None:
        out["ours"] = explain(model, x, "ig", target=target, params={"steps": steps}).extras["attribution"]

    def theirs() -> None:
        out["theirs"] = ig.attribute(x, target=target, n_steps=steps, internal_batch_size=steps)[0].detach().cpu().numpy()

    ctx.log(f"  ig {label}: interleaved rounds")
    cpu: dict = {}
    samples = interleaved(_cpu_timed({"ours": ours, "theirs": theirs, "passes": _passes_fn(model, x, target, steps)}, cpu), ctx)
    _cpu_ratio(result, f"{label}: Sensiscope / Captum", cpu, "ours", "theirs", ctx.repeats)
    for name, text in (("ours", "Sensiscope ig"), ("theirs", "Captum IntegratedGradients"), ("passes", f"forward + backward of {steps} inputs")):
        result.figure(f"{label}: {text}", summarise(samples[name]))
    peer = summarise(ratios(samples["ours"], samples["theirs"]))
    raw = summarise(ratios(samples["ours"], samples["passes"]))
    result.target(f"{label}: Sensiscope / Captum time", peer["median"], IG_PEER_FACTOR, spread=peer, best=best_ratio(samples["ours"], samples["theirs"]))
    result.target(f"{label}: Sensiscope / (forward + backward) time", raw["median"], IG_PASSES_FACTOR, spread=raw, best=best_ratio(samples["ours"], samples["passes"]))
    correlation = _correlation(out["ours"], out["theirs"])
    result.figure(f"{label}: correlation of the attributions", correlation, unit="")
    result.target(f"{label}: correlation with Captum", correlation, 0.999, op=">=")
    return result


def run_scorecam(ctx: Context) -> BenchResult:
    result = BenchResult("scorecam", "Score-CAM against pytorch-grad-cam's ScoreCAM")
    try:
        from pytorch_grad_cam import ScoreCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as exc:
        result.skipped = f"pytorch-grad-cam is not importable ({exc}): comparison skipped"
        return result
    from engine.methods.runner import explain
    from engine.models.layers import get_layer

    case = {"model": "resnet18", "size": 112 if ctx.quick else 224, "layer": "layer4"}
    result.config.update(case)
    model = build_model(case["model"], ctx.device)
    x = make_input(case["size"], ctx.device)
    target = _target(model, x)
    label = f"{case['model']} {case['size']}px layer {case['layer']}"
    out: dict = {}
    # pytorch-grad-cam keeps hooks on its target layer for as long as the ScoreCAM object lives;
    # it gets its own copy (same weights) so that its hooks do not run inside Sensiscope's forwards.
    reference = copy.deepcopy(model)
    cam = ScoreCAM(model=reference, target_layers=[get_layer(reference, case["layer"])])
    cam.batch_size = 16  # its default, stated

    def ours() -> None:
        out["ours"] = explain(model, x, "scorecam", target=target, params={"layer": case["layer"]}).map

    def theirs() -> None:
        out["theirs"] = cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])[0]

    ctx.log(f"  scorecam {label}: interleaved rounds")
    repeats = 1 if ctx.quick else ctx.repeats
    cpu: dict = {}
    samples = interleaved(_cpu_timed({"ours": ours, "theirs": theirs}, cpu), ctx, repeats=repeats, warmup=0 if ctx.quick else 1)
    _cpu_ratio(result, f"{label}: Sensiscope / pytorch-grad-cam", cpu, "ours", "theirs", repeats)
    cam.activations_and_grads.release()
    result.figure(f"{label}: Sensiscope scorecam", summarise(samples["ours"]))
    result.figure(f"{label}: pytorch-grad-cam ScoreCAM", summarise(samples["theirs"]))
    peer = summarise(ratios(samples["ours"], samples["theirs"]))
    result.target(f"{label}: Sensiscope / pytorch-grad-cam time", peer["median"], SCORECAM_PEER_FACTOR, spread=peer, best=best_ratio(samples["ours"], samples["theirs"]))
    correlation = _correlation(out["ours"], out["theirs"])
    result.figure(f"{label}: correlation of the maps", correlation, unit="")
    result.target(f"{label}: correlation with pytorch-grad-cam", correlation, CORRELATION, op=">=")
    result.notes.append("pytorch-grad-cam runs on its own copy of the model (same weights): its hooks stay on the layer while the ScoreCAM object lives")
    result.notes.append("pytorch-grad-cam multiplies all 512 masks into the input at once (512 images in memory); Sensiscope builds them batch by batch")
    return result
