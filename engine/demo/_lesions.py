"""Lesions for the breast-ultrasound phantom (see engine/phantom.py).

Benign: a cyst (anechoic, thin bright wall, strong posterior enhancement) or a fibroadenoma
(oval, gently lobulated, homogeneous, mildly hypoechoic, sometimes with an echogenic
pseudo-capsule). Both circumscribed and wider than tall, with edge shadows at their sides.

Malignant: taller than wide, irregular (angular, micro-lobulated) and often spiculated margin,
indistinct edge, heterogeneous and markedly hypoechoic interior with microcalcifications in some,
an echogenic halo in some, and posterior acoustic shadowing.

The posterior effect follows the path the beam travels through the lesion, column by column, so it
is strongest below the lesion's thickest part and starts at its far wall; it is not in the mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from engine.demo._tissue import Tissue, smooth_noise


@dataclass
class Lesion:
    weight: np.ndarray  # H x W soft membership in [0, 1]; the mask is weight >= 0.5
    reflectivity: np.ndarray  # H x W amplitude inside the lesion
    rim: np.ndarray  # H x W extra amplitude at the margin (wall, capsule, halo), outside the mask
    posterior: np.ndarray  # H x W amplitude factor below the lesion (enhancement > 1, shadow < 1)
    kind: str  # "cyst", "fibroadenoma" or "carcinoma"

    @property
    def mask(self) -> np.ndarray:
        return self.weight >= 0.5


@dataclass
class _Shape:
    a: float  # semi-axis along the orientation (pixels)
    b: float  # semi-axis across it
    theta: float  # orientation (radians, 0 = horizontal)
    harmonics: np.ndarray  # rows (order, amplitude, phase) of the margin's radial modulation
    spicules: np.ndarray  # rows (angle, length in pixels, width in pixels)
    edge: float  # width of the soft margin in pixels

    def radius(self, phi: np.ndarray) -> np.ndarray:
        u = phi - self.theta
        r = 1.0 / np.sqrt((np.cos(u) / self.a) ** 2 + (np.sin(u) / self.b) ** 2)
        modulation = np.ones_like(u)
        for order, amplitude, phase in self.harmonics:
            modulation += amplitude * np.cos(order * u + phase)
        return r * modulation

    def radius_at(self, phi: np.ndarray) -> np.ndarray:
        """``radius`` looked up in a fine table of angles: the same outline, far cheaper on a grid."""
        table = np.linspace(-np.pi, np.pi, 2049)
        return np.interp(phi, table, self.radius(table))

    def scaled(self, factor: float) -> _Shape:
        spicules = self.spicules * np.array([1.0, factor, 1.0]) if len(self.spicules) else self.spicules
        return _Shape(self.a * factor, self.b * factor, self.theta, self.harmonics, spicules, self.edge)

    def extent(self) -> tuple[float, float, float, float]:
        """(left, right, top, bottom) offsets of the outline from the centre, spicules included."""
        phi = np.linspace(-np.pi, np.pi, 720, endpoint=False)
        r = self.radius(phi) + self.edge
        xs, ys = list(r * np.cos(phi)), list(r * np.sin(phi))
        for angle, length, width in self.spicules:
            reach = self.radius(np.array([angle]))[0] + length + width
            xs.append(reach * np.cos(angle))
            ys.append(reach * np.sin(angle))
        return min(xs), max(xs), min(ys), max(ys)

    def weight(self, dy: np.ndarray, dx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Soft membership of the pixels at these offsets from the centre, and their distance outside
        the body's outline (0 inside)."""
        d = np.hypot(dy, dx)
        outside = d - self.radius_at(np.arctan2(dy, dx))
        weight = np.clip(0.5 - outside / self.edge, 0.0, 1.0)
        for angle, length, width in self.spicules:
            start = 0.8 * self.radius(np.array([angle]))[0]
            ux, uy = np.cos(angle), np.sin(angle)
            t = np.clip((dx * ux + dy * uy - start) / length, 0.0, 1.0)
            dist = np.hypot(dx - (start + t * length) * ux, dy - (start + t * length) * uy)
            half = width * (1.0 - 0.75 * t)
            weight = np.maximum(weight, np.clip((half - dist) / 0.7 + 0.5, 0.0, 1.0))
        return weight, np.clip(outside, 0.0, None)


def _harmonics(rng: np.random.Generator, orders, amplitude: float) -> np.ndarray:
    rows = [(k, amplitude * rng.uniform(0.3, 1.0) / np.sqrt(k), rng.uniform(0, 2 * np.pi)) for k in orders]
    return np.array(rows, dtype=np.float64).reshape(-1, 3)


def _benign_shape(rng: np.random.Generator, scale: float, cyst: bool) -> _Shape:
    a = rng.uniform(0.075, 0.16) * scale
    ratio = rng.uniform(0.55, 0.8) if cyst else rng.uniform(0.42, 0.72)
    theta = rng.uniform(-0.3, 0.3)
    lobes = _harmonics(rng, (2, 3, 4), 0.015 if cyst else rng.uniform(0.03, 0.08))
    return _Shape(a, a * ratio, theta, lobes, np.zeros((0, 3)), max(0.5, 0.45 * scale / 128))


def _malignant_shape(rng: np.random.Generator, scale: float) -> _Shape:
    tall = rng.uniform(0.09, 0.17) * scale
    ratio = rng.uniform(0.55, 0.8)
    # Orientation near vertical: the long axis crosses the tissue planes.
    theta = np.pi / 2 + rng.uniform(-0.3, 0.3)
    margin = np.vstack([_harmonics(rng, range(3, 8), rng.uniform(0.16, 0.3)), _harmonics(rng, range(9, 16), 0.09)])
    spicules = np.zeros((0, 3))
    if rng.random() < 0.65:
        count = rng.integers(4, 11)
        angles = rng.uniform(-np.pi, np.pi, count)
        lengths = rng.uniform(0.3, 0.75, count) * tall
        widths = rng.uniform(1.0, 1.6, count) * max(1.0, scale / 128)
        spicules = np.column_stack([angles, lengths, widths])
    return _Shape(tall, tall * ratio, theta, margin, spicules, max(0.8, 1.3 * scale / 128))


def _place(rng: np.random.Generator, shape: _Shape, tissue: Tissue, height: int, width: int) -> tuple[_Shape, float, float]:
    """A centre inside the glandular band with the whole outline clear of the image border and of the
    skin, and room below it for the posterior effect; the lesion shrinks until it fits."""
    border = max(3.0, 0.05 * width)
    top_limit = float(np.max(tissue.skin)) + 0.06 * height
    bottom_limit = 0.8 * height
    band_top, band_bottom = float(np.mean(tissue.gland_top)), float(np.mean(tissue.gland_bottom))
    u, v = rng.random(), rng.random()
    for _ in range(12):
        left, right, top, bottom = shape.extent()
        x_lo, x_hi = border - left, width - 1 - border - right
        y_lo = max(top_limit - top, band_top + 0.2 * (band_bottom - band_top))
        y_hi = min(bottom_limit - bottom, band_bottom - 0.2 * (band_bottom - band_top))
        if x_lo <= x_hi and y_lo <= y_hi:
            return shape, y_lo + u * (y_hi - y_lo), x_lo + v * (x_hi - x_lo)
        shape = shape.scaled(0.85)
    return shape, 0.5 * height, 0.5 * width


def _posterior(weight: np.ndarray, factor: float, spread: float) -> np.ndarray:
    """Amplitude factor that grows with the path length through the lesion above each pixel."""
    path = np.cumsum(weight, axis=0)
    thickest = float(path[-1].max())
    if thickest <= 0:
        return np.ones_like(weight)
    effect = gaussian_filter(np.log(factor) * path / thickest, (0.5, spread), mode="nearest")
    return np.exp(effect)


def _edge_shadows(weight: np.ndarray, depth: float, sigma: float) -> np.ndarray:
    """Thin refraction shadows below the lateral edges of a smooth, round lesion."""
    inside = weight >= 0.5
    columns = np.flatnonzero(inside.any(axis=0))
    out = np.zeros_like(weight)
    if len(columns) == 0:
        return np.ones_like(weight)
    centre_row = int(np.flatnonzero(inside.any(axis=1)).mean())
    out[centre_row:, [columns[0], columns[-1]]] = 1.0
    return 1.0 - depth * np.clip(gaussian_filter(out, (1.0, sigma), mode="nearest") * 2.5, 0.0, 1.0)


def lesion(rng: np.random.Generator, malignant: bool, tissue: Tissue) -> Lesion:
    height, width = tissue.reflectivity.shape
    scale = float(min(height, width))
    px = scale / 128
    gland = tissue.gland
    if malignant:
        kind = "carcinoma"
        shape = _malignant_shape(rng, scale)
    else:
        kind = "cyst" if rng.random() < 0.3 else "fibroadenoma"
        shape = _benign_shape(rng, scale, kind == "cyst")
    shape, cy, cx = _place(rng, shape, tissue, height, width)

    # Work in a window around the lesion (its halo and the blur of its shadow included); the
    # posterior effect takes the window's columns down to the bottom of the image.
    left, right, top, bottom = shape.extent()
    pad = int(np.ceil(max(8.0, 10.0 * px)))
    r0, r1 = max(0, int(np.floor(cy + top)) - pad), min(height, int(np.ceil(cy + bottom)) + pad + 1)
    c0, c1 = max(0, int(np.floor(cx + left)) - pad), min(width, int(np.ceil(cx + right)) + pad + 1)
    window = (slice(r0, r1), slice(c0, c1))
    dy = np.arange(r0, r1, dtype=np.float64)[:, None] - cy
    dx = np.arange(c0, c1, dtype=np.float64)[None, :] - cx
    weight, outside = shape.weight(dy, dx)
    off = weight < 0.5

    if kind == "cyst":
        level = np.full_like(weight, gland * rng.uniform(0.01, 0.04))
        rim = 0.9 * gland * np.exp(-((outside / (0.9 * px)) ** 2)) * off
        factor, spread, edge_shadow = rng.uniform(1.9, 2.8), 0.8 * px, rng.uniform(0.3, 0.6)
    elif kind == "fibroadenoma":
        level = gland * rng.uniform(0.08, 0.18) * (1.0 + 0.12 * smooth_noise(rng, weight.shape, 1.5 * px))
        capsule = rng.uniform(0.3, 0.9) if rng.random() < 0.5 else 0.0
        rim = capsule * gland * np.exp(-((outside / (1.0 * px)) ** 2)) * off
        factor, spread = rng.uniform(1.35, 2.0), 0.8 * px
        edge_shadow = rng.uniform(0.2, 0.5) if rng.random() < 0.5 else 0.0
    else:
        level = gland * rng.uniform(0.06, 0.13) * np.exp(0.6 * smooth_noise(rng, weight.shape, 1.3 * px))
        if rng.random() < 0.5:  # microcalcifications: punctate bright echoes
            count = rng.integers(2, 8)
            inside = np.flatnonzero(weight.ravel() >= 0.9)
            if len(inside):
                spots = rng.choice(inside, size=min(count, len(inside)), replace=False)
                level.ravel()[spots] = gland * rng.uniform(2.0, 3.5, len(spots))
        halo = rng.uniform(0.4, 1.0) if rng.random() < 0.6 else 0.0
        ragged = np.clip(1.0 + 0.5 * smooth_noise(rng, weight.shape, 1.0 * px), 0.0, None)
        rim = halo * gland * ragged * np.exp(-((outside / (2.5 * px)) ** 2)) * off
        factor, spread, edge_shadow = rng.uniform(0.22, 0.45), 1.2 * px, 0.0

    full = np.zeros((height, width))
    out = Lesion(full.copy(), full.copy(), full.copy(), np.ones((height, width)), kind)
    out.weight[window], out.reflectivity[window], out.rim[window] = weight, level, rim
    columns = (slice(r0, height), slice(c0, c1))
    posterior = _posterior(out.weight[columns], factor, spread)
    if edge_shadow:
        posterior *= _edge_shadows(out.weight[columns], edge_shadow, 0.7 * px)
    out.posterior[columns] = posterior
    return out
