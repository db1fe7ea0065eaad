"""The one Gaussian blur of image batches (baselines of local and the metrics, actmax's regulariser),
and the one baseline image of the perturbation methods.

It equals ``scipy.ndimage.gaussian_filter(x, sigma, mode="nearest", truncate=3.0)`` over the two
spatial axes, so its result can be checked against a reference outside torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.core.errors import UserError

TRUNCATE = 3.0  # the kernel reaches 3 sigma on each side


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of an N x C x H x W batch; edges replicated; sigma <= 0 returns ``x``."""
    if sigma <= 0:
        return x
    radius = max(1, int(TRUNCATE * sigma + 0.5))  # scipy's rule for the kernel radius
    # The kernel is built in float64 on the CPU (Apple's MPS has no float64), then moved.
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = (kernel / kernel.sum()).to(device=x.device, dtype=x.dtype)
    channels = x.shape[1]
    # Replicate padding accepts any pad width, unlike reflect, so a large sigma on a small image works.
    out = F.pad(x, (radius, radius, 0, 0), mode="replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    out = F.pad(out, (0, 0, radius, radius), mode="replicate")
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def baseline_image(x: torch.Tensor, kind: str, blur_sigma: float, choices: tuple[str, ...] = ("zero", "mean", "blur")) -> torch.Tensor:
    """What perturbed pixels become: zeros, the image's per-channel means, or a blurred copy."""
    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.mean(dim=(2, 3), keepdim=True).expand_as(x).contiguous()
    if kind == "blur":
        return gaussian_blur(x, blur_sigma)
    raise UserError(f"unknown baseline '{kind}'; choose {', '.join(choices)}")
