"""Ablation-CAM (Desai and Ramaswamy, WACV 2020): gradient-free class-activation map.

Each feature map A_k of the layer is set to zero in turn and the drop of the target's score is
measured: w_k = (y - y_k) / y, where y is the score of the input and y_k the score with A_k
ablated; the map is ReLU(sum_k w_k A_k), upsampled. (pytorch-grad-cam sets a map to a very
negative value instead of zero when the layer's output has negative values; where a ReLU follows
the layer, as in VGG and ResNet, both give the same result.)

The part of the network before the layer runs once: the layer's output is replaced by a batch of
copies, one per ablated channel, and only the rest of the network runs on the batch. Where the
rest of the network cannot take a batch from a single input (it concatenates the layer's output
with an earlier tensor, say), the whole input is repeated instead. Batches are sized by the memory
budget and halved on out-of-memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.core.errors import UserError
from engine.methods._base import output_scores
from engine.methods._cam import BatchedCamParams, Capture, channel_score_cam
from engine.runtime.batching import forward_with_memory_estimate, is_out_of_memory, run_in_batches
from engine.runtime.sizing import plan_batches


@dataclass(frozen=True)
class AblationCamParams(BatchedCamParams):
    pass


class _Ablator:
    """Forward hook that replaces the layer's output by copies with one channel zeroed each (for
    token layers, zeroed on the patch tokens only; the class token is kept)."""

    def __init__(self, cap: Capture, dtype: torch.dtype) -> None:
        self.feature = cap.feature.to(dtype)
        self.layout = cap.layout
        self.template = cap.output.to(dtype)
        self.channels = torch.arange(0)

    def __call__(self, _module, _inputs, output):
        copies = self.feature.unsqueeze(0).repeat(len(self.channels), 1, 1, 1)
        copies[torch.arange(len(self.channels)), self.channels] = 0
        replaced = self.layout.from_maps(copies, self.template)
        if isinstance(output, tuple):  # a Hugging Face layer: (hidden states, ...)
            return (replaced, *output[1:])
        return replaced


def _ablated_scores(model, cap: Capture, params: AblationCamParams, progress, cancel) -> tuple[torch.Tensor, dict]:
    """The score with each channel of the layer zeroed, the score y without, and the batching figures."""
    if cap.calls != 1:
        raise UserError(
            f"layer '{cap.layer_name}' runs {cap.calls} times in one forward pass; Ablation-CAM needs a layer that runs once (a ResNet's shared ReLU does not)"
        )
    y = float(output_scores(cap.setup.logits, cap.setup.target, params.output, double=True)[0])
    if y == 0:
        raise UserError("the target's score is exactly 0, so Ablation-CAM's relative drops (y - y_k) / y are undefined; explain another output")
    x = cap.setup.batch
    channels = cap.feature.shape[0]
    with torch.inference_mode():
        _, per_image = forward_with_memory_estimate(model, x)
    sizer = plan_batches(per_image, x.device)
    scores = torch.empty(channels, dtype=torch.float64, device=x.device)
    ablator = _Ablator(cap, x.dtype)
    single = [True]  # feed one input and let the rest of the network broadcast the batch

    def run(start: int, stop: int) -> torch.Tensor:
        ablator.channels = torch.arange(start, stop, device=x.device)
        inputs = x if single[0] else x.expand(stop - start, *x.shape[1:])
        return model(inputs)

    def evaluate(start: int, stop: int) -> None:
        with torch.inference_mode():
            try:
                out = output_scores(run(start, stop), cap.setup.target, params.output, double=True)
                if single[0] and out.shape[0] != stop - start:
                    raise RuntimeError("the output did not follow the ablated batch")
            except RuntimeError as exc:
                if not single[0] or is_out_of_memory(exc):
                    raise
                single[0] = False
                out = output_scores(run(start, stop), cap.setup.target, params.output, double=True)
            scores[start:stop] = out

    handle = cap.layer.register_forward_hook(ablator)
    try:
        run_in_batches(
            channels, sizer, evaluate, cancel=cancel, progress=progress, message="ablated channels", device=x.device, progress_span=(0.05, 0.98)
        )
    finally:
        handle.remove()
    return scores, {"score": y, "forward_passes": channels + 1, "rest_of_network_only": single[0], **sizer.extras()}


def _weights(scores: torch.Tensor, info: dict, _params: AblationCamParams) -> torch.Tensor:
    """The relative drop of the score without each channel, (y - y_k) / y."""
    return (info["score"] - scores) / info["score"]


SPEC = channel_score_cam(
    "ablationcam",
    "Ablation-CAM: a layer's feature maps weighted by the relative drop of the target's score when each is zeroed",
    _ablated_scores,
    _weights,
    AblationCamParams,
)
