"""Grad-CAM (Selvaraju et al., ICCV 2017) and Grad-CAM++ (Chattopadhay et al., WACV 2018).

Both weight the feature maps A_k of one layer by a per-channel weight computed from the gradient
g = d y_target / d A and sum them: cam = ReLU(sum_k w_k A_k), upsampled bilinearly to the input.
They differ only in the weights:

* Grad-CAM: w_k = mean over positions of g_k.
* Grad-CAM++: w_k = sum_ij alpha_kij ReLU(g_kij) with the closed form of Chattopadhay et al. 2018,
  eq. 19 (which assumes the explained score is exp(y), so that higher derivatives are powers of g):
  alpha_kij = g_kij^2 / (2 g_kij^2 + (sum_ab A_kab) g_kij^3), and alpha = 0 where that is 0 / 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from engine.core.errors import UserError
from engine.core.explanation import Explanation
from engine.core.params import param
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.methods._base import Setup, begin, finish, to_size
from engine.methods._registry import MethodSpec, register
from engine.models.layers import LayerRecorder, default_cam_layer, get_layer
from engine.models.outputs import OUTPUT_CHOICES, logits_of, select_output


@dataclass(frozen=True)
class GradCamParams:
    layer: str = param("", "layer whose feature maps are weighted (empty: the last convolutional block, e.g. layer4 of a ResNet)")
    relu: bool = param(True, "keep only the positive evidence (ReLU of the weighted sum); off: the signed map")
    output: str = param("logit", "what is differentiated: the target's logit, probability or log-probability", choices=OUTPUT_CHOICES)


class _UntouchedRecorder(LayerRecorder):
    """A LayerRecorder that hands the rest of the network a copy of the layer's output.

    Without the copy an in-place operation after the layer (VGG's ReLU(inplace=True) right after
    its last Conv2d) would overwrite the recorded activation and re-route its gradient, so the map
    would silently describe the ReLU's output instead of the named layer.
    """

    def _hook(self, module, inputs, output):
        super()._hook(module, inputs, output)
        if isinstance(output, torch.Tensor):
            return output.clone()
        return None


def _gradcam_weights(activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Grad-CAM channel weights (Selvaraju et al. 2017, eq. 1): spatial mean of the gradient."""
    return grad.mean(dim=(1, 2))


def _gradcam_pp_weights(activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ channel weights (Chattopadhay et al. 2018, eq. 19 with the ReLU of eq. 7)."""
    grad2 = grad.pow(2)
    grad3 = grad2 * grad
    total = activation.sum(dim=(1, 2), keepdim=True)
    denominator = 2 * grad2 + total * grad3
    # The closed form is 0 / 0 where the gradient vanishes; the paper sets alpha = 0 there.
    safe = torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    alpha = torch.where(denominator != 0, grad2 / safe, torch.zeros_like(grad2))
    return (alpha * torch.relu(grad)).sum(dim=(1, 2))


def _resolve_layer(model, name: str, input_shape: tuple[int, ...]) -> tuple[str, nn.Module]:
    if isinstance(model, torch.jit.ScriptModule):
        raise UserError("Grad-CAM needs hooks on a layer, which a TorchScript model cannot have; load the architecture with its weights instead")
    name = name or default_cam_layer(model, input_shape)
    return name, get_layer(model, name)


def _feature_map(activation: torch.Tensor | None, layer_name: str, method: str) -> torch.Tensor:
    """The recorded activation, checked to be one feature map of shape 1 x C x h x w."""
    if activation is None:
        raise UserError(f"layer '{layer_name}' did not run during the forward pass; choose a layer the model uses")
    if activation.ndim != 4 or activation.shape[0] != 1:
        raise UserError(f"layer '{layer_name}' outputs shape {tuple(activation.shape)}; {method} needs a feature map of shape N x C x h x w")
    return activation


def _explain(model, inputs, target, params: GradCamParams, progress, cancel, name: str, weigh: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> Explanation:
    progress, cancel = resolve(progress, cancel)
    x = begin(inputs, progress, cancel, "forward")
    layer_name, layer = _resolve_layer(model, params.layer, tuple(x.shape[1:]))
    # The input requires grad so the recorded activation is in the graph even when the
    # model's parameters do not require grad.
    x = x.clone().requires_grad_(True)
    with torch.enable_grad(), _UntouchedRecorder(layer) as recorder:
        logits = logits_of(model(x))
        setup = Setup.from_logits(x, logits, target)
        activation = _feature_map(recorder.activation, layer_name, name)
        cancel.check()
        progress(0.5, "backward")
        (grad,) = torch.autograd.grad(select_output(logits, setup.target, params.output).sum(), activation, allow_unused=True)
    if grad is None:
        raise UserError(f"the target output does not depend on layer '{layer_name}'; choose a layer on the path to the output")
    feature = activation.detach()[0].float()
    weights = weigh(feature, grad.detach()[0].float())
    raw = torch.einsum("k,khw->hw", weights, feature)
    if params.relu:
        raw = torch.relu(raw)
    extras = {
        "layer": layer_name,
        "activations": feature.cpu().numpy(),
        "weights": weights.cpu().numpy(),
        "raw_map": raw.cpu().numpy(),
    }
    return finish(setup, name, params, to_size(raw[None], tuple(x.shape[2:]))[0], progress, extras)


def explain_gradcam(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | None,
    params: GradCamParams,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> Explanation:
    """Grad-CAM map of one input: feature maps of a layer weighted by their mean gradient."""
    return _explain(model, inputs, target, params, progress, cancel, "gradcam", _gradcam_weights)


def explain_gradcam_pp(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | None,
    params: GradCamParams,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> Explanation:
    """Grad-CAM++ map of one input: feature maps weighted by positive gradients with per-position alphas."""
    return _explain(model, inputs, target, params, progress, cancel, "gradcam++", _gradcam_pp_weights)


SPEC = register(
    MethodSpec(
        name="gradcam",
        summary="Class-activation map: a layer's feature maps weighted by the mean gradient of the target (Grad-CAM)",
        params_cls=GradCamParams,
        explain=explain_gradcam,
        kind="gradient",
        needs_layer=True,
    )
)

SPEC_PP = register(
    MethodSpec(
        name="gradcam++",
        summary="Grad-CAM++: feature maps weighted by positive gradients with higher-order per-position weights",
        params_cls=GradCamParams,
        explain=explain_gradcam_pp,
        kind="gradient",
        needs_layer=True,
    )
)
