"""ROAD: RemOve And Debias (Rong, Leemann, Borisov, Kasneci and Kasneci, "A Consistent and
Efficient Evaluation Strategy for Attribution Methods", ICML 2022).

Deletion curves replace pixels with a constant or a blur, and the shape of the hole itself tells
the model where the removed pixels were: the curve then measures that leak as much as the map.
ROAD removes pixels by *noisy linear imputation*, which the paper shows leaks far less:

* every removed pixel takes the weighted mean of its 8 neighbours (weight 1/6 for the four
  direct neighbours, 1/12 for the four diagonal ones, renormalised at the image border). For the
  removed pixels together this is a sparse linear system A x = b (one row per removed pixel:
  its total neighbour weight on the diagonal, minus the weights of removed neighbours off the
  diagonal, and the weighted known neighbours in b), solved once for all channels with
  ``scipy.sparse.linalg.spsolve``;
* Gaussian noise (standard deviation ``noise``, in model-input units) is added to the imputed
  pixels, so that the imputation itself carries no smooth signature.

Two orders are scored at each fraction p of pixels removed: MoRF (most relevant first: a
faithful map makes the target's probability fall fast, a LOW mean is good) and LeRF (least
relevant first: the probability should stay, a HIGH mean is good). The reported summaries are the
mean of the target's score over the fractions (the paper plots the curves; their mean is the
area under them up to the spacing of the fractions).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.core.errors import UserError
from engine.core.jsonable import json_float
from engine.core.progress import CancelToken, resolve
from engine.methods.runner import model_device
from engine.metrics._common import as_map
from engine.models.loading import LoadedModel
from engine.models.outputs import OUTPUT_CHOICES, as_batch, check_target, logits_of, select_output

ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
NEIGHBOURS = ((-1, -1, 1 / 12), (-1, 0, 1 / 6), (-1, 1, 1 / 12), (0, -1, 1 / 6), (0, 1, 1 / 6), (1, -1, 1 / 12), (1, 0, 1 / 6), (1, 1, 1 / 12))


def linear_impute(image: np.ndarray, removed: np.ndarray) -> np.ndarray:
    """``image`` (C x H x W) with the ``removed`` pixels (H x W booleans) replaced by the weighted
    mean of their 8 neighbours, solved jointly (see the module docstring); no noise."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    image = np.asarray(image, dtype=np.float64)
    removed = np.asarray(removed, dtype=bool)
    if image.ndim != 3 or removed.shape != image.shape[1:]:
        raise UserError(f"imputation needs a C x H x W image and an H x W mask, got {image.shape} and {removed.shape}")
    out = image.copy()
    n = int(removed.sum())
    if n == 0:
        return out
    if n == removed.size:
        raise UserError("cannot impute an image whose every pixel is removed")
    channels, height, width = image.shape
    index = np.full(removed.shape, -1, dtype=np.int64)
    r, c = np.nonzero(removed)
    index[r, c] = np.arange(n)
    diagonal = np.zeros(n)
    rhs = np.zeros((n, channels))
    rows, cols, data = [], [], []
    for dr, dc, weight in NEIGHBOURS:
        rr, cc = r + dr, c + dc
        inside = (rr >= 0) & (rr < height) & (cc >= 0) & (cc < width)
        own, rr, cc = np.nonzero(inside)[0], rr[inside], cc[inside]
        diagonal[own] += weight
        unknown = removed[rr, cc]
        rows.append(own[unknown])
        cols.append(index[rr[unknown], cc[unknown]])
        data.append(np.full(int(unknown.sum()), -weight))
        np.add.at(rhs, own[~unknown], weight * image[:, rr[~unknown], cc[~unknown]].T)
    rows.append(np.arange(n))
    cols.append(np.arange(n))
    data.append(diagonal)
    matrix = coo_matrix((np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsc()
    solution = np.asarray(spsolve(matrix, rhs)).reshape(n, channels)
    out[:, r, c] = solution.T
    return out


def noisy_linear_impute(image: np.ndarray, removed: np.ndarray, noise: float = 0.01, rng: np.random.Generator | None = None) -> np.ndarray:
    """:func:`linear_impute` plus Gaussian noise of standard deviation ``noise`` on the removed pixels."""
    if not noise >= 0:
        raise UserError(f"the imputation noise must be >= 0, not {noise}")
    out = linear_impute(image, removed)
    if noise > 0:
        rng = rng or np.random.default_rng(0)
        removed = np.asarray(removed, dtype=bool)
        out[:, removed] += rng.normal(0.0, noise, size=(out.shape[0], int(removed.sum())))
    return out


@dataclass
class RoadResult:
    """The target's score after removing each fraction of pixels, most (MoRF) and least (LeRF) relevant first."""

    target: int
    output: str
    fractions: np.ndarray
    morf: np.ndarray
    lerf: np.ndarray
    original_score: float

    @property
    def morf_mean(self) -> float:
        return float(np.mean(self.morf))

    @property
    def lerf_mean(self) -> float:
        return float(np.mean(self.lerf))

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": int(self.target),
            "output": self.output,
            "fractions": [float(v) for v in self.fractions],
            "morf": [json_float(v) for v in self.morf],
            "lerf": [json_float(v) for v in self.lerf],
            "morf_mean": json_float(self.morf_mean),
            "lerf_mean": json_float(self.lerf_mean),
            "original_score": json_float(self.original_score),
        }


def _check(fractions: Any, output: str) -> np.ndarray:
    values = np.asarray(fractions, dtype=np.float64).ravel()
    if values.size == 0 or np.any(~((values > 0) & (values < 1))):
        raise UserError("ROAD's fractions must lie strictly between 0 and 1")
    if output not in OUTPUT_CHOICES:
        raise UserError(f"unknown output '{output}'; choose one of {', '.join(OUTPUT_CHOICES)}")
    return values


def road(
    model: nn.Module | LoadedModel,
    inputs: torch.Tensor,
    saliency_map: Any,
    target: int | None = None,
    *,
    fractions: Any = ROAD_FRACTIONS,
    noise: float = 0.01,
    output: str = "probability",
    absolute: bool = False,
    seed: int = 0,
    batch_size: int = 32,
    cancel: CancelToken | None = None,
) -> RoadResult:
    """ROAD MoRF and LeRF curves of one map for one image (see the module docstring). The noise is
    seeded by ``seed``, so a score is reproducible."""
    _, cancel = resolve(None, cancel)
    fractions = _check(fractions, output)
    module = model.module if isinstance(model, LoadedModel) else model
    device = model_device(module)
    x = as_batch(inputs).detach()
    _, _, height, width = x.shape
    values = as_map(saliency_map)
    if values.shape != (height, width):
        raise UserError(f"the map is {values.shape[0]} x {values.shape[1]} but the image is {height} x {width}; they must match")
    values = np.abs(values) if absolute else values
    order = np.argsort(-values.ravel(), kind="stable")  # most relevant first, ties by position
    n_pixels = height * width
    image = x[0].cpu().double().numpy()
    rng = np.random.default_rng(seed)
    perturbed = []
    for most_relevant_first in (True, False):
        ranked = order if most_relevant_first else order[::-1]
        for fraction in fractions:
            cancel.check()
            removed = np.zeros(n_pixels, dtype=bool)
            removed[ranked[: int(round(fraction * n_pixels))]] = True
            perturbed.append(noisy_linear_impute(image, removed.reshape(height, width), noise, rng))
    batch = torch.from_numpy(np.stack(perturbed)).to(dtype=x.dtype)
    scores = []
    with torch.inference_mode():
        logits = logits_of(module(x.to(device))).float()
        target = check_target(target, logits.shape[1])
        target = int(torch.argmax(logits[0])) if target is None else target
        original = float(select_output(logits, target, output)[0])
        for begin in range(0, len(batch), batch_size):
            cancel.check()
            scores.append(select_output(logits_of(module(batch[begin : begin + batch_size].to(device))).float(), target, output).cpu().double().numpy())
    scores = np.concatenate(scores)
    k = fractions.size
    return RoadResult(target, output, fractions, scores[:k], scores[k:], original)
