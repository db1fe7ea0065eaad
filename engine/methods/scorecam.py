"""Score-CAM (Wang et al., CVPR workshops 2020): gradient-free class-activation map.

Each feature map A_k of the layer is upsampled bilinearly to the input and scaled to [0, 1]; the
input multiplied by it is scored by the model, and the scores s_k (the target's logit, probability
or log-probability) become the channel weights, by a softmax over the channels (as
pytorch-grad-cam does) or as they are (the paper's code, with the probability). The map is
ReLU(sum_k w_k A_k), upsampled.

Masked inputs are built and evaluated in batches (the perturbation family base, ``_perturb``: sized
by the run's execution context, measured unless set), through the model with its batch norms folded
into the convolutions (``engine.accel.fast_copy``). A feature map that is constant scales to zero
and masks the whole input away, so all of them share one forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.accel import channels_last, fast_copy
from engine.core.params import param
from engine.methods._cam import BatchedCamParams, Capture, channel_score_cam
from engine.methods._perturb import perturbed_outputs
from engine.runtime.batching import forward_with_memory_estimate
from engine.runtime.sizing import automatic_batch_size, plan_batches

WEIGHTING_HELP = "channel weights from the scores: their softmax over the channels (pytorch-grad-cam) or the scores themselves (the paper's code, with output=probability)"


@dataclass(frozen=True)
class ScoreCamParams(BatchedCamParams):
    weighting: str = param("softmax", WEIGHTING_HELP, choices=("softmax", "scores"))


def _masks(feature: torch.Tensor, channels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """B x 1 x H x W masks: the chosen feature maps upsampled and scaled to [0, 1] (0 where constant)."""
    up = F.interpolate(feature[channels][:, None], size=size, mode="bilinear", align_corners=False)
    low = up.amin(dim=(2, 3), keepdim=True)
    span = up.amax(dim=(2, 3), keepdim=True) - low
    return torch.where(span > 0, (up - low) / span.clamp(min=torch.finfo(up.dtype).tiny), torch.zeros_like(up))


def _channel_scores(model, cap: Capture, params: ScoreCamParams, progress, cancel) -> tuple[torch.Tensor, dict]:
    """The score of the input masked by each feature map, and what the batching used."""
    x, feature, target = cap.setup.batch, cap.feature, cap.setup.target
    flat = feature.reshape(feature.shape[0], -1)
    varying = torch.nonzero(flat.amax(1) > flat.amin(1)).flatten()
    constant = feature.shape[0] - len(varying)
    # The constant maps mask everything away: one all-zero input stands for all of them.
    order = torch.cat([varying, varying.new_tensor([-1])]) if constant else varying
    # Batch norms folded into the convolutions, channels-last weights (engine.accel.fast_copy): exact.
    runner = fast_copy(model, x)
    with torch.inference_mode():
        _, per_image = forward_with_memory_estimate(runner, channels_last(x))
    image = x.to(feature.dtype)

    def perturb(start: int, stop: int) -> torch.Tensor:
        chosen = order[start:stop]
        masks = _masks(feature, chosen.clamp(min=0), tuple(x.shape[2:])) * (chosen >= 0).to(feature.dtype).view(-1, 1, 1, 1)
        return (image * masks).to(x.dtype)

    # On a CPU the folded network runs ~15% faster per image in batches of 32 than of 16 (ResNet-18, 224 px).
    sizer = plan_batches(per_image, x.device, automatic=2 * automatic_batch_size(x.device) if x.device.type == "cpu" else None)
    values, _ = perturbed_outputs(
        runner, len(order), perturb, target, params.output, per_image=per_image, device=x.device, progress=progress, cancel=cancel,
        message="masked inputs", span=(0.05, 0.98), double=True, sizer=sizer,
    )  # fmt: skip
    values = values.to(x.device)
    scores = torch.full((feature.shape[0],), float(values[-1]) if constant else 0.0, dtype=torch.float64, device=x.device)
    scores[varying] = values[: len(varying)]
    return scores, {"forward_passes": len(order) + 1, "constant_maps": constant, **sizer.extras()}


def _weights(scores: torch.Tensor, _info: dict, params: ScoreCamParams) -> torch.Tensor:
    return torch.softmax(scores, 0) if params.weighting == "softmax" else scores


SPEC = channel_score_cam(
    "scorecam",
    "Score-CAM: a layer's feature maps weighted by the model's score on the input masked by each of them",
    _channel_scores,
    _weights,
    ScoreCamParams,
)
