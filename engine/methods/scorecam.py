"""Score-CAM (Wang et al., CVPR workshops 2020): gradient-free class-activation map.

Each feature map A_k of the layer is upsampled bilinearly to the input and scaled to [0, 1]; the
input multiplied by it is scored by the model, and the scores s_k (the target's logit, probability
or log-probability) become the channel weights, by a softmax over the channels (as
pytorch-grad-cam does) or as they are (the paper's code, with the probability). The map is
ReLU(sum_k w_k A_k), upsampled.

Masked inputs are built and evaluated in batches sized by the memory budget, through the model with
its batch norms folded into the convolutions (``engine.accel.fast_copy``). A feature map that is
constant scales to zero and masks the whole input away, so all of them share one forward.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from engine.accel import channels_last, fast_copy
from engine.core.explanation import Explanation
from engine.core.params import param
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.methods._cam import TYPICAL_CHANNELS, BatchedCamParams, capture, channel_batch, end, scores_of, weighted_sum
from engine.methods._registry import Cost, MethodSpec, register
from engine.runtime.batching import forward_with_memory_estimate, run_in_batches


@dataclass(frozen=True)
class ScoreCamParams(BatchedCamParams):
    weighting: str = param(
        "softmax",
        "channel weights from the scores: their softmax over the channels (pytorch-grad-cam) or the scores themselves (the paper's code, with output=probability)",
        choices=("softmax", "scores"),
    )
    batch_size: int = param(
        0,
        "masked images evaluated at once, one per channel; 0 = automatic (32 on a CPU, 64 on a GPU, lowered to fit the memory budget); halved on out-of-memory",
        low=0,
    )


def _masks(feature: torch.Tensor, channels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """B x 1 x H x W masks: the chosen feature maps upsampled and scaled to [0, 1] (0 where constant)."""
    up = F.interpolate(feature[channels][:, None], size=size, mode="bilinear", align_corners=False)
    low = up.amin(dim=(2, 3), keepdim=True)
    span = up.amax(dim=(2, 3), keepdim=True) - low
    return torch.where(span > 0, (up - low) / span.clamp(min=torch.finfo(up.dtype).tiny), torch.zeros_like(up))


def _channel_scores(
    model, x: torch.Tensor, feature: torch.Tensor, target: int, params: ScoreCamParams, progress, cancel
) -> tuple[torch.Tensor, dict]:
    """The score of the input masked by each feature map, and what the batching used."""
    flat = feature.reshape(feature.shape[0], -1)
    varying = torch.nonzero(flat.amax(1) > flat.amin(1)).flatten()
    constant = feature.shape[0] - len(varying)
    # The constant maps mask everything away: one all-zero input stands for all of them.
    order = torch.cat([varying, varying.new_tensor([-1])]) if constant else varying
    # Batch norms folded into the convolutions, channels-last weights (engine.accel.fast_copy): exact.
    runner = fast_copy(model, x)
    with torch.inference_mode():
        _, per_image = forward_with_memory_estimate(runner, channels_last(x))
    # On a CPU the folded network runs ~15% faster per image in batches of 32 than of 16 (ResNet-18, 224 px).
    automatic = replace(params, batch_size=32) if params.batch_size == 0 and x.device.type == "cpu" else params
    batch_size, budget = channel_batch(automatic, per_image, x.device)
    values = torch.empty(len(order), dtype=torch.float64, device=x.device)
    image = x.to(feature.dtype)

    def evaluate(start: int, stop: int) -> None:
        chosen = order[start:stop]
        masks = _masks(feature, chosen.clamp(min=0), tuple(x.shape[2:])) * (chosen >= 0).to(feature.dtype).view(-1, 1, 1, 1)
        batch = channels_last((image * masks).to(x.dtype))
        with torch.inference_mode():
            values[start:stop] = scores_of(runner(batch), target, params.output)

    used = run_in_batches(
        len(order), batch_size, evaluate, cancel=cancel, progress=progress, message="masked inputs", device=x.device, progress_span=(0.05, 0.98)
    )
    scores = torch.full((feature.shape[0],), float(values[-1]) if constant else 0.0, dtype=torch.float64, device=x.device)
    scores[varying] = values[: len(varying)]
    info = {
        "forward_passes": len(order) + 1,
        "constant_maps": constant,
        "batch_size_used": used,
        "memory_per_image_mb": per_image / 2**20,
        "memory_budget_mb": None if budget is None else budget / 2**20,
    }
    return scores, info


def explain(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | None,
    params: ScoreCamParams,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> Explanation:
    """Score-CAM map of one input: feature maps weighted by the score of the input they mask."""
    progress, cancel = resolve(progress, cancel)
    cap = capture(model, inputs, target, params, progress, cancel, "scorecam", gradient=False)
    scores, info = _channel_scores(model, cap.setup.batch, cap.feature, cap.setup.target, params, progress, cancel)
    cancel.check()
    weights = torch.softmax(scores, 0) if params.weighting == "softmax" else scores
    weights = weights.to(cap.feature.dtype)
    extras = {"weights": weights.cpu().numpy(), "scores": scores.cpu().numpy(), **info}
    return end(cap, SPEC.name, params, weighted_sum(weights, cap.feature), progress, extras)


def cost(params: ScoreCamParams, height: int, width: int) -> Cost:
    """One forward per feature map of the layer (counted for 512) and the unmasked one."""
    return Cost(TYPICAL_CHANNELS + 1)


SPEC = register(
    MethodSpec(
        name="scorecam",
        summary="Score-CAM: a layer's feature maps weighted by the model's score on the input masked by each of them",
        params_cls=ScoreCamParams,
        explain=explain,
        kind="perturbation",
        needs_layer=True,
        cost=cost,
    )
)
