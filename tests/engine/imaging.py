"""Shared helpers for the image-decoding and input tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

EXT = {"PNG": ".png", "JPEG": ".jpg", "BMP": ".bmp", "TIFF": ".tif"}
EXACT = 1e-6  # lossless formats: k / 255 up to float32 rounding
JPEG_TOL = 4 / 255  # lossy, but 8x8-block-aligned flat colours at quality 100 come back within a few levels
NO_PREPROCESS = dict(resize=None, crop=None, mean=(0.0,), std=(1.0,))


def save(image: Image.Image, folder: Path, name: str, fmt: str, **options) -> Path:
    path = folder / f"{name}{EXT[fmt]}"
    if fmt == "JPEG":
        options = {"quality": 100, "subsampling": 0, **options}
    image.save(path, fmt, **options)
    return path


def unit(values) -> np.ndarray:
    return np.asarray(values, dtype=np.float64) / 255.0


def blocks(colours, block: int = 8) -> np.ndarray:
    """A 2 x 2 grid of flat block x block squares (JPEG-friendly): colours is a 2 x 2 (x C) nested list."""
    grid = np.asarray(colours)
    return np.repeat(np.repeat(grid, block, axis=0), block, axis=1)


def palette_image(indices: np.ndarray, colours: list[tuple[int, int, int]]) -> Image.Image:
    image = Image.frombytes("P", indices.shape[::-1], indices.astype(np.uint8).tobytes())
    flat = [v for colour in colours for v in colour]
    image.putpalette(flat + [0] * (768 - len(flat)))
    return image


def check(decoded: np.ndarray, expected: np.ndarray, atol: float) -> None:
    assert decoded.dtype == np.float32
    assert decoded.shape == expected.shape
    assert decoded.min() >= 0.0 and decoded.max() <= 1.0
    np.testing.assert_allclose(decoded, expected, rtol=0, atol=atol)


# ------------------------------------------------------------------ every mode x format


COLOURS = [[(255, 0, 0), (0, 255, 0)], [(0, 0, 255), (40, 120, 200)]]
