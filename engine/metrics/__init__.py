"""Explanation quality metrics: localisation against masks, deletion and insertion curves, and
the model-randomisation sanity check. Every result has a JSON-ready ``to_dict()``."""

from engine.metrics.evaluate import MapEvaluation, evaluate_map
from engine.metrics.faithfulness import BASELINES, CURVES, Curve, FaithfulnessResult, deletion_insertion, make_baseline, step_counts, trapezoid_auc
from engine.metrics.localisation import LocalisationScores, energy_in_mask, localisation_scores, pointing_game, summarise_localisation, top_iou_with_mask
from engine.metrics.sanity import MethodMap, SanityReport, SanityStep, cascading_randomisation, explain_fn_for, parameter_layers

__all__ = [
    "BASELINES",
    "CURVES",
    "Curve",
    "FaithfulnessResult",
    "LocalisationScores",
    "MapEvaluation",
    "MethodMap",
    "SanityReport",
    "SanityStep",
    "cascading_randomisation",
    "deletion_insertion",
    "energy_in_mask",
    "evaluate_map",
    "explain_fn_for",
    "localisation_scores",
    "make_baseline",
    "parameter_layers",
    "pointing_game",
    "step_counts",
    "summarise_localisation",
    "top_iou_with_mask",
    "trapezoid_auc",
]
