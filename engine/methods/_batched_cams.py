"""Several images per forward and backward pass for the class-activation maps that take one pass
(Grad-CAM, Grad-CAM++, Layer-CAM, XGrad-CAM, HiResCAM, Eigen-CAM).

The batch goes through the model once with the layer recorded; for a model in eval mode the rows
do not interact, so the gradient of the sum over images of each image's target output, taken
with respect to the layer's batched output, holds every image's own gradient. Each image's
feature maps and gradient then go through its method's own weighting and ``_cam.end``, so the maps
are the per-image ``explain``'s up to float rounding (tests/engine/test_batched_methods.py checks
it method by method). The weightings are looked up in the methods' modules; a method whose
weighting is not found there keeps explaining image by image.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import torch

from engine.core.explanation import Explanation
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.methods._base import check_batch
from engine.methods._cam import CamParams, capture_many, end, weigh_and_end
from engine.methods._registry import register_batched

# method -> (module, name of its weighting function weigh(feature C x h x w, grad) -> weights)
_GRADIENT_CAMS = {
    "gradcam": ("engine.methods.gradcam", "_gradcam_weights"),
    "gradcam++": ("engine.methods.gradcam", "_gradcam_pp_weights"),
    "layercam": ("engine.methods.cams", "_layercam_weights"),
    "xgradcam": ("engine.methods.cams", "_xgradcam_weights"),
    "hirescam": ("engine.methods.cams", "_hirescam_weights"),
}


def gradient_cam_batch(weigh: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], method: str) -> Callable[..., list[Explanation]]:
    """The batched explain of a CAM weighted by its gradient (see ``_cam.gradient_cam``)."""

    def explain_batch(model, inputs, targets, params, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> list[Explanation]:
        progress, cancel = resolve(progress, cancel)
        x, targets = check_batch(inputs, targets)
        return [weigh_and_end(cap, weigh, method, params, progress) for cap in capture_many(model, x, targets, params, cancel, method, gradient=True)]

    explain_batch.__doc__ = f"{method} maps of an N x C x H x W batch, one target (or None) per image."
    return explain_batch


def explain_eigencam_batch(model, inputs, targets, params, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> list[Explanation]:
    """Eigen-CAM maps of an N x C x H x W batch in one forward (the target plays no part)."""
    from engine.methods.cams import first_component

    progress, cancel = resolve(progress, cancel)
    x, targets = check_batch(inputs, targets)
    as_cam = CamParams(layer=params.layer, relu=params.relu)
    caps = capture_many(model, x, targets, as_cam, cancel, "eigencam", gradient=False)
    return [end(cap, "eigencam", params, first_component(cap.feature), progress) for cap in caps]


def _register() -> None:
    for method, (module_name, weights_name) in _GRADIENT_CAMS.items():
        weigh = getattr(importlib.import_module(module_name), weights_name, None)
        if weigh is not None:
            register_batched(method, gradient_cam_batch(weigh, method))
    if hasattr(importlib.import_module("engine.methods.cams"), "first_component"):
        register_batched("eigencam", explain_eigencam_batch)


_register()
