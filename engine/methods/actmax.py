"""Activation maximisation: optimise an image so that a class logit, a channel or a neuron fires.

Erhan, Bengio, Courville and Vincent (2009), "Visualizing higher-layer features of a deep network";
Simonyan, Vedaldi and Zisserman (2014) for class logits with L2 decay; Mahendran and Vedaldi (2015)
for total variation; Olah, Mordvintsev and Schubert (2017), "Feature Visualization", Distill, for
jitter / scale robustness and the decorrelated Fourier parametrisation.

The image lives in display space [0, 1] per channel; the model sees (x - mean) / std. The map of the
Explanation is sum over channels of |x_opt - x_start|, where x_start is the starting image (the
input itself for init=input), upsampled to the input's size: it shows where the optimisation had to
change the image. The optimised images themselves are in the extras.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.core.errors import UserError
from engine.core.explanation import Explanation
from engine.core.params import param
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.io.blur import gaussian_blur
from engine.methods._actmax_image import FourierImage, PixelImage, jitter, random_rescale, total_variation
from engine.methods._base import OPTIMIZERS, Setup, apply_gradients, begin, finish, predict, report_step, to_size
from engine.methods._registry import Cost, MethodSpec, register
from engine.models.layers import default_cam_layer, get_layer
from engine.models.outputs import check_target, logits_of
from engine.runtime.batching import available_memory_bytes, forward_with_memory_estimate

# Standard deviation of the init=noise start, in normalised units (display: mean + 0.1 * std * z).
_NOISE_STD = 0.1
# Standard deviation of the init=noise Fourier coefficients (the value Lucid uses).
_FOURIER_NOISE_STD = 0.01


@dataclass(frozen=True)
class ActmaxParams:
    objective: str = param("logit", "what is maximised: a class logit, the mean of a layer channel, or one neuron of a channel", choices=("logit", "channel", "neuron"))
    layer: str = param("", "layer for the channel and neuron objectives ('' = automatic: the Grad-CAM layer)")
    channel: int = param(0, "channel of the layer (channel and neuron objectives)", low=0)
    row: int = param(-1, "neuron objective: row in the layer's feature map (-1 = centre)", low=-1)
    col: int = param(-1, "neuron objective: column in the layer's feature map (-1 = centre)", low=-1)
    targets: str = param("", "optimise several at once, one image each: comma-separated classes (logit; an explicit target goes first) or channels (replacing channel); '' = one")
    init: str = param("noise", "start image: small Gaussian noise around the mean colour, the flat mean colour, or the input", choices=("noise", "flat", "input"))
    steps: int = param(256, "optimisation steps", low=1, high=100000)
    lr: float = param(0.05, "learning rate (Adam: about the change per step in [0, 1] units)", low=0.0)
    optimizer: str = param("adam", "optimiser", choices=("adam", "sgd"))
    size: int = param(0, "optimise a size x size image (0 = the input's size); the map is upsampled to the input", low=0, high=4096)
    l2: float = param(0.0, "weight of the L2 decay, weight * mean of the squared normalised image (0 = off)", low=0.0)
    tv: float = param(0.0, "weight of the total variation of the display image (0 = off)", low=0.0)
    jitter: int = param(0, "random translation of up to this many pixels every step (0 = off)", low=0)
    scale: float = param(0.0, "random rescale by a factor in [1 - scale, 1 + scale] every step (0 = off)", low=0.0, high=0.9)
    blur_every: int = param(0, "blur the image every this many steps (0 = never)", low=0)
    blur_sigma: float = param(0.5, "standard deviation in pixels of that blur", low=0.05, high=20.0)
    fourier: bool = param(False, "decorrelated Fourier parametrisation (1/frequency spectrum, ImageNet colour decorrelation, sigmoid)")
    mean: str = param("", "per-channel mean the model input was normalised with (comma-separated, or one value); empty: the loaded model's preprocessing, else ImageNet's")
    std: str = param("", "per-channel standard deviation the model input was normalised with (comma-separated, or one value); empty: as for mean")


# ImageNet statistics (torchvision's weights metadata), used when nothing better is known; their
# averages serve one-channel models.
_IMAGENET = {"mean": "0.485,0.456,0.406", "std": "0.229,0.224,0.225"}
_IMAGENET_GRAY = {"mean": "0.449", "std": "0.226"}


def _per_channel(text: str, name: str, channels: int, like: torch.Tensor) -> torch.Tensor:
    if not text.strip():
        text = (_IMAGENET if channels == 3 else _IMAGENET_GRAY)[name]
    try:
        values = [float(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise UserError(f"parameter '{name}' takes comma-separated numbers, not '{text}'") from None
    if len(values) == 1:
        values = values * channels
    if len(values) != channels:
        raise UserError(f"parameter '{name}' has {len(values)} values but the input has {channels} channel(s): give one value or {channels}")
    if not all(np.isfinite(values)) or (name == "std" and min(values) <= 0):
        raise UserError(f"parameter '{name}' must hold finite numbers{' above 0' if name == 'std' else ''}, not '{text}'")
    return torch.tensor(values, device=like.device, dtype=like.dtype).view(1, channels, 1, 1)


def _indices(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise UserError(f"parameter 'targets' takes comma-separated whole numbers, not '{text}'") from None
    if any(v < 0 for v in values):
        raise UserError(f"parameter 'targets' takes indices of 0 or more, not '{text}'")
    return list(dict.fromkeys(values))


def _units(params: ActmaxParams, target: int | None, predicted: int, n_classes: int) -> list[int]:
    """The classes (logit) or channels (channel, neuron) optimised, one image each; the first is explained."""
    listed = _indices(params.targets)
    if params.objective != "logit":
        return listed or [params.channel]
    for index in listed:
        check_target(index, n_classes)
    if not listed:
        return [predicted if target is None else target]
    return listed if target is None else [target] + [t for t in listed if t != target]


class _Stop(Exception):
    """Raised from a forward hook once the recorded layer has run: the rest of the model is not needed."""


class _Objective:
    """Scores of a batch of normalised images: row i, column j is unit j's objective on image i."""

    def __init__(self, model, kind: str, units: list[int], layer_name: str | None, row: int, col: int) -> None:
        self.model, self.kind, self.units = model, kind, units
        self.layer_name, self.row, self.col = layer_name, row, col
        self.layer = get_layer(model, layer_name) if layer_name else None

    def _activation(self, batch: torch.Tensor) -> torch.Tensor:
        recorded = []

        def hook(_module, _inputs, output):
            recorded.append(output[0] if isinstance(output, (tuple, list)) else output)
            raise _Stop

        handle = self.layer.register_forward_hook(hook)
        try:
            self.model(batch)
        except _Stop:
            pass
        finally:
            handle.remove()
        if not recorded or not isinstance(recorded[0], torch.Tensor):
            raise UserError(f"layer '{self.layer_name}' produced no tensor in the forward pass")
        return recorded[0]

    def scores(self, batch: torch.Tensor) -> torch.Tensor:
        units = self.units
        if self.kind == "logit":
            return logits_of(self.model(batch))[:, units]
        act = self._activation(batch)
        if act.ndim < 2 or max(units) >= act.shape[1]:
            raise UserError(f"layer '{self.layer_name}' has {act.shape[1] if act.ndim >= 2 else 0} channels; channel {max(units)} does not exist")
        picked = act[:, units]
        if self.kind == "channel":
            return picked.flatten(2).mean(2) if picked.ndim > 2 else picked
        if picked.ndim != 4:
            raise UserError(f"the neuron objective needs a layer with a spatial map; '{self.layer_name}' gives shape {tuple(act.shape)}")
        height, width = picked.shape[-2:]
        row = height // 2 if self.row < 0 else self.row
        col = width // 2 if self.col < 0 else self.col
        if row >= height or col >= width:
            raise UserError(f"neuron ({row}, {col}) is outside the {height} x {width} map of layer '{self.layer_name}'")
        return picked[:, :, row, col]


def _choose_objective(model, params: ActmaxParams, setup: Setup, target: int | None) -> tuple[Setup, _Objective]:
    """What is maximised, one unit per image; for class logits the first unit is the explained class."""
    units = _units(params, None if target is None else setup.target, setup.predicted, setup.n_classes)
    if params.objective == "logit":
        return setup.retarget(units[0]), _Objective(model, "logit", units, None, params.row, params.col)
    layer_name = params.layer or default_cam_layer(model, tuple(setup.batch.shape[1:]))
    return setup, _Objective(model, params.objective, units, layer_name, params.row, params.col)


def _start(init: str, display: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, count: int, size: tuple[int, int]) -> torch.Tensor:
    """The display-space start images, count x C x size."""
    channels = display.shape[1]
    if init == "input":
        image = display if tuple(display.shape[-2:]) == size else F.interpolate(display, size=size, mode="bilinear", align_corners=False)
        return image.expand(count, -1, -1, -1).clamp(0.0, 1.0).contiguous()
    image = mean.expand(count, channels, *size)
    if init == "noise":
        image = image + _NOISE_STD * std * torch.randn((count, channels, *size), device=display.device, dtype=display.dtype)
    return image.clamp(0.0, 1.0).contiguous()


def _parametrisation(params: ActmaxParams, start: torch.Tensor, mean: torch.Tensor) -> PixelImage | FourierImage:
    if params.fourier:
        return FourierImage(start, mean, noise_std=_FOURIER_NOISE_STD if params.init == "noise" else None)
    return PixelImage(start)


def _loss(image, objective: _Objective, mean: torch.Tensor, std: torch.Tensor, params: ActmaxParams, step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each unit's objective on its own image, and the loss: minus their sum plus the regularisers."""
    x = image.image()
    normalised = (x - mean) / std
    seen = random_rescale(jitter(normalised, params.jitter), params.scale)
    try:
        values = objective.scores(seen).diagonal()
    except RuntimeError as exc:
        if step == 0 and params.size:
            raise UserError(f"the model does not accept {params.size} x {params.size} inputs ({str(exc).splitlines()[0]}); use size=0") from None
        raise
    loss = -values.sum()
    if params.l2 > 0:
        loss = loss + params.l2 * normalised.pow(2).flatten(1).mean(1).sum()
    if params.tv > 0:
        loss = loss + params.tv * total_variation(x).sum()
    return values, loss


def _ascend(image, objective: _Objective, mean: torch.Tensor, std: torch.Tensor, params: ActmaxParams, progress, cancel) -> np.ndarray:
    """Optimise the images; returns every step's objective values, steps x units (before that step's update)."""
    optimizer = OPTIMIZERS[params.optimizer](image.parameters(), lr=params.lr)
    curve = []
    with torch.enable_grad():
        for step in range(params.steps):
            cancel.check()
            values, loss = _loss(image, objective, mean, std, params, step)
            apply_gradients(optimizer, image.parameters(), torch.autograd.grad(loss, image.parameters()))
            image.project()
            if params.blur_every and (step + 1) % params.blur_every == 0:
                with torch.no_grad():
                    image.set_image(gaussian_blur(image.image(), params.blur_sigma))
            curve.append(values.detach().float().cpu())
            report_step(progress, step + 1, params.steps, float(curve[-1][0]), params.objective)
    return torch.stack(curve).numpy()


def _optimised(image, start: torch.Tensor, objective: _Objective, mean: torch.Tensor, std: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The optimised images (N x C x h x w), their final scores and their change maps at the input's size."""
    with torch.inference_mode():
        x_opt = image.image().detach().clamp(0.0, 1.0)
        final_scores = objective.scores((x_opt - mean) / std).float().cpu().numpy()
        change = to_size((x_opt - start).abs().sum(1), size).float().cpu().numpy()
    return x_opt, final_scores, change


def _check_memory(model: nn.Module, x: torch.Tensor, units: int, size: tuple[int, int]) -> None:
    """All units are optimised in one batch: refuse, before starting, a batch that cannot fit."""
    available = available_memory_bytes(x.device)
    if available is None:
        return
    with torch.inference_mode():  # the model always sees the input's size, whatever size is optimised
        _, per_image = forward_with_memory_estimate(model, x)
    needed = 3 * per_image * units  # activations kept for the backward pass, their gradients, the optimiser state
    if needed > available:
        raise UserError(
            f"activation maximisation of {units} units at {size[0]} x {size[1]} needs about {needed / 2**30:.1f} GiB at once "
            f"and {available / 2**30:.1f} GiB is available; optimise fewer targets per run or a smaller size"
        )


def explain(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | None,
    params: ActmaxParams,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> Explanation:
    """Optimise one image per target to maximise the objective; the map is where it changed most.

    Every step's progress report carries the first (explained) unit's objective as an
    :class:`~engine.core.progress.ObjectiveValue`; step k of it is row k - 1 of ``extras["objective"]``.
    """
    progress, cancel = resolve(progress, cancel)
    x_in = begin(inputs, progress, cancel, "preparing")
    channels, height, width = x_in.shape[1:]
    mean = _per_channel(params.mean, "mean", channels, x_in)
    std = _per_channel(params.std, "std", channels, x_in)
    setup, objective = _choose_objective(model, params, predict(model, x_in, target), target)
    size = (height, width) if params.size == 0 else (params.size, params.size)
    _check_memory(model, x_in, len(objective.units), (height, width))
    image = _parametrisation(params, _start(params.init, (x_in * std + mean), mean, std, len(objective.units), size), mean)
    with torch.no_grad():
        x_start = image.image().detach().clone()
    curve = _ascend(image, objective, mean, std, params, progress, cancel)
    cancel.check()

    x_opt, final_scores, change = _optimised(image, x_start, objective, mean, std, (height, width))
    images = x_opt.permute(0, 2, 3, 1).float().cpu().numpy()
    extras = {
        "image": images[0],
        "images": images,
        "start_image": x_start[0].permute(1, 2, 0).float().cpu().numpy(),
        "change_map": change[0],
        "change_maps": change,
        "objective": curve,
        "final_scores": final_scores,
        "targets": list(objective.units),
        "objective_kind": params.objective,
        "layer": objective.layer_name,
    }
    return finish(setup, SPEC.name, params, change[0], progress, extras)


def cost(params: ActmaxParams, height: int, width: int) -> Cost:
    """Each step evaluates and differentiates one image per optimised unit."""
    units = max(1, len([v for v in params.targets.split(",") if v.strip()]))
    return Cost(params.steps * units + 1, params.steps * units)


SPEC = register(
    MethodSpec(
        name="actmax",
        summary="Activation maximisation: optimise an image for a class, channel or neuron; the map is where it changed",
        params_cls=ActmaxParams,
        explain=explain,
        kind="optimisation",
        cost=cost,
    )
)
