"""Deletion and insertion curves (Petsiuk, Das and Saenko, "RISE", BMVC 2018).

Pixels are ranked by the map, most important first (ties broken by position, as in
``compare.top_mask``). Step k of ``steps`` changes the round(k n / steps) most important of the
n pixels (all channels of a pixel together):

* deletion starts from the image and replaces them with the baseline; a faithful map makes the
  target's probability fall fast (a LOW area under the curve is good);
* insertion starts from the baseline and reveals them from the image; a faithful map makes the
  probability rise fast (a HIGH area is good).

Each curve has steps + 1 points at x = (pixels changed) / n, from 0 to 1, and its area is the
trapezoid rule over x. The perturbed images are built on the model's device and evaluated in
batches under ``torch.inference_mode()`` with ``run_in_batches`` (halving on out-of-memory).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch import nn

from engine.core.errors import UserError
from engine.core.jsonable import json_float
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.io.blur import gaussian_blur
from engine.methods.runner import model_device
from engine.metrics._common import as_map
from engine.models.loading import LoadedModel
from engine.models.outputs import OUTPUT_CHOICES, as_batch, check_target, logits_of, select_output
from engine.runtime.batching import run_in_batches

BASELINES = ("blur", "zero")
CURVES = ("deletion", "insertion")


def trapezoid_auc(x: Any, y: Any) -> float:
    """Area under y(x) by the trapezoid rule; x must rise from 0 to 1."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or x.shape != y.shape or x.size < 2:
        raise UserError(f"a curve needs two 1-D arrays of the same length (at least 2), got {x.shape} and {y.shape}")
    if np.any(np.diff(x) < 0) or x[0] < 0 or x[-1] > 1:
        raise UserError("a curve's x values must rise within [0, 1]")
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1]) / 2.0))


@dataclass
class Curve:
    """One deletion or insertion curve: the target's score against the share of pixels changed."""

    kind: str  # "deletion" or "insertion"
    fractions: np.ndarray  # steps + 1 values from 0 to 1
    scores: np.ndarray  # the target's output (a probability by default) at each step
    auc: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "fractions": [float(v) for v in self.fractions],
            "scores": [json_float(v) for v in self.scores],
            "auc": json_float(self.auc),
        }


@dataclass
class FaithfulnessResult:
    """Deletion and/or insertion curves of one map, with what produced them."""

    target: int
    output: str
    baseline: str
    blur_sigma: float | None
    steps: int
    original_score: float  # the target's output on the image
    baseline_score: float  # ... and on the baseline
    deletion: Curve | None
    insertion: Curve | None
    batch_size_used: int
    forward_passes: int
    device: str
    elapsed_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": int(self.target),
            "output": self.output,
            "baseline": self.baseline,
            "blur_sigma": self.blur_sigma,
            "steps": int(self.steps),
            "original_score": json_float(self.original_score),
            "baseline_score": json_float(self.baseline_score),
            "deletion": None if self.deletion is None else self.deletion.to_dict(),
            "insertion": None if self.insertion is None else self.insertion.to_dict(),
            "batch_size_used": int(self.batch_size_used),
            "forward_passes": int(self.forward_passes),
            "device": self.device,
            "elapsed_s": round(float(self.elapsed_s), 6),
        }


def step_counts(n_pixels: int, steps: int) -> np.ndarray:
    """How many pixels are changed at each of the steps + 1 points: round(k n / steps), 0 to n."""
    k = np.arange(steps + 1, dtype=np.int64)
    return (2 * k * n_pixels + steps) // (2 * steps)


def make_baseline(x: torch.Tensor, baseline: str, blur_sigma: float = 5.0) -> torch.Tensor:
    """The image that deleted pixels take: zeros, or a Gaussian blur of the image (RISE uses sigma 5)."""
    if baseline == "zero":
        return torch.zeros_like(x)
    if baseline == "blur":
        if not blur_sigma > 0:
            raise UserError(f"the blur baseline needs a positive sigma, not {blur_sigma}")
        return gaussian_blur(x, blur_sigma)
    raise UserError(f"unknown baseline '{baseline}'; choose one of {', '.join(BASELINES)}")


def _scores(output, target: int, kind: str) -> torch.Tensor:
    logits = logits_of(output)
    logits = logits if logits.dtype == torch.float64 else logits.float()  # half-precision softmax loses digits
    return select_output(logits, target, kind)


def _check_settings(curves: tuple[str, ...], steps: Any, n_pixels: int, output: str) -> tuple[tuple[str, ...], int]:
    """The curves and step count, checked against the image's pixel count."""
    curves = tuple(curves)
    if not curves or any(c not in CURVES for c in curves) or len(set(curves)) != len(curves):
        raise UserError(f"curves must name deletion and/or insertion, not {', '.join(map(str, curves)) or 'nothing'}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= n_pixels:
        raise UserError(f"steps must be an integer from 1 to the number of pixels ({n_pixels}), not {steps}")
    if output not in OUTPUT_CHOICES:
        raise UserError(f"unknown output '{output}'; choose one of {', '.join(OUTPUT_CHOICES)}")
    return curves, int(steps)


def _importance_rank(values: np.ndarray, device: torch.device) -> torch.Tensor:
    """rank[i, j] = position of pixel (i, j) in the importance order (0 = most important)."""
    height, width = values.shape
    order = np.argsort(-values.ravel(), kind="stable")
    rank = np.empty(height * width, dtype=np.int64)
    rank[order] = np.arange(height * width)
    return torch.from_numpy(rank).view(height, width).to(device)


def _curve_scores(
    module: nn.Module,
    x: torch.Tensor,
    base: torch.Tensor,
    rank: torch.Tensor,
    steps: int,
    curves: tuple[str, ...],
    score: Callable[[Any], torch.Tensor],
    batch_size: int,
    progress: ProgressFn,
    cancel: CancelToken,
) -> tuple[np.ndarray, int]:
    """The target's score at every step of every curve (curves x (steps + 1)) and the batch size that worked."""
    device = x.device
    _, _, height, width = x.shape
    counts = torch.from_numpy(step_counts(height * width, steps)).to(device)
    points = steps + 1
    insertion_row = torch.tensor([c == "insertion" for c in curves], device=device)
    total = points * len(curves)
    scores = torch.empty(total, dtype=torch.float64)  # on the CPU: MPS has no float64

    def evaluate(begin: int, end: int) -> None:
        index = torch.arange(begin, end, device=device)
        changed = rank[None] < counts[index % points][:, None, None]  # B x H x W: the top-k pixels
        # Deletion puts the baseline on the changed pixels; insertion puts the image there.
        from_baseline = (changed ^ insertion_row[index // points][:, None, None]).unsqueeze(1)
        batch = torch.where(from_baseline, base, x)
        scores[begin:end] = score(module(batch)).cpu()

    used = run_in_batches(total, batch_size, evaluate, cancel=cancel, progress=progress, message="perturbed images", device=device, progress_span=(0.02, 0.99))
    return scores.numpy().reshape(len(curves), points), used


def deletion_insertion(
    model: nn.Module | LoadedModel,
    inputs: torch.Tensor,
    saliency_map: Any,
    target: int | None = None,
    *,
    curves: tuple[str, ...] = CURVES,
    steps: int = 100,
    baseline: str = "blur",
    blur_sigma: float = 5.0,
    output: str = "probability",
    absolute: bool = False,
    batch_size: int = 32,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> FaithfulnessResult:
    """Deletion and insertion curves of one map for one image (C x H x W or 1 x C x H x W).

    ``target=None`` follows the class the model predicts for the image. ``output`` is what is
    tracked (probability, as in RISE, or logit / log_probability). ``absolute`` ranks pixels by
    |map| instead of by signed value.
    """
    progress, cancel = resolve(progress, cancel)
    start_time = time.perf_counter()
    module = model.module if isinstance(model, LoadedModel) else model
    device = model_device(module)
    x = as_batch(inputs).detach().to(device)
    _, _, height, width = x.shape
    values = as_map(saliency_map)
    if values.shape != (height, width):
        raise UserError(f"the map is {values.shape[0]} x {values.shape[1]} but the image is {height} x {width}; they must match")
    if absolute:
        values = np.abs(values)
    n_pixels = height * width
    curves, steps = _check_settings(curves, steps, n_pixels, output)

    progress(0.0, "forward")
    cancel.check()
    with torch.inference_mode():
        base = make_baseline(x, baseline, blur_sigma)
        logits = logits_of(module(x))
        target = check_target(target, logits.shape[1])
        target = int(torch.argmax(logits[0])) if target is None else target
        original_score = float(_scores(logits, target, output)[0])
        baseline_score = float(_scores(module(base), target, output)[0])
        scores, used = _curve_scores(module, x, base, _importance_rank(values, device), steps, curves, partial(_scores, target=target, kind=output), batch_size, progress, cancel)
    cancel.check()

    fractions = step_counts(n_pixels, steps) / n_pixels
    result = {kind: Curve(kind, fractions, scores[i], trapezoid_auc(fractions, scores[i])) for i, kind in enumerate(curves)}
    progress(1.0, "done")
    return FaithfulnessResult(
        target=target,
        output=output,
        baseline=baseline,
        blur_sigma=float(blur_sigma) if baseline == "blur" else None,
        steps=steps,
        original_score=original_score,
        baseline_score=baseline_score,
        deletion=result.get("deletion"),
        insertion=result.get("insertion"),
        batch_size_used=used,
        forward_passes=scores.size + 2,
        device=str(device),
        elapsed_s=time.perf_counter() - start_time,
    )
