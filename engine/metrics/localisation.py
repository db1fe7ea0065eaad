"""Localisation of an attribution map against a ground-truth mask (a lesion, an object's region).

* Pointing game (Zhang et al., "Top-down neural attention by excitation backprop", IJCV 2018): a
  hit when the map's maximum lies inside the mask, or within ``tolerance`` pixels (Euclidean
  distance to the nearest mask pixel) of it; the paper uses 15 pixels.
* Energy inside the mask (the energy-based pointing game of Score-CAM, Wang et al. 2020): the
  fraction of the map's positive mass that falls inside the mask. Negative values are ignored.
* IoU of the map's top-q% pixels (``compare.top_mask``) with the mask; q defaults to the mask's
  own share of the image, so that a map equal to the mask scores 1.

Maps of images whose mask is empty (normal images, no lesion) are not scored: every score is None
and ``note`` says why. Each score comes with what a random map would get (``*_chance``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.ndimage import distance_transform_edt

from engine.core.errors import UserError
from engine.core.jsonable import json_float
from engine.metrics._common import as_map, as_mask
from engine.metrics.agreement import top_mask

TIES = ("all", "any", "first")


@dataclass
class LocalisationScores:
    """How well one map points at one mask. Scores are None when the mask is empty (not scored)."""

    pointing_hit: bool | None
    pointing_fraction: float | None  # share of the tied maxima that hit (1 or 0 without ties)
    n_maxima: int  # how many pixels share the map's maximum value
    tolerance: float
    ties: str
    energy: float | None
    iou: float | None
    top_percent: float | None  # the q of the IoU, in percent of the image
    mask_fraction: float
    energy_chance: float | None  # expected energy of a random positive map: the mask fraction
    iou_chance: float | None  # expected IoU of a random map's top-q% pixels with the mask
    note: str = ""

    @property
    def scored(self) -> bool:
        return self.pointing_hit is not None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("pointing_fraction", "energy", "iou", "top_percent", "mask_fraction", "energy_chance", "iou_chance", "tolerance"):
            out[key] = json_float(out[key])
        return out


def _maxima(values: np.ndarray) -> np.ndarray:
    """Flat indices of every pixel equal to the map's maximum, in raster order."""
    flat = values.ravel()
    return np.flatnonzero(flat == flat.max())


def pointing_game(saliency_map: Any, mask: Any, tolerance: float = 0.0, ties: str = "all") -> bool | None:
    """Whether the map's maximum lies inside the mask (or within ``tolerance`` pixels of it).

    When several pixels share the maximum, ``ties`` decides: ``all`` (default) needs every one of
    them to hit, so a flat or saturated map cannot win by luck; ``any`` needs one; ``first`` takes
    the first in raster order, as ``np.argmax`` would. None when the mask is empty.
    """
    hit, _, _ = _pointing(as_map(saliency_map), mask, tolerance, ties)
    return hit


def _pointing(values: np.ndarray, mask: Any, tolerance: float, ties: str) -> tuple[bool | None, float | None, int]:
    mask = as_mask(mask, values.shape)
    if ties not in TIES:
        raise UserError(f"unknown tie rule '{ties}'; choose one of {', '.join(TIES)}")
    if not tolerance >= 0:
        raise UserError(f"the pointing-game tolerance must be a number of pixels >= 0, not {tolerance}")
    maxima = _maxima(values)
    if not mask.any():
        return None, None, int(maxima.size)
    # Distance of every pixel to the nearest mask pixel (0 inside the mask).
    distance = distance_transform_edt(~mask) if tolerance > 0 else np.where(mask, 0.0, np.inf)
    hits = distance.ravel()[maxima] <= tolerance
    fraction = float(hits.mean())
    if ties == "all":
        hit = bool(hits.all())
    elif ties == "any":
        hit = bool(hits.any())
    else:
        hit = bool(hits[0])
    return hit, fraction, int(maxima.size)


def energy_in_mask(saliency_map: Any, mask: Any) -> float | None:
    """Fraction of the map's positive mass inside the mask; negative values are ignored.

    None when the mask is empty, NaN when the map has no positive value at all.
    """
    values = as_map(saliency_map)
    mask = as_mask(mask, values.shape)
    if not mask.any():
        return None
    positive = np.clip(values, 0.0, None)
    total = positive.sum()
    return float(positive[mask].sum() / total) if total > 0 else float("nan")


def _top_pixels(values: np.ndarray, mask: np.ndarray, top_percent: float | None) -> tuple[np.ndarray, float]:
    """The map's top-q% pixels (compare.top_mask) and q in percent; q defaults to the mask's share."""
    if top_percent is None:
        count = int(mask.sum())
        # ceil(n * p / 100) must come out exactly as the mask's size: aiming half a pixel below keeps
        # a rounding error in p from adding a pixel.
        return top_mask(values, 100.0 * (count - 0.5) / mask.size), 100.0 * count / mask.size
    return top_mask(values, float(top_percent)), float(top_percent)


def top_iou_with_mask(saliency_map: Any, mask: Any, top_percent: float | None = None) -> float | None:
    """IoU of the map's top ``top_percent``% pixels with the mask (default: the mask's share).

    None when the mask is empty.
    """
    values = as_map(saliency_map)
    mask = as_mask(mask, values.shape)
    if not mask.any():
        return None
    top, _ = _top_pixels(values, mask, top_percent)
    return float((top & mask).sum() / (top | mask).sum())


def localisation_scores(saliency_map: Any, mask: Any, *, tolerance: float = 0.0, ties: str = "all", top_percent: float | None = None, absolute: bool = False) -> LocalisationScores:
    """Every localisation score of one map against one mask (``absolute``: score |map|)."""
    values = as_map(saliency_map)
    if absolute:
        values = np.abs(values)
    mask = as_mask(mask, values.shape)
    hit, fraction, n_maxima = _pointing(values, mask, tolerance, ties)
    n, m = mask.size, int(mask.sum())
    pointing = {"n_maxima": n_maxima, "tolerance": float(tolerance), "ties": ties}
    if m == 0:
        unscored = dict.fromkeys(("pointing_hit", "pointing_fraction", "energy", "iou", "energy_chance", "iou_chance"))
        top_percent = None if top_percent is None else float(top_percent)
        return LocalisationScores(**pointing, **unscored, top_percent=top_percent, mask_fraction=0.0, note="empty mask (normal image): not scored")
    top, reported_percent = _top_pixels(values, mask, top_percent)
    energy = energy_in_mask(values, mask)
    iou = float((top & mask).sum() / (top | mask).sum())
    k = int(top.sum())
    expected_overlap = k * m / n  # mean of the hypergeometric overlap of k random pixels with m
    note = "the map has no positive values: energy is undefined" if np.isnan(energy) else ""
    return LocalisationScores(
        **pointing,
        pointing_hit=hit,
        pointing_fraction=fraction,
        energy=energy,
        iou=iou,
        top_percent=reported_percent,
        mask_fraction=m / n,
        energy_chance=m / n,
        iou_chance=expected_overlap / (k + m - expected_overlap),
        note=note,
    )


def summarise_localisation(scores: list[LocalisationScores]) -> dict[str, Any]:
    """Dataset-level figures: pointing-game accuracy and mean energy and IoU over the scored maps.

    Maps of empty masks are counted as ``skipped``, not as misses.
    """
    scored = [s for s in scores if s.scored]
    energies = [s.energy for s in scored if s.energy is not None and not np.isnan(s.energy)]

    def mean(values: list[float]) -> float | None:
        return float(np.mean(values)) if values else None

    return {
        "n_scored": len(scored),
        "n_skipped": len(scores) - len(scored),
        "pointing_accuracy": mean([float(s.pointing_hit) for s in scored]),
        "mean_energy": mean(energies),
        "mean_iou": mean([s.iou for s in scored]),
        "mean_energy_chance": mean([s.energy_chance for s in scored]),
        "mean_iou_chance": mean([s.iou_chance for s in scored]),
    }
