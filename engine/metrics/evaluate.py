"""One call that scores a map: localisation against a mask and/or deletion and insertion curves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from engine.core.errors import UserError
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.metrics.faithfulness import CURVES, FaithfulnessResult, deletion_insertion, deletion_insertion_many
from engine.metrics.localisation import LocalisationScores, localisation_scores
from engine.models.loading import LoadedModel


@dataclass
class MapEvaluation:
    """The scores of one map; a part is None when its inputs (mask, or model and image) were not given."""

    localisation: LocalisationScores | None
    faithfulness: FaithfulnessResult | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "localisation": None if self.localisation is None else self.localisation.to_dict(),
            "faithfulness": None if self.faithfulness is None else self.faithfulness.to_dict(),
        }


def evaluate_map(
    saliency_map: Any,
    *,
    mask: Any = None,
    model: nn.Module | LoadedModel | None = None,
    inputs: torch.Tensor | None = None,
    target: int | None = None,
    absolute: bool = False,
    tolerance: float = 0.0,
    ties: str = "all",
    top_percent: float | None = None,
    curves: tuple[str, ...] = CURVES,
    steps: int = 100,
    baseline: str = "blur",
    blur_sigma: float = 5.0,
    output: str = "probability",
    batch_size: int = 32,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> MapEvaluation:
    """Score a map (numpy H x W or an Explanation): localisation when ``mask`` is given, deletion
    and insertion when ``model`` and ``inputs`` are. An Explanation's target is used when
    ``target`` is None. ``absolute`` scores |map| in both."""
    progress, cancel = resolve(progress, cancel)
    has_model = model is not None and inputs is not None
    if mask is None and not has_model:
        raise UserError("nothing to evaluate: give a mask (localisation) or a model and its input (deletion and insertion)")
    if (model is None) != (inputs is None):
        raise UserError("deletion and insertion need both the model and the input image")
    if target is None:
        target = getattr(saliency_map, "target", None)
    localisation = None
    if mask is not None:
        cancel.check()
        localisation = localisation_scores(saliency_map, mask, tolerance=tolerance, ties=ties, top_percent=top_percent, absolute=absolute)
    faithfulness = None
    if has_model:

        def forward(fraction: float, message: str) -> None:
            progress(0.01 + 0.98 * fraction, message)

        faithfulness = deletion_insertion(
            model,
            inputs,
            saliency_map,
            target,
            curves=curves,
            steps=steps,
            baseline=baseline,
            blur_sigma=blur_sigma,
            output=output,
            absolute=absolute,
            batch_size=batch_size,
            progress=forward,
            cancel=cancel,
        )
    progress(1.0, "done")
    return MapEvaluation(localisation, faithfulness)


def evaluate_maps(
    saliency_maps: Sequence[Any],
    *,
    masks: Sequence[Any] | None = None,
    model: nn.Module | LoadedModel,
    inputs: torch.Tensor | Sequence[torch.Tensor],
    targets: Sequence[int | None] | None = None,
    tolerance: float = 0.0,
    steps: int = 100,
    baseline: str = "blur",
    blur_sigma: float = 5.0,
    output: str = "probability",
    batch_size: int = 0,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> list[MapEvaluation]:
    """:func:`evaluate_map` of N maps at once, map i scored on image i (and on mask i when it is
    not None), the deletion and insertion curves of all of them pooled into the same forwards
    (:func:`engine.metrics.faithfulness.deletion_insertion_many`). An Explanation's target is used
    where ``targets`` is None."""
    progress, cancel = resolve(progress, cancel)
    maps = list(saliency_maps)
    masks = [None] * len(maps) if masks is None else list(masks)
    if len(masks) != len(maps):
        raise UserError(f"{len(masks)} masks for {len(maps)} maps; give one mask (or None) per map")
    if targets is None:
        targets = [getattr(m, "target", None) for m in maps]
    curves = deletion_insertion_many(model, inputs, maps, targets, steps=steps, baseline=baseline, blur_sigma=blur_sigma, output=output, batch_size=batch_size, progress=progress, cancel=cancel)
    local = [None if mask is None else localisation_scores(m, mask, tolerance=tolerance) for m, mask in zip(maps, masks, strict=True)]
    return [MapEvaluation(scores, faith) for scores, faith in zip(local, curves, strict=True)]
