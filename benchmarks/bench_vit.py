"""Grad-CAM on a vision transformer against pytorch-grad-cam: a timm ViT-B/16 at 224 pixels (random
weights; quick mode: ViT-Ti/16), the first norm of the last block, pytorch-grad-cam given its
documented reshape_transform (drop the class token, tokens to a 14 x 14 grid). Sensiscope needs no
reshape function: the token grid is found from the input size.

Targets: correlation of the upsampled maps >= 0.99, time <= 1.0 x pytorch-grad-cam's.
"""

from __future__ import annotations

import numpy as np
import torch
from common import BenchResult, Context, best_ratio, interleaved, make_input, ratios, summarise

CORRELATION = 0.99
PEER_FACTOR = 1.0


def cases(quick: bool) -> list[dict]:
    if quick:
        return [{"model": "vit_tiny_patch16_224", "size": 224}]
    return [{"model": "vit_base_patch16_224", "size": 224}]


def _reshape(tensor: torch.Tensor, height: int = 14, width: int = 14) -> torch.Tensor:
    """pytorch-grad-cam's reshape_transform for ViT (its tutorial): drop the class token, B x C x h x w."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def _version(distribution: str, fallback: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return fallback


def _build(name: str, device: torch.device) -> torch.nn.Module:
    from engine.models.loading import load_model

    return load_model(f"timm:{name}", seed=0).module.to(device)


def run_vit_gradcam(ctx: Context) -> BenchResult:
    result = BenchResult("vit_gradcam", "Grad-CAM on a ViT-B/16 (timm, 224 px) against pytorch-grad-cam with its reshape_transform")
    try:
        import pytorch_grad_cam
        import timm
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as exc:
        result.skipped = f"pytorch-grad-cam or timm is not importable ({exc}): comparison skipped"
        return result
    from engine.methods.runner import explain
    from engine.models.layers import default_cam_layer, get_layer

    result.config["cases"] = cases(ctx.quick)
    result.config["pytorch_grad_cam"] = _version("grad-cam", getattr(pytorch_grad_cam, "__version__", "installed"))
    result.config["timm"] = timm.__version__
    result.notes.append("pytorch-grad-cam calls loss.backward(), which also computes every parameter's gradient; Sensiscope takes torch.autograd.grad to the layer only")
    for case in cases(ctx.quick):
        model = _build(case["model"], ctx.device)
        for parameter in model.parameters():
            parameter.requires_grad_(True)  # pytorch-grad-cam backpropagates through the parameters
        x = make_input(case["size"], ctx.device)
        with torch.inference_mode():
            target = int(model(x).argmax(1))
        layer_name = default_cam_layer(model, tuple(x.shape[1:]))
        label = f"{case['model']} {case['size']}px layer {layer_name}"
        out: dict = {}
        grid = case["size"] // 16
        cam = GradCAM(model=model, target_layers=[get_layer(model, layer_name)], reshape_transform=lambda t, g=grid: _reshape(t, g, g))
        targets = [ClassifierOutputTarget(target)]

        def ours(out=out, model=model, x=x, target=target) -> None:
            out["ours"] = explain(model, x, "gradcam", target=target).map

        def theirs(out=out, cam=cam, x=x, targets=targets) -> None:
            out["theirs"] = cam(input_tensor=x, targets=targets)[0]

        ctx.log(f"  vit_gradcam {label}: interleaved rounds")
        samples = interleaved({"ours": ours, "theirs": theirs}, ctx, repeats=ctx.repeats + 1)
        result.figure(f"{label}: Sensiscope gradcam (default layer, no reshape function)", summarise(samples["ours"]))
        result.figure(f"{label}: pytorch-grad-cam GradCAM with reshape_transform", summarise(samples["theirs"]))
        peer = summarise(ratios(samples["ours"], samples["theirs"]))
        result.target(f"{label}: Sensiscope / pytorch-grad-cam time", peer["median"], PEER_FACTOR, spread=peer, best=best_ratio(samples["ours"], samples["theirs"]))
        a, b = out["ours"].ravel().astype(np.float64), out["theirs"].ravel().astype(np.float64)
        correlation = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else None
        result.figure(f"{label}: correlation of the upsampled maps", correlation, unit="")
        result.target(f"{label}: correlation with pytorch-grad-cam", correlation, CORRELATION, op=">=")
        cam.activations_and_grads.release()
    return result
