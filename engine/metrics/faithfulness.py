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
from collections.abc import Sequence
from dataclasses import dataclass
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
from engine.models.outputs import OUTPUT_CHOICES, as_batch, check_target, logits_of
from engine.runtime.batching import forward_with_memory_estimate, run_in_batches
from engine.runtime.sizing import fit_batch

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


def _scores(output, targets: torch.Tensor, kind: str) -> torch.Tensor:
    """Row i's explained output for its own class ``targets[i]`` (a long tensor, one per row)."""
    logits = logits_of(output)
    logits = logits if logits.dtype == torch.float64 else logits.float()  # half-precision softmax loses digits
    if kind == "probability":
        logits = torch.softmax(logits, dim=1)
    elif kind == "log_probability":
        logits = torch.log_softmax(logits, dim=1)
    elif kind != "logit":
        raise UserError(f"unknown output '{kind}'; choose one of {', '.join(OUTPUT_CHOICES)}")
    return logits.gather(1, targets.to(logits.device)[:, None])[:, 0]


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
    targets: torch.Tensor,
    steps: int,
    curves: tuple[str, ...],
    output: str,
    batch_size: int,
    progress: ProgressFn,
    cancel: CancelToken,
) -> tuple[np.ndarray, int]:
    """The target's score at every step of every curve of every image (images x curves x (steps
    + 1)) and the batch size that worked. Row r of the pool is image r // (curves x points), curve
    (r // points) % curves, point r % points: one forward holds steps of several images."""
    device = x.device
    n_images, _, height, width = x.shape
    counts = torch.from_numpy(step_counts(height * width, steps)).to(device)
    points = steps + 1
    per_image = points * len(curves)
    insertion_row = torch.tensor([c == "insertion" for c in curves], device=device)
    total = per_image * n_images
    scores = torch.empty(total, dtype=torch.float64)  # on the CPU: MPS has no float64

    def evaluate(begin: int, end: int) -> None:
        index = torch.arange(begin, end, device=device)
        image = index // per_image
        changed = rank[image] < counts[index % points][:, None, None]  # B x H x W: the top-k pixels
        # Deletion puts the baseline on the changed pixels; insertion puts the image there.
        from_baseline = (changed ^ insertion_row[(index // points) % len(curves)][:, None, None]).unsqueeze(1)
        batch = torch.where(from_baseline, base[image], x[image])
        scores[begin:end] = _scores(module(batch), targets[image], output).cpu()

    used = run_in_batches(total, batch_size, evaluate, cancel=cancel, progress=progress, message="perturbed images", device=device, progress_span=(0.02, 0.99))
    return scores.numpy().reshape(n_images, len(curves), points), used


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
    x = as_batch(inputs)
    settings = {"curves": curves, "steps": steps, "baseline": baseline, "blur_sigma": blur_sigma, "output": output, "absolute": absolute}
    (result,) = deletion_insertion_many(model, x, [saliency_map], [target], batch_size=batch_size, progress=progress, cancel=cancel, **settings)
    return result


def deletion_insertion_many(
    model: nn.Module | LoadedModel,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    saliency_maps: Sequence[Any],
    targets: Sequence[int | None] | None = None,
    *,
    curves: tuple[str, ...] = CURVES,
    steps: int = 100,
    baseline: str = "blur",
    blur_sigma: float = 5.0,
    output: str = "probability",
    absolute: bool = False,
    batch_size: int = 0,
    memory_budget_mb: int = 0,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> list[FaithfulnessResult]:
    """:func:`deletion_insertion` of N maps, map i on image i (N x C x H x W, or N images of one
    size) with its own target (None: image i's prediction), the perturbed images of all of them
    pooled into the same forwards. ``batch_size`` is the perturbed images per forward (0: 32 on a
    CPU, 256 on a GPU, lowered to fit ``memory_budget_mb``, by default a quarter of the available
    RAM or 80% of free GPU memory), halved on out-of-memory. The curves are those of
    :func:`deletion_insertion` per image up to float rounding."""
    progress, cancel = resolve(progress, cancel)
    start_time = time.perf_counter()
    module = model.module if isinstance(model, LoadedModel) else model
    device = model_device(module)
    x = _images(inputs).to(device)
    count, _, height, width = x.shape
    maps, targets = _maps_and_targets(saliency_maps, targets, count, (height, width), absolute)
    curves, steps = _check_settings(curves, steps, height * width, output)

    progress(0.0, "forward")
    cancel.check()
    with torch.inference_mode():
        base = make_baseline(x, baseline, blur_sigma)
        size = _row_batch(module, x, batch_size, memory_budget_mb)
        original, base_logits, chosen = _originals(module, x, base, targets, size)
        chosen_rows = torch.tensor(chosen, dtype=torch.long)
        original_scores = _scores(original, chosen_rows, output)
        baseline_scores = _scores(base_logits, chosen_rows, output)
        rank = torch.stack([_importance_rank(values, device) for values in maps])
        scores, used = _curve_scores(module, x, base, rank, chosen_rows.to(device), steps, curves, output, size, progress, cancel)
    cancel.check()

    fractions = step_counts(height * width, steps) / (height * width)
    elapsed = (time.perf_counter() - start_time) / count
    results = []
    for i in range(count):
        made = {kind: Curve(kind, fractions, scores[i, c], trapezoid_auc(fractions, scores[i, c])) for c, kind in enumerate(curves)}
        results.append(
            FaithfulnessResult(
                target=chosen[i],
                output=output,
                baseline=baseline,
                blur_sigma=float(blur_sigma) if baseline == "blur" else None,
                steps=steps,
                original_score=float(original_scores[i]),
                baseline_score=float(baseline_scores[i]),
                deletion=made.get("deletion"),
                insertion=made.get("insertion"),
                batch_size_used=used,
                forward_passes=scores[i].size + 2,
                device=str(device),
                elapsed_s=elapsed,
            )
        )
    progress(1.0, "done")
    return results


def _images(inputs) -> torch.Tensor:
    if isinstance(inputs, torch.Tensor):
        x = inputs
    else:
        inputs = [as_batch(i) for i in inputs]
        if not inputs or len({tuple(i.shape) for i in inputs}) > 1:
            raise UserError("deletion and insertion of several maps need one or more images of the same size")
        x = torch.cat(inputs)
    if x.ndim != 4 or x.shape[0] == 0 or not x.is_floating_point():
        raise UserError(f"expected a floating-point N x C x H x W batch of images, got shape {tuple(x.shape)}")
    return x.detach()


def _maps_and_targets(saliency_maps, targets, count: int, size: tuple[int, int], absolute: bool) -> tuple[list[np.ndarray], list[int | None]]:
    maps = [as_map(m) for m in saliency_maps]
    targets = [None] * count if targets is None else list(targets)
    if len(maps) != count or len(targets) != count:
        raise UserError(f"{len(maps)} maps and {len(targets)} targets for {count} images; give one of each per image")
    for values in maps:
        if values.shape != size:
            raise UserError(f"the map is {values.shape[0]} x {values.shape[1]} but the image is {size[0]} x {size[1]}; they must match")
    return ([np.abs(v) for v in maps] if absolute else maps), targets


def _row_batch(module: nn.Module, x: torch.Tensor, requested: int, budget_mb: int) -> int:
    """Perturbed images per forward: ``requested``, or the default lowered to fit the budget."""
    if requested and not budget_mb:
        return requested
    _, per_image = forward_with_memory_estimate(module, x[:1])
    return fit_batch(requested or (32 if x.device.type == "cpu" else 256), per_image, x.device, budget_mb)[0]


def _originals(module: nn.Module, x: torch.Tensor, base: torch.Tensor, targets: list[int | None], size: int):
    """The logits on the images and on their baselines (one image at a time when there is one,
    ``size`` at a time otherwise) and each image's target (None: its prediction)."""
    parts = [(x[i : i + size], base[i : i + size]) for i in range(0, x.shape[0], max(1, size))]
    original = torch.cat([logits_of(module(a)) for a, _ in parts])
    base_logits = torch.cat([logits_of(module(b)) for _, b in parts])
    chosen = []
    for i, target in enumerate(targets):
        target = check_target(target, original.shape[1])
        chosen.append(int(torch.argmax(original[i])) if target is None else target)
    return original, base_logits, chosen
