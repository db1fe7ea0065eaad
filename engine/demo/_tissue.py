"""Background tissue, speckle and depth gain for the breast-ultrasound phantom (see engine/phantom.py).

Everything here works on reflectivity maps: the amplitude with which tissue scatters sound, before
speckle. The gland sits near 1, fat near 0.3; the display is log-compressed, so factors are what
count (0.3 is about 10 dB darker than 1).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy.ndimage import gaussian_filter

# Speckle grain (Gaussian point-spread function) in pixels of a 128-pixel image: short axially
# (down the image), longer laterally, which gives the horizontally elongated grains of B-mode.
PSF_AXIAL = 0.8
PSF_LATERAL = 1.4


@lru_cache(maxsize=64)
def _gaussian_spectrum(shape: tuple[int, int], sigma: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """The Fourier gain of a Gaussian blur on an rfft2 grid, cut to the frequencies it lets through
    (gain above 1e-4): the rows to fill, and the gains of those rows' first columns."""
    fy = np.fft.fftfreq(shape[0])
    fx = np.fft.rfftfreq(shape[1])
    cut = np.sqrt(np.log(1e4) / (2.0 * np.pi**2))
    rows = np.flatnonzero(np.abs(fy) * sigma[0] <= cut)
    columns = max(1, int(np.count_nonzero(fx * sigma[1] <= cut)))
    gain = np.exp(-2.0 * np.pi**2 * ((sigma[0] * fy[rows, None]) ** 2 + (sigma[1] * fx[None, :columns]) ** 2))
    return rows, gain


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma) -> np.ndarray:
    """White noise seen through a Gaussian of standard deviation ``sigma`` (pixels; a number or one per
    axis), rescaled to zero mean and unit standard deviation. Made in the Fourier domain, drawing only
    the frequencies the blur lets through; it is periodic across the image, which no texture here shows."""
    sy, sx = (float(sigma), float(sigma)) if np.ndim(sigma) == 0 else (float(sigma[0]), float(sigma[1]))
    shape = (int(shape[0]), int(shape[1]))
    rows, gain = _gaussian_spectrum(shape, (sy, sx))
    spectrum = np.zeros((shape[0], shape[1] // 2 + 1), dtype=np.complex128)
    draws = rng.standard_normal((2, *gain.shape))
    spectrum[rows, : gain.shape[1]] = (draws[0] + 1j * draws[1]) * gain
    field = np.fft.irfft2(spectrum, s=shape)
    field -= field.mean()
    return field / (field.std() + 1e-12)


def wave(rng: np.random.Generator, width: int, amplitude: float, terms: int = 3) -> np.ndarray:
    """A smooth random profile across the image width (a few sinusoids, lowest frequencies strongest)."""
    x = np.arange(width) / width
    out = np.zeros(width)
    for k in range(1, terms + 1):
        cycles = rng.uniform(0.3, 1.2) * k
        out += amplitude / k * np.sin(2 * np.pi * cycles * x + rng.uniform(0, 2 * np.pi))
    return out


@lru_cache(maxsize=32)
def _psf_energy(sigma: tuple[float, float]) -> float:
    """Sum of the squared filter taps, so that filtered unit white noise can be rescaled to unit power."""
    size = 2 * int(4 * max(sigma) + 1) + 1
    delta = np.zeros((size, size))
    delta[size // 2, size // 2] = 1.0
    return float(np.sum(gaussian_filter(delta, sigma) ** 2))


def psf_sigma(height: int, width: int) -> tuple[float, float]:
    return (PSF_AXIAL * height / 128, PSF_LATERAL * width / 128)


def speckle(rng: np.random.Generator, amplitude: np.ndarray, sigma: tuple[float, float]) -> np.ndarray:
    """Envelope of the echo from random scatterers of the given amplitude, seen through a Gaussian PSF.

    Real and imaginary scatterer fields are independent Gaussians; after the (linear) PSF they stay
    Gaussian, so over a homogeneous region the envelope is Rayleigh distributed (mean / std = 1.91)
    with unit mean power. Multiplicative: the local mean scales with ``amplitude``.
    """
    shape = amplitude.shape
    scale = 1.0 / np.sqrt(2.0 * _psf_energy((float(sigma[0]), float(sigma[1]))))
    amplitude = amplitude.astype(np.float32)
    real = gaussian_filter(rng.standard_normal(shape, dtype=np.float32) * amplitude, sigma, mode="reflect")
    imag = gaussian_filter(rng.standard_normal(shape, dtype=np.float32) * amplitude, sigma, mode="reflect")
    return np.sqrt(real * real + imag * imag) * np.float32(scale)


def _sigmoid(t: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * t))


@dataclass
class Tissue:
    reflectivity: np.ndarray  # H x W amplitude before speckle
    skin: np.ndarray  # W rows: centre of the skin line
    gland_top: np.ndarray  # W rows
    gland_bottom: np.ndarray  # W rows
    gland: float  # reflectivity of the glandular band (lesions are set relative to it)


def tissue(rng: np.random.Generator, height: int, width: int) -> Tissue:
    """Layers from the top: coupling gel, skin, subcutaneous fat with Cooper's ligaments, the
    fibroglandular band, retromammary fat and (often) the pectoralis muscle with its fascia."""
    sy, sx = height / 128, width / 128
    y = np.arange(height, dtype=np.float64)[:, None]
    tilt = rng.uniform(-0.06, 0.06) * height * (np.arange(width) / width - 0.5)

    skin = height * rng.uniform(0.03, 0.055) + wave(rng, width, 0.006 * height, 2)
    skin_width = max(0.55, 0.9 * sy)
    gland_top = height * rng.uniform(0.17, 0.27) + wave(rng, width, 0.035 * height) + tilt
    gland_bottom = height * rng.uniform(0.6, 0.72) + wave(rng, width, 0.04 * height) + tilt
    muscle_top = height * rng.uniform(0.8, 1.02) + wave(rng, width, 0.02 * height, 2) + 1.5 * tilt

    fat = rng.uniform(0.16, 0.26)
    gland = rng.uniform(0.85, 1.15)
    edge = 1.2 * sy
    below_skin = _sigmoid((y - skin - 1.5 * skin_width) / (0.6 * sy))

    # Fat lobules separated by thin echogenic septa and Cooper's ligaments: the zero level set of a
    # smooth random field is a network of curved lines.
    lobules = smooth_noise(rng, (height, width), (3.0 * sy, 6.0 * sx))
    septa = np.exp(-((lobules / 0.16) ** 2))
    fat_texture = fat * (1.0 + 0.18 * smooth_noise(rng, (height, width), (2.0 * sy, 3.0 * sx)))

    # The glandular band interdigitates with the fat: its boundaries are perturbed in 2-D.
    ragged = smooth_noise(rng, (height, width), (2.5 * sy, 4.0 * sx))
    in_gland = _sigmoid((y - gland_top - 0.05 * height * ragged) / edge) * _sigmoid((gland_bottom - y + 0.04 * height * ragged) / edge)
    streaks = smooth_noise(rng, (height, width), (1.2 * sy, 5.0 * sx))
    islands = _sigmoid((smooth_noise(rng, (height, width), (3.0 * sy, 4.0 * sx)) - 1.3) / 0.25)
    gland_texture = gland * (1.0 + 0.28 * streaks) * (1.0 - 0.55 * islands)

    muscle = _sigmoid((y - muscle_top) / edge)
    fascia = np.exp(-(((y - muscle_top) / (0.9 * sy)) ** 2))
    period = rng.uniform(4.0, 7.0) * sy
    slope = rng.uniform(-0.25, 0.25)
    phase = 2 * np.pi * (y + slope * np.arange(width)[None, :] * sy / sx) / period + 1.5 * ragged
    striation = 0.35 + 0.55 * (0.5 + 0.5 * np.cos(phase)) ** 3

    amp = fat_texture * (1.0 + 6.0 * septa * (y < gland_bottom + 0.1 * height))
    amp = amp * (1.0 - in_gland) + gland_texture * in_gland
    amp = amp * (1.0 - muscle) + 0.6 * gland * striation * muscle + 1.1 * gland * fascia
    amp = 0.04 + (amp - 0.04) * below_skin
    skin_line = 2.6 * np.exp(-(((y - skin) / skin_width) ** 2)) + 0.9 * np.exp(-(((y - skin - 2.2 * skin_width) / (1.2 * skin_width)) ** 2))
    amp = amp + skin_line * (1.0 + 0.15 * streaks)
    return Tissue(np.clip(amp, 0.01, None), skin, gland_top, gland_bottom, gland)


def depth_gain(rng: np.random.Generator, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-row amplitude factors: (attenuation of the echo, time-gain compensation).

    Attenuation grows with depth (20-35 dB over the image); the operator's TGC makes up most but not
    all of it, with a smooth wobble of its slide controls and a brighter focal zone.
    """
    z = (np.arange(height) + 0.5) / height
    attenuation_db = rng.uniform(20.0, 35.0)
    compensation = rng.uniform(0.72, 1.02)
    focus, focus_db = rng.uniform(0.3, 0.65), rng.uniform(0.5, 2.5)
    wobble = wave(rng, height, 1.5, 2)
    tgc_db = attenuation_db * compensation * z + focus_db * np.exp(-(((z - focus) / 0.18) ** 2)) + wobble
    return 10.0 ** (-attenuation_db * z / 20.0), 10.0 ** (tgc_db / 20.0)
