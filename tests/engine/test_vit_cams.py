"""Class-activation maps on vision transformers: token sequences and channels-last maps reshaped to
their grid, the default layer per family, and known answers (a transformer whose head reads one
token region; pytorch-grad-cam with its documented reshape functions)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

import engine
from engine.core.errors import UserError
from engine.models.layers import default_cam_layer, get_layer
from engine.models.summary import summarize
from engine.models.tokens import MapLayout, layout_of, token_grid

CAMS = ("gradcam", "gradcam++", "layercam", "xgradcam", "hirescam", "scorecam", "ablationcam")


class RegionTokenTransformer(nn.Module):
    """A one-block transformer on a 4 x 4 grid of patch tokens, with a class and a register token.

    The input is masked to the patches of rows r0:r1 and columns c0:c1 of the grid; the patch
    embedding and the attention have no bias and the norm no affine part, so every token outside
    the region is exactly zero up to the block's norm; the head reads the mean of the region's
    tokens after the block. Every CAM of ``blocks.0.norm1`` must therefore be zero outside the region.
    """

    def __init__(self, region=(1, 3, 2, 4), patch: int = 4, dim: int = 8, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.region = region
        r0, r1, c0, c1 = region
        mask = torch.zeros(1, 1, 4 * patch, 4 * patch)
        mask[..., r0 * patch:r1 * patch, c0 * patch:c1 * patch] = 1
        self.register_buffer("mask", mask)
        self.patch_embed = nn.Conv2d(3, dim, patch, patch, bias=False)
        self.prefix = nn.Parameter(torch.randn(1, 2, dim))
        block = nn.Module()
        block.norm1 = nn.LayerNorm(dim, elementwise_affine=False)
        block.attn = nn.MultiheadAttention(dim, 2, bias=False, batch_first=True)
        self.blocks = nn.ModuleList([block])
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        tokens = self.patch_embed(x * self.mask).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.prefix.expand(len(x), -1, -1), tokens], dim=1)
        block = self.blocks[0]
        normed = block.norm1(tokens)
        attended, _ = block.attn(normed, normed, normed, need_weights=False)
        tokens = tokens + attended
        grid = tokens[:, 2:].transpose(1, 2).reshape(len(x), -1, 4, 4)
        r0, r1, c0, c1 = self.region
        return self.head(grid[:, :, r0:r1, c0:c1].mean(dim=(2, 3)))


def _input(shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _frozen(model):
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


@pytest.fixture(scope="module")
def region_transformer():
    return _frozen(RegionTokenTransformer())


@pytest.fixture(scope="module")
def timm_vit():
    import timm

    torch.manual_seed(0)
    return _frozen(timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=3))


@pytest.fixture(scope="module")
def timm_swin():
    import timm

    torch.manual_seed(0)
    return _frozen(timm.create_model("swin_tiny_patch4_window7_224", img_size=32, patch_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 1), window_size=4, num_classes=3))


def test_token_grids_drop_class_distillation_and_register_tokens():
    assert token_grid(197, (224, 224)) == ((14, 14), 1)
    assert token_grid(198, (224, 224)) == ((14, 14), 2)  # DeiT: class and distillation tokens
    assert token_grid(201, (224, 224)) == ((14, 14), 5)  # DINOv2 with four registers
    assert token_grid(49, (224, 224)) == ((7, 7), 0)  # Hugging Face Swin: no class token
    assert token_grid(281, (224, 320)) == ((14, 20), 1)  # a non-square input
    assert layout_of((1, 7, 7, 768), (224, 224)) == MapLayout("nhwc", (7, 7))
    assert layout_of((1, 512, 7, 7), (224, 224)) == MapLayout("nchw", (7, 7))
    assert layout_of((1, 1000), (224, 224)) is None


@pytest.mark.parametrize("layout", [MapLayout("tokens", (2, 3), 1), MapLayout("nhwc", (2, 3)), MapLayout("nchw", (2, 3))])
def test_maps_go_back_to_the_layer_layout(layout):
    maps = torch.randn(1, 4, 2, 3)
    template = torch.randn(1, 7, 4) if layout.kind == "tokens" else None
    output = layout.from_maps(maps, template)
    assert torch.equal(layout.to_maps(output), maps)
    if layout.kind == "tokens":
        assert torch.equal(output[:, :1], template[:, :1])


def test_default_layer_is_the_last_blocks_first_norm(region_transformer):
    assert default_cam_layer(region_transformer, (3, 16, 16)) == "blocks.0.norm1"


@pytest.mark.parametrize("method", CAMS)
def test_cam_mass_falls_in_the_region_the_head_reads(method, region_transformer):
    params = {"batch_size": 8} if method in ("scorecam", "ablationcam") else {}
    result = engine.explain(region_transformer, _input((3, 16, 16)), method, target=1, params=params)
    raw = np.abs(result.extras["raw_map"])
    assert raw.shape == (4, 4)
    r0, r1, c0, c1 = region_transformer.region
    inside = raw[r0:r1, c0:c1].sum()
    assert inside > 0
    assert raw.sum() - inside <= 1e-6 * inside
    assert "2 prefix tokens dropped" in result.extras["layer_layout"]


def _pearson(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def _vit_reshape(tensor, height=4, width=4):
    """pytorch-grad-cam's documented reshape_transform for ViT (tutorials/vision_transformers.md)."""
    result = tensor[:, 1:, :].reshape(tensor.size(0), height, width, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def _swin_reshape(tensor):
    """The Swin reshape for timm versions whose stages output B x H x W x C: channels first."""
    return tensor.permute(0, 3, 1, 2)


def _reference(model, layer, x, target, reshape):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    copied = copy.deepcopy(model)
    for p in copied.parameters():
        p.requires_grad_(True)
    with GradCAM(model=copied, target_layers=[get_layer(copied, layer)], reshape_transform=reshape) as cam:
        return cam(input_tensor=x[None].clone(), targets=[ClassifierOutputTarget(target)])[0]


def test_gradcam_on_a_timm_vit_equals_pytorch_grad_cam(timm_vit):
    x = _input((3, 32, 32), seed=1)
    ours = engine.explain(timm_vit, x, "gradcam", target=2)
    assert ours.extras["layer"] == "blocks.1.norm1"
    reference = _reference(timm_vit, "blocks.1.norm1", x, 2, _vit_reshape)
    assert _pearson(ours.map, reference) > 0.999


def test_gradcam_on_a_timm_swin_equals_pytorch_grad_cam(timm_swin):
    x = _input((3, 32, 32), seed=2)
    ours = engine.explain(timm_swin, x, "gradcam", target=0)
    assert ours.extras["layer"] == "norm" and ours.extras["layer_layout"].startswith("channels-last")
    reference = _reference(timm_swin, "norm", x, 0, _swin_reshape)
    assert _pearson(ours.map, reference) > 0.999


def test_any_block_can_be_named_and_its_tokens_are_reshaped(timm_vit):
    result = engine.explain(timm_vit, _input((3, 32, 32)), "hirescam", params={"layer": "blocks.0"})
    assert result.extras["raw_map"].shape == (4, 4)
    assert result.extras["activations"].shape == (32, 4, 4)


def _tiny_families():
    from torchvision.models import SwinTransformer, VisionTransformer
    from transformers import SwinConfig, SwinForImageClassification, ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    return {
        "torchvision vit": (VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=3), "encoder.layers.encoder_layer_1.ln_1"),
        "torchvision swin": (SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 1], window_size=[4, 4], num_classes=3), "norm"),
        "hf vit": (
            ViTForImageClassification(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, num_labels=3)),
            "1.layernorm_before",
        ),
        "hf swin": (SwinForImageClassification(SwinConfig(image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 1], window_size=4, num_labels=3)), "swin.layernorm"),
    }


def test_default_layers_and_maps_of_torchvision_and_hugging_face_transformers():
    for name, (model, layer) in _tiny_families().items():
        model = _frozen(model)
        chosen = default_cam_layer(model, (3, 32, 32))
        assert chosen.endswith(layer), name
        result = engine.explain(model, _input((3, 32, 32)), "layercam", target=1)
        assert result.map.shape == (32, 32) and np.isfinite(result.map).all(), name
        # 32 / 8 for ViT; 32 / 4 patches merged once by Swin's second stage
        assert result.extras["raw_map"].shape == (4, 4) and result.extras["activations"].shape[1:] == (4, 4), name


def test_summary_marks_token_layers_with_their_grid(timm_vit):
    layers = {layer.name: layer for layer in summarize(timm_vit, (3, 32, 32))}
    assert layers["blocks.1.norm1"].grid == "tokens on a 4 x 4 grid, 1 prefix token dropped"
    assert layers["patch_embed.proj"].grid == "4 x 4 map"
    assert layers["head"].grid is None


def test_a_layer_after_the_pooling_is_a_user_error(timm_vit):
    with pytest.raises(UserError, match="shape"):
        engine.explain(timm_vit, _input((3, 32, 32)), "gradcam", params={"layer": "fc_norm"})
