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
from torch import nn

from engine.core.errors import UserError
from engine.core.explanation import Explanation
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.methods._cam import TYPICAL_CHANNELS, BatchedCamParams, Capture, capture, channel_batch, end, scores_of, weighted_sum
from engine.methods._registry import Cost, MethodSpec, register
from engine.runtime.batching import forward_with_memory_estimate, is_out_of_memory, run_in_batches


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
    x = cap.setup.batch
    channels = cap.feature.shape[0]
    with torch.inference_mode():
        _, per_image = forward_with_memory_estimate(model, x)
    batch_size, budget = channel_batch(params, per_image, x.device)
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
                out = scores_of(run(start, stop), cap.setup.target, params.output)
                if single[0] and out.shape[0] != stop - start:
                    raise RuntimeError("the output did not follow the ablated batch")
            except RuntimeError as exc:
                if not single[0] or is_out_of_memory(exc):
                    raise
                single[0] = False
                out = scores_of(run(start, stop), cap.setup.target, params.output)
            scores[start:stop] = out

    handle = cap.layer.register_forward_hook(ablator)
    try:
        used = run_in_batches(
            channels, batch_size, evaluate, cancel=cancel, progress=progress, message="ablated channels", device=x.device, progress_span=(0.05, 0.98)
        )
    finally:
        handle.remove()
    info = {
        "forward_passes": channels + 1,
        "batch_size_used": used,
        "rest_of_network_only": single[0],
        "memory_per_image_mb": per_image / 2**20,
        "memory_budget_mb": None if budget is None else budget / 2**20,
    }
    return scores, info


def explain(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | None,
    params: AblationCamParams,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> Explanation:
    """Ablation-CAM map of one input: feature maps weighted by the relative drop of the score without them."""
    progress, cancel = resolve(progress, cancel)
    cap = capture(model, inputs, target, params, progress, cancel, "ablationcam", gradient=False)
    if cap.calls != 1:
        raise UserError(
            f"layer '{cap.layer_name}' runs {cap.calls} times in one forward pass; Ablation-CAM needs a layer that runs once (a ResNet's shared ReLU does not)"
        )
    y = float(scores_of(cap.setup.logits, cap.setup.target, params.output)[0])
    if y == 0:
        raise UserError("the target's score is exactly 0, so Ablation-CAM's relative drops (y - y_k) / y are undefined; explain another output")
    scores, info = _ablated_scores(model, cap, params, progress, cancel)
    cancel.check()
    weights = ((y - scores) / y).to(cap.feature.dtype)
    extras = {"weights": weights.cpu().numpy(), "scores": scores.cpu().numpy(), "score": y, **info}
    return end(cap, SPEC.name, params, weighted_sum(weights, cap.feature), progress, extras)


def cost(params: AblationCamParams, height: int, width: int) -> Cost:
    """One forward of the rest of the network per feature map (counted for 512) and the full one."""
    return Cost(TYPICAL_CHANNELS + 1)


SPEC = register(
    MethodSpec(
        name="ablationcam",
        summary="Ablation-CAM: a layer's feature maps weighted by the relative drop of the target's score when each is zeroed",
        params_cls=AblationCamParams,
        explain=explain,
        kind="perturbation",
        needs_layer=True,
        cost=cost,
    )
)
