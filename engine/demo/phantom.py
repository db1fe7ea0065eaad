"""A deterministic breast-ultrasound phantom: B-mode-like images of normal tissue, benign and malignant lesions.

Each image is simulated, not drawn: a reflectivity map of the breast layers (skin, subcutaneous
fat with Cooper's ligaments, the fibroglandular band, retromammary fat, pectoralis muscle) gets a
lesion and its posterior effect, is attenuated with depth, seen through a point-spread function as
Rayleigh speckle, amplified by a time-gain compensation curve, log-compressed and finally given a
random overall gain that sets its mean brightness, the same way for every class, so that brightness
alone tells nothing about the class. Tissue in engine/phantom_tissue.py, lesions in
engine/phantom_lesions.py.

The i-th image depends only on (seed, i, size): ``np.random.default_rng([seed, i])`` drives it, and
the class is ``CLASSES[i % 3]``, so any subset or a parallel split gives the same images.

    images, masks, labels = generate(300, size=128, seed=0)
    python main.py phantom --out DIR [--n 300] [--size 128] [--seed 0]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np
from scipy.ndimage import gaussian_filter

from engine.core.errors import UserError
from engine.core.files import atomic_path, write_text
from engine.demo._lesions import lesion
from engine.demo._tissue import depth_gain, psf_sigma, speckle, tissue

CLASSES = ("normal", "benign", "malignant")
# Bumped whenever a change alters the images a given (seed, index, size) produces.
PHANTOM_VERSION = 1
MIN_SIZE, MAX_SIZE = 32, 1024


class Phantom(NamedTuple):
    image: np.ndarray  # H x W float32 in [0, 1]
    mask: np.ndarray  # H x W bool, the lesion's pixels (all False for normal)
    label: int  # index into CLASSES
    kind: str  # "normal", "cyst", "fibroadenoma" or "carcinoma"


class PhantomSet(NamedTuple):
    images: np.ndarray  # N x H x W float32 in [0, 1]
    masks: np.ndarray  # N x H x W bool
    labels: np.ndarray  # N int64, indices into CLASSES


def _shape(size) -> tuple[int, int]:
    height, width = (size, size) if np.ndim(size) == 0 else tuple(size)
    for side in (height, width):
        if int(side) != side or not MIN_SIZE <= side <= MAX_SIZE:
            raise UserError(f"phantom size must be an integer from {MIN_SIZE} to {MAX_SIZE} pixels, got {size}")
    return int(height), int(width)


def _check_seed(seed) -> int:
    if int(seed) != seed or seed < 0:
        raise UserError(f"phantom seed must be a non-negative integer, got {seed}")
    return int(seed)


def label_of(index: int) -> int:
    """The class of the index-th image: round robin normal, benign, malignant."""
    return index % len(CLASSES)


def _display(envelope: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Log compression to a dynamic range of 40-55 dB, the scanner's light smoothing, a grey map that
    darkens the low echoes, then the overall gain that gives the image a mean brightness drawn from
    one range for all classes."""
    height, width = envelope.shape
    decibels = 20.0 * np.log10(envelope + np.float32(1e-6))
    decibels = gaussian_filter(decibels, (0.45 * height / 128, 0.6 * width / 128), mode="reflect")
    dynamic_range = rng.uniform(40.0, 55.0)
    gamma = rng.uniform(1.2, 1.6)
    target = rng.uniform(0.2, 0.34)
    scaled = decibels / np.float32(dynamic_range)

    def show(ceiling: float, values: np.ndarray = scaled) -> np.ndarray:
        return np.clip(values - np.float32(ceiling / dynamic_range - 1.0), 0.0, 1.0) ** np.float32(gamma)

    # Bisection on the display ceiling (the mean falls as it rises), judged on a 1024-bin histogram
    # of the image, which gives its mean to a fraction of a grey level at a fraction of the cost.
    low, high = float(scaled.min()), float(scaled.max())
    bins = np.minimum(((scaled - low) * (1024 / max(high - low, 1e-12))).astype(np.int64), 1023)
    counts = np.bincount(bins.ravel(), minlength=1024) / scaled.size
    centres = low + (np.arange(1024) + 0.5) * (high - low) / 1024
    low, high = low * dynamic_range, high * dynamic_range + dynamic_range
    for _ in range(30):
        ceiling = 0.5 * (low + high)
        mean = float(show(ceiling, centres) @ counts)
        low, high = (ceiling, high) if mean > target else (low, ceiling)
    return show(0.5 * (low + high)).astype(np.float32)


def phantom(index: int, size=128, seed: int = 0) -> Phantom:
    """The index-th image of the set with this seed; ``size`` is an int or (height, width)."""
    height, width = _shape(size)
    seed = _check_seed(seed)
    if int(index) != index or index < 0:
        raise UserError(f"phantom index must be a non-negative integer, got {index}")
    index = int(index)
    rng = np.random.default_rng([seed, index])
    label = label_of(index)
    body = tissue(rng, height, width)
    amplitude = body.reflectivity
    mask = np.zeros((height, width), dtype=bool)
    kind = "normal"
    posterior = 1.0
    if label:
        found = lesion(rng, label == 2, body)
        amplitude = amplitude * (1.0 - found.weight) + found.reflectivity * found.weight + found.rim
        mask, kind, posterior = found.mask, found.kind, found.posterior
    attenuation, tgc = depth_gain(rng, height)
    noise_floor = 10.0 ** (-rng.uniform(36.0, 46.0) / 20.0)
    # Echo and electronic noise are independent complex Gaussians seen through the same PSF, so
    # they add in power: one speckle field with amplitude sqrt(echo^2 + noise^2) is the same thing.
    echo = amplitude * posterior * attenuation[:, None] * rng.uniform(0.8, 1.25)
    envelope = speckle(rng, np.sqrt(echo**2 + noise_floor**2), psf_sigma(height, width)) * tgc[:, None]
    return Phantom(_display(envelope, rng), mask, label, kind)


def generate(n: int, size=128, seed: int = 0, start: int = 0) -> PhantomSet:
    """Images ``start`` .. ``start + n - 1`` of the set with this seed, with their masks and labels.

    Classes come round robin, so every class has n // 3 or n // 3 + 1 images.
    """
    if int(n) != n or n < 1:
        raise UserError(f"phantom count must be a positive integer, got {n}")
    height, width = _shape(size)
    images = np.empty((int(n), height, width), dtype=np.float32)
    masks = np.empty((int(n), height, width), dtype=bool)
    labels = np.empty(int(n), dtype=np.int64)
    for k in range(int(n)):
        images[k], masks[k], labels[k], _ = phantom(start + k, (height, width), seed)
    return PhantomSet(images, masks, labels)


def write_imagefolder(out, n: int = 300, size=128, seed: int = 0) -> dict[str, int]:
    """Write n images as OUT/CLASS/NNNN.png (8-bit grey) with OUT/CLASS/NNNN_mask.png (0 or 255)
    beside each, and OUT/phantom.json describing the set; returns the count per class."""
    from PIL import Image

    if int(n) != n or n < len(CLASSES):
        raise UserError(f"--n must be at least {len(CLASSES)} (one image per class), got {n}")
    height, width = _shape(size)
    seed = _check_seed(seed)
    root = Path(out)
    if root.exists() and not root.is_dir():
        raise UserError(f"{root}: exists and is not a folder")
    digits = max(4, len(str(int(n) - 1)))
    _refuse_foreign_files(root, int(n), digits)
    for name in CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
    counts = dict.fromkeys(CLASSES, 0)
    kinds: dict[str, int] = {}
    for index in range(int(n)):
        image, mask, label, kind = phantom(index, (height, width), seed)
        name = CLASSES[label]
        stem = root / name / f"{index:0{digits}d}"
        for picture, path in ((np.round(image * 255.0).astype(np.uint8), stem.with_suffix(".png")), (mask.astype(np.uint8) * 255, stem.with_name(stem.name + "_mask.png"))):
            with atomic_path(path, overwrite=True, record=False) as temporary:
                Image.fromarray(picture).save(temporary)
        counts[name] += 1
        kinds[kind] = kinds.get(kind, 0) + 1
    manifest = {"generator": "sensiscope.phantom", "version": PHANTOM_VERSION, "n": int(n), "height": height, "width": width, "seed": seed, "classes": list(CLASSES), "counts": counts, "kinds": kinds}
    # Written last and atomically: its presence says the set is complete (demo data relies on it).
    write_text(root / "phantom.json", json.dumps(manifest, indent=2) + "\n", overwrite=True)
    return counts


def _refuse_foreign_files(root: Path, n: int, digits: int) -> None:
    """A folder that is not an earlier phantom set must not hold any file the set would replace."""
    if not root.is_dir() or (root / "phantom.json").is_file():
        return
    for index in range(n):
        for name in CLASSES:
            for suffix in (".png", "_mask.png"):
                path = root / name / f"{index:0{digits}d}{suffix}"
                if path.exists():
                    raise UserError(f"{root}: holds files Sensiscope did not write ({path.relative_to(root)}); choose an empty or new folder")


