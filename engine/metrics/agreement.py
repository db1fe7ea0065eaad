"""Agreement between two attribution maps: rank correlation and overlap of their top pixels."""

from __future__ import annotations

import itertools
import math

import numpy as np
from scipy.stats import spearmanr

from engine.core.errors import UserError


def _flat_pair(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise UserError(f"maps of different shapes cannot be compared: {a.shape} and {b.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise UserError("maps with NaN or infinite values cannot be compared")
    return a.ravel(), b.ravel()


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two maps (NaN when either map is constant)."""
    x, y = _flat_pair(a, b)
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def top_mask(values: np.ndarray, percent: float) -> np.ndarray:
    """A boolean mask of the ceil(percent% of n) largest values; ties broken by position, so the
    mask always holds exactly that many pixels."""
    if not 0 < percent <= 100:
        raise UserError(f"the top percentage must be in (0, 100], not {percent}")
    flat = np.asarray(values, dtype=np.float64).ravel()
    count = max(1, math.ceil(flat.size * percent / 100.0))
    order = np.argsort(-flat, kind="stable")
    mask = np.zeros(flat.size, dtype=bool)
    mask[order[:count]] = True
    return mask.reshape(np.shape(values))


def top_iou(a: np.ndarray, b: np.ndarray, percent: float = 10.0) -> float:
    """Intersection over union of the top ``percent``% pixels of each map."""
    x, y = _flat_pair(a, b)
    mask_a, mask_b = top_mask(x, percent), top_mask(y, percent)
    return float((mask_a & mask_b).sum() / (mask_a | mask_b).sum())


def agreement(a: np.ndarray, b: np.ndarray, percent: float = 10.0) -> dict[str, float]:
    """Every agreement measure for one pair, on the signed values and on magnitudes."""
    return {
        "spearman": spearman(a, b),
        "spearman_abs": spearman(np.abs(a), np.abs(b)),
        f"iou_top{percent:g}": top_iou(a, b, percent),
        f"iou_top{percent:g}_abs": top_iou(np.abs(a), np.abs(b), percent),
    }


def pairwise_agreement(maps: dict[str, np.ndarray], percent: float = 10.0) -> list[dict]:
    """Agreement of every pair of named maps, in the order the maps were given."""
    return [{"a": name_a, "b": name_b, **agreement(maps[name_a], maps[name_b], percent)} for name_a, name_b in itertools.combinations(maps, 2)]
