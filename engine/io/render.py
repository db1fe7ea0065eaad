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


FIGURE_FORMATS = ("png", "svg", "pdf")
MASK_COLOUR = "#28e65a"  # the GUI's mask outline


def panel_levels(saliency: np.ndarray) -> tuple[float, float]:
    """Colour limits of one map: symmetric about zero when signed, its range otherwise (as on screen)."""
    finite = saliency[np.isfinite(saliency)]
    if not finite.size:
        return 0.0, 1.0
    low, high = float(finite.min()), float(finite.max())
    if low < 0 < high:
        return -max(-low, high), max(-low, high)
    return (low, high) if high > low else (low, low + 1.0)


def save_figure(path: str | Path, panels: list[dict], dpi: int = 200, alpha: float = 0.6, title: str = "") -> None:
    """Maps as a publication figure (PNG at ``dpi``, SVG or PDF by the file's suffix).

    Each panel is a dict: ``map`` (H x W), optional ``image`` (H x W x C in [0, 1], drawn in grey
    under the map), ``mask`` (boolean H x W, drawn as an outline), ``title``, ``label`` (the colour
    bar's), ``levels`` ((low, high); default :func:`panel_levels`) and ``colormap`` (a matplotlib
    name; None or "auto" chooses by the sign). Every panel has its own colour bar with at most six
    ticks. matplotlib's object API is used, never pyplot, so no global figure state is touched.
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    path = Path(path)
    kind = path.suffix.lower().lstrip(".")
    if kind not in FIGURE_FORMATS:
        raise UserError(f"{path.name}: a figure is saved as {', '.join('.' + k for k in FIGURE_FORMATS)}")
    if not panels:
        raise UserError("no map to draw")
    columns = min(len(panels), 3)
    rows = -(-len(panels) // columns)
    figure = Figure(figsize=(4.0 * columns, 3.7 * rows + (0.3 if title else 0.0)), layout="constrained")
    for index, panel in enumerate(panels):
        axes = figure.add_subplot(rows, columns, index + 1)
        saliency = np.asarray(panel["map"], dtype=np.float32)
        image = panel.get("image")
        if image is not None:
            gray = image.mean(axis=2) if image.ndim == 3 else image
            axes.imshow(gray, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        low, high = panel.get("levels") or panel_levels(saliency)
        shown = axes.imshow(saliency, cmap=colormap_name(panel.get("colormap"), low < 0 < high), vmin=low, vmax=high, alpha=alpha if image is not None else 1.0, interpolation="nearest")
        mask = panel.get("mask")
        if mask is not None and mask.shape == saliency.shape and mask.any() and not mask.all():
            axes.contour(mask.astype(np.float32), levels=[0.5], colors=MASK_COLOUR, linewidths=1.2)
        axes.set_title(panel.get("title", ""), fontsize=9)
        axes.set_axis_off()
        bar = figure.colorbar(shown, ax=axes, shrink=0.85)
        bar.locator = MaxNLocator(nbins=5)
        bar.update_ticks()
        bar.set_label(panel.get("label", "map value"), fontsize=8)
        bar.ax.tick_params(labelsize=7)
    if title:
        figure.suptitle(title, fontsize=11)
    figure.savefig(path, dpi=dpi, format=kind)
