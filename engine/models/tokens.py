"""Layer outputs of any shape as feature maps C x h x w: the one place where token sequences of
vision transformers and channels-last maps (Swin) are turned into the grid a class-activation map
needs, and back (for methods that edit a layer's output, such as Ablation-CAM).

* N x C x h x w (a convolution): as it is.
* N x h x w x C (Swin's stages and norms in timm and torchvision): permuted to channels first.
* N x T x C (the tokens of a ViT, DeiT, BEiT, or of Hugging Face's Swin): the first T - h w tokens
  (class, distillation and register tokens) are dropped and the rest reshaped to h x w, with
  h / w the input's aspect ratio (Dosovitskiy et al., ICLR 2021: patch tokens in raster order).

Which axis is which is read from the input's size: the spatial axes of a map are the two whose
sizes divide the input's height and width by the same stride.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.core.errors import UserError

# Class, distillation and register tokens a ViT may put before its patch tokens (DINOv2 with
# registers has 1 + 4; a few models use 8 registers).
MAX_PREFIX_TOKENS = 16


@dataclass(frozen=True)
class MapLayout:
    """How a layer's output (batch first) maps to C x h x w feature maps."""

    kind: str  # "nchw", "nhwc" or "tokens"
    grid: tuple[int, int]
    prefix: int = 0  # tokens before the patch tokens (kind "tokens")

    def describe(self) -> str:
        h, w = self.grid
        if self.kind == "tokens":
            dropped = f", {self.prefix} prefix token{'s' if self.prefix != 1 else ''} dropped" if self.prefix else ""
            return f"tokens on a {h} x {w} grid{dropped}"
        if self.kind == "nhwc":
            return f"channels-last {h} x {w} map"
        return f"{h} x {w} map"

    def to_maps(self, output: torch.Tensor) -> torch.Tensor:
        """B x C x h x w from the layer's output."""
        h, w = self.grid
        if self.kind == "nhwc":
            return output.permute(0, 3, 1, 2)
        if self.kind == "tokens":
            patches = output[:, self.prefix:, :]
            return patches.transpose(1, 2).reshape(output.shape[0], output.shape[2], h, w)
        return output

    def from_maps(self, maps: torch.Tensor, template: torch.Tensor) -> torch.Tensor:
        """The layer's output with its grid part replaced by ``maps`` (B x C x h x w); the prefix
        tokens are taken from ``template`` (one output, batch 1)."""
        if self.kind == "nhwc":
            return maps.permute(0, 2, 3, 1).contiguous()
        if self.kind == "tokens":
            tokens = maps.flatten(2).transpose(1, 2)
            prefix = template[:, : self.prefix, :].expand(maps.shape[0], -1, -1).to(tokens.dtype)
            return torch.cat([prefix, tokens], dim=1)
        return maps


def _strides_agree(h: int, w: int, size: tuple[int, int]) -> bool:
    """True when an h x w grid can cover an H x W input with one stride on both axes: a map of
    stride s has about H / s rows (give or take one for padding and rounding)."""
    height, width = size
    if h < 1 or w < 1 or h > height or w > width:
        return False
    low = max(height / (h + 1), width / (w + 1))
    high = min(height / max(h - 1, 0.5), width / max(w - 1, 0.5))
    return low <= high


def token_grid(tokens: int, size: tuple[int, int]) -> tuple[tuple[int, int], int] | None:
    """The h x w patch grid and the number of prefix tokens of a sequence of ``tokens`` tokens
    from an input of ``size`` (H, W); None when no grid with at most MAX_PREFIX_TOKENS fits."""
    height, width = size
    for prefix in range(0, min(MAX_PREFIX_TOKENS, tokens - 1) + 1):
        count = tokens - prefix
        # h / w = H / W, so h = sqrt(count * H / W)
        guess = round((count * height / width) ** 0.5)
        for h in (guess - 1, guess, guess + 1):
            if h >= 1 and count % h == 0 and _strides_agree(h, count // h, size) and (h > 1 or count // h > 1):
                return (h, count // h), prefix
    return None


def layout_of(shape: tuple[int, ...], size: tuple[int, int], channels_last_hint: bool = False, strict: bool = False) -> MapLayout | None:
    """The layout of a layer output of ``shape`` (batch first) for an input of ``size`` (H, W), or
    None when it is not a spatial map or token sequence (a pooled vector, logits). Any other 4-D
    output is read as channels first unless ``strict``, which asks its grid to fit the input (so
    that attention's heads x tokens x features are not taken for a map)."""
    if len(shape) == 4:
        _, a, b, c = shape
        first = _strides_agree(b, c, size)
        last = _strides_agree(a, b, size) and (a > 1 or b > 1)
        if last and (not first or channels_last_hint):
            return MapLayout("nhwc", (a, b))
        return MapLayout("nchw", (b, c)) if first or not strict else None
    if len(shape) == 3 and shape[2] >= 2 and shape[1] >= 2:
        found = token_grid(shape[1], size)
        if found is not None:
            return MapLayout("tokens", found[0], found[1])
    return None


def feature_map(activation: torch.Tensor | None, layer_name: str, method: str, size: tuple[int, int], channels_last_hint: bool = False, rows: int = 1) -> tuple[torch.Tensor, MapLayout]:
    """The recorded activation of a batch of ``rows`` inputs as rows x C x h x w (still in the
    autograd graph), and the layout it came from."""
    if activation is None:
        raise UserError(f"layer '{layer_name}' did not run during the forward pass; choose a layer the model uses")
    if activation.shape[0] != rows:
        raise UserError(f"layer '{layer_name}' outputs shape {tuple(activation.shape)}; {method} needs one feature map per input")
    layout = layout_of(tuple(activation.shape), size, channels_last_hint)
    if layout is None:
        raise UserError(
            f"layer '{layer_name}' outputs shape {tuple(activation.shape)}; {method} needs a feature map (N x C x h x w, "
            "N x h x w x C) or a sequence of patch tokens (N x tokens x C); `main.py info --model ...` lists the layers"
        )
    return layout.to_maps(activation), layout
