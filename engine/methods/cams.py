"""Class-activation maps that weigh a layer's feature maps A_k in one pass (the gradient ones in one
forward and backward), each registered under its own name:

* ``layercam`` (Jiang et al., IEEE TIP 2021): every position weighted by its positive gradient,
  cam = ReLU(sum_k ReLU(g_k) * A_k).
* ``xgradcam`` (Fu et al., BMVC 2020): w_k = sum_ij g_kij A_kij / sum_ij A_kij.
* ``hirescam`` (Draelos and Carin, 2020): the element-wise product, cam = ReLU(sum_k g_k * A_k); for
  a network that ends in global average pooling and a linear layer, the exact contribution of
  each position to the score (up to the 1 / (h w) of the pooling).
* ``eigencam`` (Muhammad and Yeasin, IJCNN 2020): the projection of the centred activations (one
  row per position, one column per channel) on their first principal component; it does not
  depend on the target. The component's sign, arbitrary in an SVD, is chosen so that the
  projection grows with the total activation of a position (a positive correlation).

g = d output / d A for the target; the maps are upsampled bilinearly to the input. Each is its
weighting (or, for Eigen-CAM, its projection) and one call of the CAM family base in ``_cam``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.core.params import param
from engine.methods._cam import activation_cam, gradient_cam

_XGRAD_EPSILON = 1e-7  # keeps a channel that is zero everywhere from dividing by zero


def layercam_weights(feature: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return torch.relu(grad)


def xgradcam_weights(feature: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return (grad * feature).sum(dim=(1, 2)) / (feature.sum(dim=(1, 2)) + _XGRAD_EPSILON)


def hirescam_weights(feature: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    return grad


def first_component(feature: torch.Tensor) -> torch.Tensor:
    """h x w projection of the centred C x h x w activations on their first principal component."""
    channels, height, width = feature.shape
    rows = feature.double().reshape(channels, -1).T
    rows = rows - rows.mean(dim=0, keepdim=True)
    if not torch.any(rows):
        return torch.zeros(height, width, dtype=feature.dtype, device=feature.device)
    _, _, vh = torch.linalg.svd(rows, full_matrices=False)
    projection = rows @ vh[0]
    total = feature.double().reshape(channels, -1).sum(0)
    if torch.dot(projection, total - total.mean()) < 0:
        projection = -projection
    return projection.reshape(height, width).to(feature.dtype)


@dataclass(frozen=True)
class EigenCamParams:
    layer: str = param("", "layer whose feature maps are decomposed (empty: the last convolutional block, e.g. layer4 of a ResNet)")
    relu: bool = param(True, "keep only the positive side of the projection; off: the signed projection")


SPEC_LAYERCAM = gradient_cam("layercam", "Layer-CAM: a layer's feature maps weighted position by position by their positive gradient", layercam_weights)
SPEC_XGRADCAM = gradient_cam("xgradcam", "XGrad-CAM: feature maps weighted by their gradient averaged with the activations as weights", xgradcam_weights)
SPEC_HIRESCAM = gradient_cam("hirescam", "HiResCAM: the element-wise product of a layer's feature maps and their gradient, summed over channels", hirescam_weights)
SPEC_EIGENCAM = activation_cam(
    "eigencam",
    "Eigen-CAM: the first principal component of a layer's feature maps (class-agnostic, no gradient)",
    first_component,
    EigenCamParams,
)
explain_layercam = SPEC_LAYERCAM.explain
explain_xgradcam = SPEC_XGRADCAM.explain
explain_hirescam = SPEC_HIRESCAM.explain
explain_eigencam = SPEC_EIGENCAM.explain
