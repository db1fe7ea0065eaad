"""Target 3: Grad-CAM against pytorch-grad-cam (same layer, same target): correlation of the
upsampled maps >= 0.99, time <= 1.0 x theirs and <= 1.3 x one forward plus backward.

"One forward plus backward" is the forward of the input (requiring grad) and the backward of the
target logit all the way to the input, as gradient saliency does; Grad-CAM needs the backward only
down to its layer, so it can come in under that.
"""

from __future__ import annotations

import numpy as np
import torch
from common import BenchResult, Context, best_ratio, build_model, interleaved, make_input, ratios, summarise

CORRELATION = 0.99
PEER_FACTOR = 1.0
FORWARD_BACKWARD_FACTOR = 1.3


def cases(quick: bool) -> list[dict]:
    if quick:
        return [{"model": "resnet18", "size": 112}]
    return [{"model": "resnet18", "size": 224}, {"model": "vgg16", "size": 224}]


def forward_backward_fn(model, x, target: int) -> callable:
    def run() -> None:
        inputs = x.detach().clone().requires_grad_(True)
        with torch.enable_grad():
            logit = model(inputs)[:, target].sum()
            torch.autograd.grad(logit, inputs)

    return run


def run_gradcam(ctx: Context) -> BenchResult:
    result = BenchResult("gradcam", "Grad-CAM against pytorch-grad-cam and one forward plus backward (target 3)")
    try:
        import pytorch_grad_cam
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as exc:
        result.skipped = f"pytorch-grad-cam is not importable ({exc}): comparison skipped"
        return result
    from engine.methods.runner import explain
    from engine.models.layers import default_cam_layer, get_layer

    result.config["cases"] = cases(ctx.quick)
    result.config["pytorch_grad_cam"] = getattr(pytorch_grad_cam, "__version__", "installed")
    result.notes.append("pytorch-grad-cam calls loss.backward(), which also computes every parameter's gradient; Sensiscope takes torch.autograd.grad to the layer only")
    for case in cases(ctx.quick):
        model = build_model(case["model"], ctx.device)
        x = make_input(case["size"], ctx.device)
        with torch.inference_mode():
            target = int(model(x).argmax(1))
        layer_name = default_cam_layer(model, tuple(x.shape[1:]))
        label = f"{case['model']} {case['size']}px layer {layer_name}"
        out: dict = {}
        cam = GradCAM(model=model, target_layers=[get_layer(model, layer_name)])
        targets = [ClassifierOutputTarget(target)]

        def ours(out=out, model=model, x=x, target=target, layer_name=layer_name) -> None:
            out["ours"] = explain(model, x, "gradcam", target=target, params={"layer": layer_name}).map

        def theirs(out=out, cam=cam, x=x, targets=targets) -> None:
            out["theirs"] = cam(input_tensor=x, targets=targets)[0]

        fns = {"ours": ours, "theirs": theirs, "forward_backward": forward_backward_fn(model, x, target)}
        ctx.log(f"  gradcam {label}: interleaved rounds")
        samples = interleaved(fns, ctx, repeats=ctx.repeats + 1)
        for name, text in (("ours", "Sensiscope gradcam"), ("theirs", "pytorch-grad-cam GradCAM"), ("forward_backward", "forward + backward to the input")):
            result.figure(f"{label}: {text}", summarise(samples[name]))
        peer = summarise(ratios(samples["ours"], samples["theirs"]))
        raw = summarise(ratios(samples["ours"], samples["forward_backward"]))
        result.target(f"{label}: Sensiscope / pytorch-grad-cam time", peer["median"], PEER_FACTOR, spread=peer, best=best_ratio(samples["ours"], samples["theirs"]))
        result.target(f"{label}: Sensiscope / (forward + backward) time", raw["median"], FORWARD_BACKWARD_FACTOR, spread=raw, best=best_ratio(samples["ours"], samples["forward_backward"]))
        a, b = out["ours"].ravel().astype(np.float64), out["theirs"].ravel().astype(np.float64)
        if a.std() == 0 or b.std() == 0:
            correlation = None
            result.notes.append(f"{label}: a map is constant (std 0), so the correlation is undefined")
        else:
            correlation = float(np.corrcoef(a, b)[0, 1])
        result.figure(f"{label}: correlation of the upsampled maps", correlation, unit="")
        result.target(f"{label}: correlation with pytorch-grad-cam", correlation, CORRELATION, op=">=")
        cam.activations_and_grads.release()
        if any(isinstance(m, torch.nn.ReLU) and m.inplace for m in model.modules()):
            # pytorch-grad-cam keeps the layer's output without a copy on the CPU (.cpu() of a CPU
            # tensor is the tensor itself), so an in-place ReLU after the layer rewrites it; with
            # the ReLUs out of place both libraries see the layer's true output.
            for module in model.modules():
                if isinstance(module, torch.nn.ReLU):
                    module.inplace = False
            ours()
            plain = GradCAM(model=model, target_layers=[get_layer(model, layer_name)])
            theirs(cam=plain)
            plain.activations_and_grads.release()
            corr = float(np.corrcoef(out["ours"].ravel().astype(np.float64), out["theirs"].ravel().astype(np.float64))[0, 1])
            result.figure(f"{label}: correlation with in-place ReLUs made out of place", corr, unit="")
            result.target(f"{label}: correlation with pytorch-grad-cam, in-place ReLUs off", corr, CORRELATION, op=">=")
            result.notes.append(f"{label}: the model has in-place ReLUs; Sensiscope's map is the same either way, pytorch-grad-cam's changes (see the two correlations)")
    return result
