"""Guided Grad-CAM (Selvaraju et al., ICCV 2017): guided backpropagation multiplied, element by
element, by the Grad-CAM map of a layer upsampled to the input (bilinearly, as Sensiscope's
``gradcam``; Captum's GuidedGradCam upsamples with nearest neighbours unless told otherwise)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from engine.core.explanation import Explanation
from engine.core.params import param
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.methods._base import begin, finish
from engine.methods._gradients import REDUCE_CHOICES, REDUCE_HELP, reduce_channels, refuse_script
from engine.methods._registry import Cost, MethodSpec, register
from engine.methods.gradcam import GradCamParams, explain_gradcam
from engine.methods.guidedbp import guided_gradient
from engine.models.outputs import OUTPUT_CHOICES


@dataclass(frozen=True)
class GuidedGradCamParams:
    layer: str = param("", "layer of the Grad-CAM factor (empty: the last convolutional block, e.g. layer4 of a ResNet)")
    reduce: str = param("maxabs", REDUCE_HELP, choices=REDUCE_CHOICES)
    output: str = param("logit", "what is differentiated: the target's logit, probability or log-probability", choices=OUTPUT_CHOICES)


def _within(progress: ProgressFn, low: float, high: float) -> ProgressFn:
    def report(fraction: float, message: str, data=None) -> None:
        progress(low + (high - low) * fraction, message, data)

    return report


def explain(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | None,
    params: GuidedGradCamParams,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> Explanation:
    """Guided Grad-CAM map of one input: guided gradient times the upsampled Grad-CAM, reduced over channels."""
    progress, cancel = resolve(progress, cancel)
    x = begin(inputs, progress, cancel, "forward")
    refuse_script(model, "guided Grad-CAM")
    setup, grad = guided_gradient(model, x, target, params.output, progress, cancel, span=(0.0, 0.5))
    cam = explain_gradcam(model, x, setup.target, GradCamParams(layer=params.layer, relu=True, output=params.output), progress=_within(progress, 0.5, 0.95), cancel=cancel)
    cancel.check()
    attribution = grad * torch.from_numpy(cam.map).to(grad.device, grad.dtype)
    extras = {"layer": cam.extras["layer"], "gradcam_map": cam.map, "attribution": attribution.float().cpu().numpy()}
    return finish(setup, SPEC.name, params, reduce_channels(attribution, params.reduce), progress, extras)


def cost(params: GuidedGradCamParams, height: int, width: int) -> Cost:
    """A guided forward and backward, then Grad-CAM's forward and backward."""
    return Cost(2, 2)


SPEC = register(
    MethodSpec(
        name="guided-gradcam",
        summary="Guided Grad-CAM: guided backpropagation times the upsampled Grad-CAM map of a layer",
        params_cls=GuidedGradCamParams,
        explain=explain,
        kind="gradient",
        needs_layer=True,
        cost=cost,
    )
)
