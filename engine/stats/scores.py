"""Test metrics for classifiers and regressors (plain numpy, formulas as in any textbook)."""

from __future__ import annotations

import numpy as np


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney probability that a positive outranks a negative
    (ties count one half)."""
    positive = positive.astype(bool)
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # Average ranks over ties.
    boundaries = np.flatnonzero(np.diff(sorted_scores)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(scores)]])
    for start, end in zip(starts, ends, strict=True):
        ranks[order[start:end]] = (start + end + 1) / 2.0
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(probabilities: np.ndarray, y: np.ndarray, classes: list[str]) -> dict:
    predicted = probabilities.argmax(axis=1)
    k = len(classes)
    confusion = np.zeros((k, k), dtype=int)
    np.add.at(confusion, (y, predicted), 1)
    recalls = [confusion[c, c] / confusion[c].sum() for c in range(k) if confusion[c].sum()]
    metrics = {
        "accuracy": float((predicted == y).mean()),
        "balanced_accuracy": float(np.mean(recalls)),
        "confusion_matrix": confusion.tolist(),
        "classes": list(classes),
        "n_test": int(len(y)),
    }
    if k == 2:
        metrics["roc_auc"] = roc_auc(probabilities[:, 1], y == 1)
    return metrics


def regression_metrics(predicted: np.ndarray, y: np.ndarray) -> dict:
    residual = y - predicted
    total = float(((y - y.mean()) ** 2).sum())
    return {
        "r2": float(1 - (residual**2).sum() / total) if total > 0 else float("nan"),
        "rmse": float(np.sqrt((residual**2).mean())),
        "n_test": int(len(y)),
    }
