"""Drawing a map over its image as a PNG for files and reports (the GUI draws with pyqtgraph).

Colours come from matplotlib's colour maps, chosen by name (engine.core.vocab.COLORMAPS). The GUI
shows the same names through pyqtgraph, built from the same matplotlib tables, so an exported
picture has the colours seen on screen.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from engine.core.errors import UserError
from engine.core.vocab import COLORMAPS, DIVERGING_COLORMAP, SEQUENTIAL_COLORMAP


def colormap_name(name: str | None, diverging: bool) -> str:
    """The matplotlib name to draw with: ``None`` or "auto" picks the diverging map for signed maps."""
    if name in (None, "", "auto"):
        return DIVERGING_COLORMAP if diverging else SEQUENTIAL_COLORMAP
    return name


def _colours(values: np.ndarray, diverging: bool, name: str | None) -> np.ndarray:
    from matplotlib import colormaps  # imported here: slow to import, and most engine callers never render

    chosen = colormap_name(name, diverging)
    try:
        table = colormaps[chosen]
    except KeyError:
        raise UserError(f"unknown colour map '{chosen}': use one of {', '.join(COLORMAPS)} or another matplotlib name") from None
    # NaN has no colour of its own: it shows as zero would (the middle of a diverging map).
    values = np.clip(np.nan_to_num(np.asarray(values, dtype=np.float64), nan=0.5 if diverging else 0.0), 0.0, 1.0)
    return table(values)[..., :3]


def colormap(values: np.ndarray, diverging: bool, name: str | None = None) -> np.ndarray:
    """Map values in [0, 1] to RGB in [0, 1] (H x W x 3) with the matplotlib colour map ``name``
    (None or "auto": DIVERGING_COLORMAP when ``diverging``, else SEQUENTIAL_COLORMAP)."""
    return _colours(values, diverging, name)


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


def overlay(image: np.ndarray, saliency: np.ndarray, alpha: float = 0.55, colormap: str | None = None) -> np.ndarray:
    """The map in colour blended over a grey copy of the image; uint8 H x W x 3.

    ``colormap`` is a matplotlib name; None or "auto" picks one by the map's sign.
    """
    if image.ndim == 2:
        image = image[:, :, None]
    gray = image.mean(axis=2, keepdims=True) if image.shape[2] > 1 else image
    gray = np.repeat(gray, 3, axis=2)
    scaled, diverging = normalise_for_display(saliency)
    colours = _colours(scaled, diverging, colormap)
    if gray.shape[:2] != colours.shape[:2]:
        gray = np.asarray(Image.fromarray((gray * 255).astype(np.uint8)).resize(colours.shape[1::-1], Image.BILINEAR), dtype=np.float32) / 255.0
    blended = (1 - alpha) * gray + alpha * colours
    return (np.clip(blended, 0, 1) * 255 + 0.5).astype(np.uint8)


def save_overlay(path: str | Path, image: np.ndarray, saliency: np.ndarray, alpha: float = 0.55, colormap: str | None = None) -> None:
    Image.fromarray(overlay(image, saliency, alpha, colormap)).save(path)
