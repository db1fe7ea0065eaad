"""Statistics that hold for a data-set study: bootstrap intervals of means and paired tests
between methods, corrected for multiple comparisons.

* :func:`bootstrap_interval` -- the percentile bootstrap (Efron and Tibshirani, "An Introduction
  to the Bootstrap", 1993, ch. 13): resample the n values with replacement B times, take the
  mean of each resample, and report the alpha/2 and 1 - alpha/2 quantiles of those means.
* :func:`holm` -- Holm's step-down correction (Holm, "A simple sequentially rejective multiple
  test procedure", Scand. J. Statistics 1979): with the m p-values sorted, p_(i) becomes
  max over j <= i of min(1, (m - j + 1) p_(j)); it controls the family-wise error rate.
* :func:`compare_methods` -- every pair of methods on the same images, per metric, with the
  Wilcoxon signed-rank test (``scipy.stats.wilcoxon``, two-sided) on the paired differences,
  Holm-corrected within each metric's family of pairs.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from engine.core.errors import UserError

# Which direction is better for each metric the study reports (None: no direction, not compared).
HIGHER_IS_BETTER = {
    "pointing": True,
    "energy": True,
    "iou": True,
    "deletion_auc": False,
    "insertion_auc": True,
    "road_morf": False,
    "road_lerf": True,
    "time_s": False,
}


def _finite(values: Any) -> np.ndarray:
    array = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64).ravel()
    return array[np.isfinite(array)]


def bootstrap_interval(values: Any, *, confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float] | None:
    """The percentile-bootstrap interval of the mean of ``values`` (None and NaN are left out);
    None when fewer than two values remain. Seeded, so a report is reproducible."""
    if not 0 < confidence < 1:
        raise UserError(f"the confidence level must lie between 0 and 1, not {confidence}")
    if resamples < 10:
        raise UserError(f"the bootstrap needs at least 10 resamples, not {resamples}")
    array = _finite(values)
    if array.size < 2:
        return None
    rng = np.random.default_rng(seed)
    means = np.empty(resamples)
    chunk = max(1, 2_000_000 // array.size)  # bound the memory of the index matrix
    for begin in range(0, resamples, chunk):
        end = min(resamples, begin + chunk)
        means[begin:end] = array[rng.integers(0, array.size, size=(end - begin, array.size))].mean(axis=1)
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def holm(p_values: Any) -> np.ndarray:
    """Holm-adjusted p-values, in the order given (see the module docstring)."""
    p = np.asarray(p_values, dtype=np.float64).ravel()
    if p.size == 0:
        return p
    if np.any(~np.isfinite(p)) or np.any((p < 0) | (p > 1)):
        raise UserError("p-values must be numbers between 0 and 1")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return adjusted


@dataclass
class Comparison:
    """Two methods compared on one metric over the images where both have a value."""

    metric: str
    a: str
    b: str
    n: int
    mean_difference: float  # mean of a - b
    p_value: float | None
    p_holm: float | None
    holds: bool  # the Holm-corrected p-value is below alpha
    better: str | None  # the method the difference favours, when it holds

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _wilcoxon(differences: np.ndarray) -> float | None:
    from scipy.stats import wilcoxon

    if differences.size < 2:
        return None
    if not np.any(differences != 0):
        return 1.0  # identical values: no evidence of a difference
    return float(wilcoxon(differences, zero_method="wilcox", alternative="two-sided").pvalue)


def compare_methods(values: dict[str, Any], metric: str, *, alpha: float = 0.05) -> list[Comparison]:
    """Pairwise Wilcoxon signed-rank tests, Holm-corrected, of ``values`` (method -> one value per
    image, the same images in the same order for every method; None or NaN where a method has none)."""
    names = list(values)
    arrays = {name: np.asarray([np.nan if v is None else v for v in values[name]], dtype=np.float64) for name in names}
    lengths = {a.size for a in arrays.values()}
    if len(lengths) > 1:
        raise UserError(f"the methods were scored on different numbers of images for {metric}; a paired test needs the same images")
    rows = []
    for a, b in itertools.combinations(names, 2):
        both = np.isfinite(arrays[a]) & np.isfinite(arrays[b])
        differences = arrays[a][both] - arrays[b][both]
        mean = float(differences.mean()) if differences.size else float("nan")
        rows.append((a, b, int(both.sum()), mean, _wilcoxon(differences)))
    tested = [i for i, row in enumerate(rows) if row[4] is not None]
    adjusted = dict(zip(tested, holm([rows[i][4] for i in tested]), strict=True))
    higher = HIGHER_IS_BETTER.get(metric)
    out = []
    for i, (a, b, n, mean, p) in enumerate(rows):
        p_holm = float(adjusted[i]) if i in adjusted else None
        holds = p_holm is not None and p_holm < alpha and mean != 0
        better = None
        if holds and higher is not None:
            better = a if (mean > 0) == higher else b
        out.append(Comparison(metric, a, b, n, mean, p, p_holm, holds, better))
    return out
