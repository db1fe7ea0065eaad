"""The `evaluate` report of a result store: the same per-method summaries, intervals and paired
tests as an in-memory evaluation, read from the store's records instead of recomputed."""

from __future__ import annotations

import math

import numpy as np

from engine.metrics.faithfulness import step_counts
from engine.metrics.study import METRIC_NAMES, EvaluationReport, MethodSummary
from engine.runs.store import Store


def _value(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def summaries_from_store(store: Store) -> tuple[list[MethodSummary], list[dict], float | None]:
    """Per-method summaries (in the run's method order), per-image records and the accuracy, over
    the images that every method has finished."""
    settings = store.settings
    table = store.table()
    # Paired statistics need every method on the same images: a store that is not complete yet
    # is reported on the images that every method has finished.
    counts = table.groupby("image_index")["method"].nunique()
    table = table[table["image_index"].isin(counts[counts == len(settings["methods"])].index)]
    summaries = []
    for name, params in settings["methods"].items():
        summary = MethodSummary(name, params)
        rows = table[table["method"] == name]
        masked = rows["pointing"].notna()
        for metric in METRIC_NAMES:
            if metric not in rows.columns:
                continue
            column = rows.loc[masked, metric] if metric in ("pointing", "energy", "iou") else rows[metric]
            if metric in ("road_morf", "road_lerf", "stability") and column.isna().all():
                continue  # not asked for (ROAD), or not a stochastic method's repeated runs (stability)
            summary.values[metric] = [_value(v) for v in column]
        summary.deletion_curves = [np.asarray(c) for c in rows["deletion_curve"]]
        summary.insertion_curves = [np.asarray(c) for c in rows["insertion_curve"]]
        if summary.deletion_curves:
            n_points = len(summary.deletion_curves[0])
            try:
                n_pixels = int(np.prod(store.map_shape(name)))
                summary.fractions = step_counts(n_pixels, n_points - 1) / n_pixels
            except (KeyError, FileNotFoundError):
                summary.fractions = np.linspace(0.0, 1.0, n_points)
        summaries.append(summary)
    first = table.drop_duplicates(subset=["image_index"], keep="first")
    images = [{"image": row.image, "label": row.label, "predicted": row.predicted} for row in first.itertuples()]
    labelled = [r for r in images if r["label"] is not None]
    accuracy = sum(r["predicted"] == r["label"] for r in labelled) / len(labelled) if labelled else None
    return summaries, images, accuracy


def report_from_store(store: Store, elapsed_s: float, sanity: dict[str, list[dict]] | None = None) -> EvaluationReport:
    """An EvaluationReport of the store's records; ``sanity`` adds per-method sanity checks."""
    summaries, images, accuracy = summaries_from_store(store)
    for summary in summaries:
        summary.sanity = (sanity or {}).get(summary.method, [])
    return EvaluationReport(store.settings["model"], len(images), accuracy, summaries, images, elapsed_s)
