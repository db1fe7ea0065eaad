"""Grad-CAM (Selvaraju et al., ICCV 2017) and Grad-CAM++ (Chattopadhay et al., WACV 2018).

Both weight the feature maps A_k of one layer by a per-channel weight computed from the gradient
g = d y_target / d A and sum them: cam = ReLU(sum_k w_k A_k), upsampled bilinearly to the input.
They differ only in the weights (the layer's output is read as feature maps by ``_cam.capture``, so
the patch tokens of a vision transformer and Swin's channels-last maps work as a CNN's do):

* Grad-CAM: w_k = mean over positions of g_k.
* Grad-CAM++: w_k = sum_ij alpha_kij ReLU(g_kij) with the closed form of Chattopadhay et al. 2018,
  eq. 19 (which assumes the explained score is exp(y), so that higher derivatives are powers of g):
  alpha_kij = g_kij^2 / (2 g_kij^2 + (sum_ab A_kab) g_kij^3), and alpha = 0 where that is 0 / 0.
  pytorch-grad-cam adds 1e-6 to that denominator; on a ViT's LayerNorm tokens (|g| ~ 1e-4..1e-3)
  this dominates 2 g^2, so its map differs from eq. 19 (Pearson ~0.9; tests/engine/test_vit_gradcam_pp.py).

Each is its weighting and one call of the CAM family base (``_cam.gradient_cam``), which builds and
registers its single-image and batched explain.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.core.params import param
from engine.methods._cam import gradient_cam
from engine.models.outputs import OUTPUT_CHOICES


@dataclass(frozen=True)
class GradCamParams:
    layer: str = param("", "layer whose feature maps are weighted (empty: the last convolutional block, e.g. layer4 of a ResNet)")
    relu: bool = param(True, "keep only the positive evidence (ReLU of the weighted sum); off: the signed map")
    output: str = param("logit", "what is differentiated: the target's logit, probability or log-probability", choices=OUTPUT_CHOICES)


def gradcam_weights(activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Grad-CAM channel weights (Selvaraju et al. 2017, eq. 1): spatial mean of the gradient."""
    return grad.mean(dim=(1, 2))


def gradcam_pp_weights(activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Grad-CAM++ channel weights (Chattopadhay et al. 2018, eq. 19 with the ReLU of eq. 7)."""
    grad2 = grad.pow(2)
    grad3 = grad2 * grad
    total = activation.sum(dim=(1, 2), keepdim=True)
    denominator = 2 * grad2 + total * grad3
    # The closed form is 0 / 0 where the gradient vanishes; the paper sets alpha = 0 there.
    safe = torch.where(denominator != 0, denominator, torch.ones_like(denominator))
    alpha = torch.where(denominator != 0, grad2 / safe, torch.zeros_like(grad2))
    return (alpha * torch.relu(grad)).sum(dim=(1, 2))


SPEC = gradient_cam(
    "gradcam",
    "Class-activation map: a layer's feature maps weighted by the mean gradient of the target (Grad-CAM)",
    gradcam_weights,
    GradCamParams,
)
SPEC_PP = gradient_cam(
    "gradcam++",
    "Grad-CAM++: feature maps weighted by positive gradients with higher-order per-position weights",
    gradcam_pp_weights,
    GradCamParams,
)
explain_gradcam = SPEC.explain
explain_gradcam_pp = SPEC_PP.explain
