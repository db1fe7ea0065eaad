"""Grad-CAM++ on a vision transformer against pytorch-grad-cam's GradCAMPlusPlus, and why the two
differ on a ViT at its natural scale.

Both compute Chattopadhay et al. (WACV 2018) eq. 19, alpha = g^2 / (2 g^2 + (sum_ab A_ab) g^3), on the
same 4 x 4 grid of patch tokens (the class token dropped, by the documented reshape_transform and by
engine.models.tokens alike). pytorch-grad-cam adds eps = 1e-6 to the denominator. After a ViT's
LayerNorm the gradients of a logit are about 1e-4 to 1e-3, so 2 g^2 (1e-8 to 1e-6) is no larger than
that eps: its alpha becomes about g^2 / 1e-6 instead of about 1/2, weighting channels by sum g^3
rather than sum g / 2, and its map correlates only about 0.9 with eq. 19's. On a CNN (gradients
large against 1e-3) and on a ViT whose logits are scaled so that its gradients are, the eps is
negligible and the maps agree. Sensiscope keeps eq. 19 without the eps (0 / 0 is 0, as in the paper).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import engine
from engine.core.progress import resolve
from engine.methods._cam import capture
from engine.methods.gradcam import GradCamParams

REFERENCE_EPS = 1e-6  # pytorch_grad_cam/grad_cam_plusplus.py


def _vit_reshape(tensor, height=4, width=4):
    """pytorch-grad-cam's documented reshape_transform for ViT (tutorials/vision_transformers.md)."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def _pearson(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.fixture(scope="module")
def vit():
    import timm

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=3).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def x():
    return torch.rand((3, 32, 32), generator=torch.Generator().manual_seed(1))


def _reference(model, x, target):
    from pytorch_grad_cam import GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    copied = copy.deepcopy(model)
    for p in copied.parameters():
        p.requires_grad_(True)
    with GradCAMPlusPlus(model=copied, target_layers=[copied.blocks[-1].norm1], reshape_transform=_vit_reshape) as cam:
        return cam(input_tensor=x[None].clone(), targets=[ClassifierOutputTarget(target)])[0]


def _scaled(model, factor):
    scaled = copy.deepcopy(model)
    with torch.no_grad():
        scaled.head.weight.mul_(factor)
        scaled.head.bias.mul_(factor)
    return scaled


@pytest.mark.parametrize("target", [0, 1, 2])
def test_gradcam_pp_equals_the_reference_where_its_epsilon_is_negligible(vit, x, target):
    model = _scaled(vit, 1000.0)  # gradients about 0.1 to 1: 2 g^2 dwarfs the reference's 1e-6
    ours = engine.explain(model, x, "gradcam++", target=target)
    assert ours.extras["layer"] == "blocks.1.norm1"
    assert _pearson(ours.map, _reference(model, x, target)) > 0.9999


def test_at_the_natural_scale_the_only_difference_is_the_reference_epsilon(vit, x):
    progress, cancel = resolve(None, None)
    cap = capture(vit, x, 2, GradCamParams(), progress, cancel, "gradcam++", gradient=True)
    feature, grad = cap.feature.double(), cap.grad.double()
    assert grad.abs().max() < 1e-2  # LayerNorm outputs of a ViT: small gradients
    total = feature.sum(dim=(1, 2), keepdim=True)

    def cam(eps):
        alpha = grad**2 / (2 * grad**2 + total * grad**3 + eps)
        weights = (alpha * torch.relu(grad)).sum(dim=(1, 2))
        raw = torch.relu(torch.einsum("k,khw->hw", weights, feature))
        return F.interpolate(raw[None, None], size=(32, 32), mode="bilinear", align_corners=False)[0, 0].numpy()

    ours = engine.explain(vit, x, "gradcam++", target=2)
    reference = _reference(vit, x, 2)
    # Ours is eq. 19 exactly; the reference is eq. 19 with its eps, to float precision.
    assert _pearson(ours.map, cam(0.0)) > 0.999999
    assert _pearson(reference, cam(REFERENCE_EPS)) > 0.999999
    # ... and that eps alone is what moves the reference away from eq. 19 here.
    assert _pearson(ours.map, reference) < 0.98
