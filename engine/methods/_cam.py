"""The class-activation-map family: the methods' parameters, one capture of a layer's feature
maps (and, when asked, their gradient), the end of every CAM (the optional ReLU, the bilinear
upsampling to the input and the record of the layer-resolution map), and the family base.

The base (after pytorch-grad-cam's ``BaseCAM``: one function differs per CAM) registers a CAM from
its one function: ``gradient_cam`` from a weighting ``weigh(feature C x h x w, grad C x h x w)``
that gives a weight per channel (C) or per position (C x h x w), ``activation_cam`` from a
gradient-free ``project(feature) -> h x w`` map (Eigen-CAM). Either builds the single-image
``explain`` and the batched ``explain_batch`` (one forward and backward for N images: for a model
in eval mode the rows do not interact, so the gradient of the sum of every image's own target
output holds each image's gradient) into one ``MethodSpec``; the maps of the two agree up to
float rounding (tests/engine/test_batched_methods.py).

The layer is recorded with ``engine.models.layers.UntouchedRecorder`` (the rest of the network gets
a copy, so an in-place ReLU after the layer, as in VGG, changes neither) and its output is turned into
C x h x w feature maps by ``engine.models.tokens``: a vision transformer's patch tokens and Swin's
channels-last maps become grids with no user-written reshape function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from engine.core.errors import UserError
from engine.core.explanation import Explanation
from engine.core.params import param
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.methods._base import RunSettingNames, Setup, begin, check_batch, finish, selected_sum, setups_of, to_size
from engine.methods._registry import Cost, MethodSpec, register
from engine.models.layers import UntouchedRecorder, channels_last_hint, resolve_layer
from engine.models.outputs import OUTPUT_CHOICES, logits_of
from engine.models.tokens import MapLayout, feature_map

# Score-CAM and Ablation-CAM take one forward per channel of the layer; before a run the cost is
# announced for this many (ResNet-18's layer4 and VGG's last convolution have 512).
TYPICAL_CHANNELS = 512

# A gradient CAM's one function: (feature maps C x h x w, their gradient) -> weights, C or C x h x w.
Weigh = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# A gradient-free CAM's one function: feature maps C x h x w -> the h x w map (Eigen-CAM).
Project = Callable[[torch.Tensor], torch.Tensor]
# A channel-score CAM's two functions: the model's score with each channel's perturbation,
# score(model, capture, params, progress, cancel) -> (C scores in float64, extras); and the
# channel weights from them, weigh(scores, extras, params) -> C weights (Score-CAM, Ablation-CAM).
Score = Callable[..., tuple[torch.Tensor, dict[str, Any]]]
WeighScores = Callable[[torch.Tensor, dict[str, Any], Any], torch.Tensor]


@dataclass(frozen=True)
class CamParams:
    layer: str = param("", "layer whose feature maps are weighted (empty: the last convolutional block, e.g. layer4 of a ResNet)")
    relu: bool = param(True, "keep only the positive evidence (ReLU of the weighted sum); off: the signed map")
    output: str = param("logit", "what is explained: the target's logit, probability or log-probability", choices=OUTPUT_CHOICES)


@dataclass(frozen=True)
class BatchedCamParams(RunSettingNames, CamParams):
    """The parameters of a CAM that evaluates one input per channel in batches (Score-CAM,
    Ablation-CAM); the batch size and memory budget are settings of the run."""


@dataclass(frozen=True)
class Capture:
    """One forward (and backward) through a model with a layer recorded."""

    setup: Setup
    layer_name: str
    layer: nn.Module
    feature: torch.Tensor  # C x h x w, float, detached
    grad: torch.Tensor | None  # C x h x w, or None when no gradient was asked for
    calls: int  # how often the layer ran in the forward
    layout: MapLayout  # how the layer's output became ``feature`` (tokens, channels last ...)
    output: torch.Tensor  # the layer's own output for the input, detached (batch 1)

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.setup.batch.shape[2:])


def capture(model: nn.Module, inputs: torch.Tensor, target: int | None, params: CamParams, progress: ProgressFn, cancel: CancelToken, method: str, *, gradient: bool) -> Capture:
    """Run the model once on ``inputs`` with ``params.layer`` recorded; with ``gradient``, also take
    d output / d feature maps for the target (``capture_many`` for one image)."""
    x = begin(inputs, progress, cancel, "forward")
    return capture_many(model, x, [target], params, cancel, method, gradient=gradient, progress=progress)[0]


def capture_many(model: nn.Module, x: torch.Tensor, targets, params: CamParams, cancel: CancelToken, method: str, *, gradient: bool, progress: ProgressFn | None = None) -> list[Capture]:
    """One forward (and, with ``gradient``, one backward) of an N x C x H x W batch with the layer
    recorded; one Capture per image. For a model in eval mode the rows do not interact, so the
    gradient of the sum of every image's own target output holds each image's gradient."""
    layer_name, layer = resolve_layer(model, params.layer, tuple(x.shape[1:]))
    calls = [0]

    def count(*_args) -> None:
        calls[0] += 1

    counter = layer.register_forward_hook(count)
    try:
        if gradient:
            x = x.clone().requires_grad_(True)
        with torch.enable_grad() if gradient else torch.inference_mode(), UntouchedRecorder(layer) as recorder:
            logits = logits_of(model(x))
            setups = setups_of(x.detach(), logits, targets)
            activation = recorder.activation
            maps, layout = feature_map(activation, layer_name, method, tuple(x.shape[2:]), channels_last_hint(layer), rows=x.shape[0])
            grads = [None] * x.shape[0]
            if gradient:
                cancel.check()
                if progress is not None:
                    progress(0.5, "backward")
                (grad,) = torch.autograd.grad(selected_sum(logits, setups, params.output), activation, allow_unused=True)
                if grad is None:
                    raise UserError(f"the target output does not depend on layer '{layer_name}'; choose a layer on the path to the output")
                grads = list(layout.to_maps(grad.detach()).float())
            features = maps.detach().float()
    finally:
        counter.remove()
    output = activation.detach()
    return [Capture(setups[i], layer_name, layer, features[i].clone(), grads[i], calls[0], layout, output[i : i + 1].clone()) for i in range(x.shape[0])]


def weighted_sum(weights: torch.Tensor, feature: torch.Tensor) -> torch.Tensor:
    """sum_k w_k A_k for weights of shape C (one per map) or C x h x w (one per position)."""
    if weights.ndim == 1:
        return torch.einsum("k,khw->hw", weights, feature)
    return (weights * feature).sum(0)


def end(cap: Capture, method: str, params: Any, raw: torch.Tensor, progress: ProgressFn, extras: dict[str, Any] | None = None) -> Explanation:
    """ReLU (when ``params.relu``), upsample to the input and wrap up with the usual extras."""
    if getattr(params, "relu", True):
        raw = torch.relu(raw)
    record = {"layer": cap.layer_name, "activations": cap.feature.cpu().numpy(), "raw_map": raw.cpu().numpy()}
    if cap.layout.kind != "nchw":
        record["layer_layout"] = cap.layout.describe()
    record.update(extras or {})
    return finish(cap.setup, method, params, to_size(raw[None], cap.size)[0], progress, record)


def weigh_and_end(cap: Capture, weigh: Weigh, method: str, params: Any, progress: ProgressFn) -> Explanation:
    """The map of a CAM weighted by its gradient, from its capture: ``weigh(feature, grad)``, the
    weighted sum of the feature maps, and ``end`` (channel weights kept in the extras)."""
    weights = weigh(cap.feature, cap.grad)
    extras = {"weights": weights.cpu().numpy()} if weights.ndim == 1 else {}
    return end(cap, method, params, weighted_sum(weights, cap.feature), progress, extras)


def gradient_cam(name: str, summary: str, weigh: Weigh, params_cls: type = CamParams) -> MethodSpec:
    """Register the CAM ``name`` whose feature maps are weighted by ``weigh(feature, grad)``
    (weights per channel, C, or per position, C x h x w): its ``explain`` and ``explain_batch``."""

    def explain(model: nn.Module, inputs: torch.Tensor, target: int | None, params, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> Explanation:
        progress, cancel = resolve(progress, cancel)
        cap = capture(model, inputs, target, params, progress, cancel, name, gradient=True)
        return weigh_and_end(cap, weigh, name, params, progress)

    def explain_batch(model: nn.Module, inputs: torch.Tensor, targets, params, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> list[Explanation]:
        progress, cancel = resolve(progress, cancel)
        x, targets = check_batch(inputs, targets)
        return [weigh_and_end(cap, weigh, name, params, progress) for cap in capture_many(model, x, targets, params, cancel, name, gradient=True)]

    return _register(name, summary, params_cls, explain, explain_batch, kind="gradient", cost=Cost(1, 1))


def activation_cam(name: str, summary: str, project: Project, params_cls: type) -> MethodSpec:
    """Register the gradient-free CAM ``name`` whose layer-resolution map is ``project(feature)``
    (h x w; the target plays no part): its ``explain`` and ``explain_batch``, one forward each."""

    def as_cam(params) -> CamParams:
        return CamParams(layer=params.layer, relu=params.relu)

    def explain(model: nn.Module, inputs: torch.Tensor, target: int | None, params, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> Explanation:
        progress, cancel = resolve(progress, cancel)
        cap = capture(model, inputs, target, as_cam(params), progress, cancel, name, gradient=False)
        cancel.check()
        return end(cap, name, params, project(cap.feature), progress)

    def explain_batch(model: nn.Module, inputs: torch.Tensor, targets, params, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> list[Explanation]:
        progress, cancel = resolve(progress, cancel)
        x, targets = check_batch(inputs, targets)
        caps = capture_many(model, x, targets, as_cam(params), cancel, name, gradient=False)
        return [end(cap, name, params, project(cap.feature), progress) for cap in caps]

    return _register(name, summary, params_cls, explain, explain_batch, kind="activation", cost=Cost(1))


def channel_score_cam(name: str, summary: str, score: Score, weigh: WeighScores, params_cls: type) -> MethodSpec:
    """Register the CAM ``name`` whose channel weights come from the model's scores of one
    perturbed input per channel (``score``, batched by the run's execution context) through
    ``weigh``: one forward to capture the layer, then one per channel."""

    def explain(model: nn.Module, inputs: torch.Tensor, target: int | None, params, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> Explanation:
        progress, cancel = resolve(progress, cancel)
        cap = capture(model, inputs, target, params, progress, cancel, name, gradient=False)
        scores, info = score(model, cap, params, progress, cancel)
        cancel.check()
        weights = weigh(scores, info, params).to(cap.feature.dtype)
        extras = {"weights": weights.cpu().numpy(), "scores": scores.cpu().numpy(), **info}
        return end(cap, name, params, weighted_sum(weights, cap.feature), progress, extras)

    explain.__doc__ = f"{name} map of one input: feature maps weighted by the model's score with each perturbed."
    explain.__name__ = explain.__qualname__ = f"explain_{name}"

    def cost(params, height: int, width: int) -> Cost:
        """One forward per feature map of the layer (counted for ``TYPICAL_CHANNELS``) and the full one."""
        return Cost(TYPICAL_CHANNELS + 1)

    return register(MethodSpec(name=name, summary=summary, params_cls=params_cls, explain=explain, kind="perturbation", needs_layer=True, cost=cost))


def _register(name: str, summary: str, params_cls: type, explain: Callable, explain_batch: Callable, *, kind: str, cost: Cost) -> MethodSpec:
    explain.__doc__ = f"{name} map of one input."
    explain_batch.__doc__ = f"{name} maps of an N x C x H x W batch, one target (or None) per image, in one pass."
    for function, prefix in ((explain, "explain"), (explain_batch, "explain_batch")):
        function.__name__ = function.__qualname__ = f"{prefix}_{name.replace('+', 'p').replace('-', '_')}"
    return register(MethodSpec(name, summary, params_cls, explain, kind, needs_layer=True, cost=lambda params, height, width: cost, explain_batch=explain_batch))
