"""Rankings of inputs and how well several rankings agree (plain numpy).

Kendall's coefficient of concordance W (Kendall and Babington Smith 1939, "The problem of m
rankings", Ann. Math. Statist. 10: 275-287), with the correction for tied ranks:

    W = 12 S / (m^2 (n^3 - n) - m T),   S = sum_i (R_i - m (n + 1) / 2)^2,   T = sum over tie groups (t^3 - t)

for m raters (here: trained networks, or methods) ranking n objects (inputs); R_i is the sum of the
ranks object i received. W is 1 when every rater gives the same ranking and near 0 when they agree
no better than chance.
"""

from __future__ import annotations

import math

import numpy as np


def ranks(values: np.ndarray, descending: bool = True) -> np.ndarray:
    """Ranks 1..n of ``values`` (1 = largest when ``descending``), ties sharing their mean rank;
    NaN ranks last."""
    values = np.asarray(values, dtype=np.float64)
    key = np.where(np.isnan(values), -np.inf, values) if descending else np.where(np.isnan(values), np.inf, values)
    key = -key if descending else key
    order = np.argsort(key, kind="stable")
    out = np.empty(len(values), dtype=np.float64)
    sorted_key = key[order]
    start = 0
    while start < len(values):
        stop = start
        while stop + 1 < len(values) and sorted_key[stop + 1] == sorted_key[start]:
            stop += 1
        out[order[start : stop + 1]] = (start + stop) / 2 + 1
        start = stop + 1
    return out


def kendall_w(rank_matrix: np.ndarray) -> float:
    """Kendall's W of an (m raters x n objects) matrix of ranks (ties as mean ranks); NaN when it
    is undefined (fewer than 2 raters or objects, or every rater ties everything)."""
    r = np.asarray(rank_matrix, dtype=np.float64)
    if r.ndim != 2:
        raise ValueError("Kendall's W needs a 2-D matrix of ranks (raters x objects)")
    m, n = r.shape
    if m < 2 or n < 2:
        return math.nan
    totals = r.sum(axis=0)
    s = float(((totals - m * (n + 1) / 2) ** 2).sum())
    ties = 0.0
    for row in r:
        _, counts = np.unique(row, return_counts=True)
        ties += float((counts**3 - counts).sum())
    denominator = m**2 * (n**3 - n) - m * ties
    return math.nan if denominator <= 0 else 12 * s / denominator


def ranking_names(names: list[str], values: np.ndarray) -> list[str]:
    """Names from the largest to the smallest value (stable; NaN last)."""
    order = np.argsort(ranks(values), kind="stable")
    return [names[i] for i in order]
