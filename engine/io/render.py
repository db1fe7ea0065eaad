"""Drawing a map over its image as a PNG for files and reports (the GUI draws with pyqtgraph)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

# Colour anchors (position, R, G, B). A dark-to-bright sequential ramp for maps of one sign and a
# blue-white-red diverging ramp for signed maps, so that zero is white and signs are distinct.
_SEQUENTIAL = np.array(
    [
        (0.00, 0.00, 0.00, 0.02),
        (0.25, 0.34, 0.06, 0.43),
        (0.50, 0.73, 0.21, 0.33),
        (0.75, 0.98, 0.55, 0.04),
        (1.00, 0.99, 1.00, 0.64),
    ]
)
_DIVERGING = np.array(
    [
        (0.00, 0.02, 0.19, 0.38),
        (0.25, 0.26, 0.58, 0.76),
        (0.50, 0.97, 0.97, 0.97),
        (0.75, 0.84, 0.38, 0.30),
        (1.00, 0.40, 0.00, 0.12),
    ]
)


def colormap(values: np.ndarray, diverging: bool) -> np.ndarray:
    """Map values in [0, 1] to RGB in [0, 1] (H x W x 3)."""
    table = _DIVERGING if diverging else _SEQUENTIAL
    values = np.clip(np.nan_to_num(values, nan=0.5 if diverging else 0.0), 0.0, 1.0)
    return np.stack([np.interp(values, table[:, 0], table[:, c]) for c in (1, 2, 3)], axis=-1)


def normalise_for_display(saliency: np.ndarray) -> tuple[np.ndarray, bool]:
    """Scale a map to [0, 1] for display: symmetric about zero when signed, min-max otherwise."""
    finite = saliency[np.isfinite(saliency)]
    if not finite.size:
        return np.zeros_like(saliency, dtype=np.float32), False
    low, high = float(finite.min()), float(finite.max())
    if low < 0 < high:
        bound = max(-low, high)
        return (saliency / (2 * bound) + 0.5).astype(np.float32), True
    if high > low:
        return ((saliency - low) / (high - low)).astype(np.float32), False
    return np.zeros_like(saliency, dtype=np.float32), False


def overlay(image: np.ndarray, saliency: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The map in colour blended over a grey copy of the image; uint8 H x W x 3."""
    if image.ndim == 2:
        image = image[:, :, None]
    gray = image.mean(axis=2, keepdims=True) if image.shape[2] > 1 else image
    gray = np.repeat(gray, 3, axis=2)
    scaled, diverging = normalise_for_display(saliency)
    colours = colormap(scaled, diverging)
    if gray.shape[:2] != colours.shape[:2]:
        gray = np.asarray(Image.fromarray((gray * 255).astype(np.uint8)).resize(colours.shape[1::-1], Image.BILINEAR), dtype=np.float32) / 255.0
    blended = (1 - alpha) * gray + alpha * colours
    return (np.clip(blended, 0, 1) * 255 + 0.5).astype(np.uint8)


def save_overlay(path: str | Path, image: np.ndarray, saliency: np.ndarray, alpha: float = 0.55) -> None:
    Image.fromarray(overlay(image, saliency, alpha)).save(path)
