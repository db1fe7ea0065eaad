"""The map views' colour maps: matplotlib's, by the names engine/io/render.py renders PNGs with.

pyqtgraph's own ``getFromMatplotlib`` rebuilds segmented maps (RdBu_r, coolwarm, gray) from their
segment data and lands one level off matplotlib in places; built from matplotlib's sampled table
instead, a view's lookup table is exactly the colours of an exported picture.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import pyqtgraph as pg

from engine.core.vocab import COLORMAPS, DIVERGING_COLORMAP, SEQUENTIAL_COLORMAP

# The colorcet names older versions offered (and sessions saved), with the nearest matplotlib map:
# CET-D1 is a blue-white-red diverging map, CET-L1 a linear grey ramp.
LEGACY_COLORMAPS = {"CET-D1": "RdBu_r", "CET-L1": "gray"}
CHOICES = COLORMAPS
TIP = f"auto: {DIVERGING_COLORMAP} (diverging, white at zero) for signed maps, {SEQUENTIAL_COLORMAP} otherwise"


def choice_name(name: str) -> str:
    """A saved choice as one of today's names: legacy names map to their nearest match."""
    return LEGACY_COLORMAPS.get(name, name)


def resolve(name: str, signed: bool) -> str:
    """The matplotlib name a view draws with ("auto" picks by the sign, as the engine's renderer does)."""
    name = choice_name(name)
    if name == "auto":
        return DIVERGING_COLORMAP if signed else SEQUENTIAL_COLORMAP
    return name


@cache
def colormap(name: str) -> pg.ColorMap:
    """matplotlib's colour map ``name`` as a pyqtgraph ColorMap with one stop per table entry."""
    from matplotlib import colormaps  # imported on the first map drawn, not with the window

    table = colormaps[choice_name(name)]
    positions = np.linspace(0.0, 1.0, table.N)
    colours = np.round(table(positions) * 255).astype(np.uint8)
    return pg.ColorMap(positions, colours, name=name)


def nice_ticks(low: float, high: float, most: int = 6) -> list[float]:
    """At most ``most`` round tick values in [low, high]: a step of 1, 2, 2.5 or 5 times a power of ten."""
    if not (np.isfinite(low) and np.isfinite(high)) or high <= low:
        return [float(low)] if np.isfinite(low) else []
    raw = (high - low) / max(most - 1, 1)
    power = 10.0 ** np.floor(np.log10(raw))
    step = next(f * power for f in (1.0, 2.0, 2.5, 5.0, 10.0) if f * power >= raw * (1 - 1e-9))
    while True:
        first = np.ceil(low / step - 1e-9) * step
        ticks = [float(v) for v in np.arange(first, high + step * 1e-6, step)]
        if len(ticks) <= most:
            return [0.0 if abs(v) < step * 1e-9 else float(f"{v:.12g}") for v in ticks]
        step *= 2.0


def label_bar(bar, low: float, high: float, label: str) -> None:
    """A colour bar's axis: at most six round ticks and a label that says what the colours measure."""
    values = nice_ticks(low, high)
    bar.axis.enableAutoSIPrefix(False)  # the ticks carry the values themselves: no "(x0.001)" beside them
    bar.axis.setTicks([[(v, f"{v:.3g}") for v in values], []])
    bar.axis.setLabel(label)
