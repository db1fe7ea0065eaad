"""Image parametrisations and robustness transforms for activation maximisation.

Images live in display space: N x C x H x W with every value in [0, 1]. A parametrisation owns the
tensors the optimiser updates (leaf tensors created here, never the model's parameters) and turns
them into a display-space image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The square root of the 3 x 3 colour correlation of ImageNet pixels (rows: R, G, B output colour;
# columns: decorrelated components), as published in the Lucid library (tensorflow/lucid,
# lucid/optvis/param/color.py, "color_correlation_svd_sqrt") that accompanies Olah, Mordvintsev and
# Schubert, "Feature Visualization", Distill 2017. Only the numbers are taken from there.
COLOR_CORRELATION_SQRT = ((0.26, 0.09, 0.02), (0.27, 0.00, -0.05), (0.27, -0.09, 0.03))

# How far the Fourier parametrisation keeps a start image from 0 and 1 so that its logit is finite.
_EPS = 1e-3


class PixelImage:
    """The pixels themselves, in display space, projected back into [0, 1] after every step."""

    def __init__(self, start: torch.Tensor) -> None:
        self.pixels = start.detach().clamp(0.0, 1.0).clone().requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.pixels]

    def image(self) -> torch.Tensor:
        """The display-space image (differentiable with respect to the parameters)."""
        return self.pixels

    def project(self) -> None:
        """Projected gradient ascent: clip back into the valid range after each update."""
        with torch.no_grad():
            self.pixels.clamp_(0.0, 1.0)

    def set_image(self, image: torch.Tensor) -> None:
        with torch.no_grad():
            self.pixels.copy_(image.clamp(0.0, 1.0))


class FourierImage:
    """A decorrelated Fourier parametrisation (Olah et al. 2017, "Feature Visualization", Distill).

    The parameters are the 2-D real FFT coefficients of each channel. They are multiplied by
    1 / frequency (frequency in cycles per image along the longer side, at least 1) so that a step
    of the same size on every coefficient changes low frequencies most, which whitens the gradient
    of natural-image-like objectives. For 3-channel images the inverse FFT is mapped through the
    ImageNet colour-correlation square root (normalised by its largest column norm, as in Lucid),
    so that the parameters are decorrelated colour components. A sigmoid then maps into (0, 1); its
    per-channel offset is the logit of the mean colour, so all-zero coefficients give the mean colour.
    """

    def __init__(self, start: torch.Tensor, mean_colour: torch.Tensor, noise_std: float | None = None) -> None:
        n, channels, height, width = start.shape
        self.size = (height, width)
        device, dtype = start.device, start.dtype
        fy = torch.fft.fftfreq(height, device=device, dtype=dtype)[:, None]
        fx = torch.fft.rfftfreq(width, device=device, dtype=dtype)[None, :]
        cycles = torch.sqrt(fy**2 + fx**2) * max(height, width)
        self.scale = 1.0 / cycles.clamp(min=1.0)
        if channels == 3:
            matrix = torch.tensor(COLOR_CORRELATION_SQRT, device=device, dtype=dtype)
            self.colour = matrix / matrix.norm(dim=0).max()
        else:
            self.colour = torch.eye(channels, device=device, dtype=dtype)
        self.offset = torch.logit(mean_colour.reshape(1, channels, 1, 1).clamp(_EPS, 1.0 - _EPS))
        self.coefficients = torch.zeros((n, channels, height, width // 2 + 1, 2), device=device, dtype=dtype)
        if noise_std is not None:
            self.coefficients.normal_(0.0, noise_std)
        else:
            self.set_image(start)
        self.coefficients.requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.coefficients]

    def _mix(self, image: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        return torch.einsum("oc,nchw->nohw", matrix, image)

    def image(self) -> torch.Tensor:
        """The display-space image: sigmoid(colour @ irfft2(scale * coefficients) + offset)."""
        spectrum = torch.view_as_complex(self.coefficients) * self.scale
        linear = torch.fft.irfft2(spectrum, s=self.size, norm="ortho")
        return torch.sigmoid(self._mix(linear, self.colour) + self.offset)

    def project(self) -> None:
        """Nothing to do: the sigmoid keeps every image inside (0, 1)."""

    def set_image(self, image: torch.Tensor) -> None:
        """Set the coefficients so that :meth:`image` gives ``image`` (clipped away from 0 and 1)."""
        with torch.no_grad():
            linear = torch.logit(image.clamp(_EPS, 1.0 - _EPS)) - self.offset
            linear = self._mix(linear, torch.linalg.inv(self.colour))
            spectrum = torch.fft.rfft2(linear, norm="ortho") / self.scale
            self.coefficients.copy_(torch.view_as_real(spectrum))


def total_variation(image: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation per image: mean |vertical difference| + mean |horizontal difference|."""
    vertical = (image[..., 1:, :] - image[..., :-1, :]).abs().flatten(1).mean(1) if image.shape[-2] > 1 else image.new_zeros(image.shape[0])
    horizontal = (image[..., :, 1:] - image[..., :, :-1]).abs().flatten(1).mean(1) if image.shape[-1] > 1 else image.new_zeros(image.shape[0])
    return vertical + horizontal


def jitter(image: torch.Tensor, pixels: int) -> torch.Tensor:
    """Roll the batch by a random shift of up to ``pixels`` in each direction (torch's global CPU RNG)."""
    if pixels <= 0:
        return image
    dy, dx = (int(v) for v in torch.randint(-pixels, pixels + 1, (2,)))
    return torch.roll(image, shifts=(dy, dx), dims=(-2, -1))


def random_rescale(image: torch.Tensor, amount: float) -> torch.Tensor:
    """Rescale by a random factor in [1 - amount, 1 + amount], then crop or zero-pad back to the size.

    The image given here is already normalised, so zero padding is the mean colour.
    """
    if amount <= 0:
        return image
    height, width = image.shape[-2:]
    factor = 1.0 + (2.0 * float(torch.rand(())) - 1.0) * amount
    new_h, new_w = max(1, round(height * factor)), max(1, round(width * factor))
    if (new_h, new_w) == (height, width):
        return image
    resized = F.interpolate(image, size=(new_h, new_w), mode="bilinear", align_corners=False)
    # Negative padding crops, so one pad call centres both the larger and the smaller case.
    dh, dw = height - new_h, width - new_w
    return F.pad(resized, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))
