"""The model panel's layer tree shows the grid of token layers (a ViT's blocks) and channels-last maps."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from PySide6.QtCore import Qt

from engine.models.summary import conv_layers, summarize
from gui.panels.model_panel import ModelPanel
from gui.workspace import ModelState


def test_the_layer_tree_shows_the_token_grid_of_vit_blocks(qtbot):
    import timm

    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=3).eval()
    layers = summarize(vit, (3, 32, 32))
    loaded = SimpleNamespace(module=vit, num_classes=3, notes=[], spec="timm:vit_tiny_patch16_224", source="timm, random init")
    panel = ModelPanel()
    qtbot.addWidget(panel)
    panel.show_model(ModelState(loaded, layers, conv_layers(layers), (3, 32, 32)))
    rows = {item.data(0, Qt.ItemDataRole.UserRole): item.text(2) for item in panel.tree.findItems("*", Qt.MatchFlag.MatchWildcard | Qt.MatchFlag.MatchRecursive)}
    assert rows["blocks.1.norm1"].endswith("(tokens on a 4 x 4 grid, 1 prefix token dropped)")
    assert "17" in rows["blocks.1.norm1"]  # 1 class token + 16 patch tokens
    assert "grid" not in rows["patch_embed.proj"] and "grid" not in rows["head"]
