"""What the explanation methods share: the prediction they start from, the explained output, the
Explanation they end with, the legacy names of the run settings, and the small pieces of the
optimising methods (pertmap, actmax)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from engine.core.errors import UserError
from engine.core.explanation import Explanation
from engine.core.progress import CancelToken, ObjectiveValue, ProgressFn
from engine.models.outputs import as_batch, check_target, logits_of, prediction, select_output
from engine.runtime.context import RUN_SETTINGS, current_context

OPTIMIZERS = {"sgd": torch.optim.SGD, "rmsprop": torch.optim.RMSprop, "adam": torch.optim.Adam}


def begin(inputs: torch.Tensor, progress: ProgressFn, cancel: CancelToken, message: str) -> torch.Tensor:
    """The input as a detached 1 x C x H x W batch, once the run has reported that it started."""
    batch = as_batch(inputs).detach()
    progress(0.0, message)
    cancel.check()
    return batch


@dataclass(frozen=True)
class Setup:
    """What a method starts from: the input batch and the model's prediction on it."""

    batch: torch.Tensor
    logits: torch.Tensor  # 1 x classes, detached
    target: int
    predicted: int
    probability: float

    @classmethod
    def from_logits(cls, batch: torch.Tensor, logits: torch.Tensor, target: int | None) -> Setup:
        """Check ``target`` against the classes; None means the predicted class."""
        logits = logits.detach()
        predicted, probability = prediction(logits)
        target = check_target(target, logits.shape[1])
        return cls(batch, logits, predicted if target is None else target, predicted, probability)

    @property
    def device(self) -> torch.device:
        return self.batch.device

    @property
    def n_classes(self) -> int:
        return self.logits.shape[1]

    @property
    def target_probability(self) -> float:
        return float(torch.softmax(self.logits[0].float(), 0)[self.target])

    def retarget(self, target: int) -> Setup:
        return replace(self, target=target)


def output_scores(output, target: int, kind: str, *, double: bool = False) -> torch.Tensor:
    """The explained output of every row for ``target`` (``kind``: logit, probability or
    log-probability): in float64 with ``double``, else in at least single precision (a
    half-precision softmax loses the differences)."""
    logits = logits_of(output)
    if double:
        logits = logits.double()
    elif logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    return select_output(logits, target, kind)


class RunSettingNames:
    """``batch_size`` and ``memory_budget_mb`` were parameters of the batched methods until they
    became settings of the run (``engine.runtime.context``). A parameter class that had them
    derives from this class, so that code written for those parameters still reads them: the
    current run's values (0 outside a run: a measured batch size, the default memory budget);
    ``engine.core.params.build_params`` accepts and leaves out those names (``retired_params``)."""

    retired_params = RUN_SETTINGS

    @property
    def batch_size(self) -> int:
        return current_context().batch_size

    @property
    def memory_budget_mb(self) -> int:
        return current_context().memory_budget_mb


def input_gradient(model: nn.Module, x: torch.Tensor, target: int | None, output: str, progress: ProgressFn, cancel: CancelToken) -> tuple[Setup, torch.Tensor]:
    """The prediction on ``x`` (1 x C x H x W) and the gradient of the target output with respect
    to the input (C x H x W): one forward, one backward."""
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        logits = logits_of(model(x))
        setup = Setup.from_logits(x, logits, target)
        cancel.check()
        progress(0.5, "backward")
        (grad,) = torch.autograd.grad(select_output(logits, setup.target, output).sum(), x)
    return setup, grad[0]


def check_batch(inputs: torch.Tensor, targets) -> tuple[torch.Tensor, list[int | None]]:
    """A batched method's input as a detached N x C x H x W batch and one target per image."""
    if not isinstance(inputs, torch.Tensor) or inputs.ndim != 4 or not inputs.is_floating_point():
        shape = tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__
        raise UserError(f"expected a floating-point N x C x H x W batch of images, got {shape}")
    targets = [None] * inputs.shape[0] if targets is None else list(targets)
    if len(targets) != inputs.shape[0]:
        raise UserError(f"{len(targets)} targets for {inputs.shape[0]} images; give one target (or None) per image")
    return inputs.detach(), targets


def setups_of(batch: torch.Tensor, logits: torch.Tensor, targets: Sequence[int | None]) -> list[Setup]:
    """One Setup per row of a batch: its image, its logits and its target (None: its prediction)."""
    return [Setup.from_logits(batch[i : i + 1].detach(), logits[i : i + 1], t) for i, t in enumerate(targets)]


def selected_sum(logits: torch.Tensor, setups: Sequence[Setup], output: str) -> torch.Tensor:
    """The sum over the rows of each row's explained output for its own target. Rows of a model in
    eval mode do not interact, so the gradient of this sum with respect to row i is the gradient of
    row i's output alone."""
    return sum(select_output(logits[i : i + 1], s.target, output)[0] for i, s in enumerate(setups))


def input_gradients(model: nn.Module, x: torch.Tensor, targets: Sequence[int | None], output: str) -> tuple[list[Setup], torch.Tensor]:
    """:func:`input_gradient` for an N x C x H x W batch in one forward and one backward: the
    prediction on every image and the gradient of each image's target output (N x C x H x W)."""
    x = x.clone().requires_grad_(True)
    with torch.enable_grad():
        logits = logits_of(model(x))
        setups = setups_of(x, logits, targets)
        (grad,) = torch.autograd.grad(selected_sum(logits, setups, output), x)
    return setups, grad


def predict(model: nn.Module, batch: torch.Tensor, target: int | None) -> Setup:
    """The model's prediction on ``batch``, without building a graph."""
    with torch.inference_mode():
        logits = logits_of(model(batch))
    return Setup.from_logits(batch, logits, target)


def finish(
    setup: Setup,
    method: str,
    params: Any,
    attribution: torch.Tensor | np.ndarray,
    progress: ProgressFn,
    extras: dict[str, Any] | None = None,
) -> Explanation:
    """Report that the run is done and wrap the map in an Explanation.

    ``elapsed_s`` is left at 0: :func:`engine.methods.runner.explain` times the whole run.
    """
    if isinstance(attribution, torch.Tensor):
        attribution = attribution.detach().float().cpu().numpy()
    progress(1.0, "done")
    return Explanation(
        map=attribution,
        method=method,
        params=params,
        target=setup.target,
        predicted=setup.predicted,
        probability=setup.probability,
        target_probability=setup.target_probability,
        device=str(setup.device),
        elapsed_s=0.0,
        extras=extras or {},
    )


def to_size(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize N x h x w maps to N x size."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear", align_corners=False)[:, 0]


def apply_gradients(optimizer: torch.optim.Optimizer, tensors: Sequence[torch.Tensor], grads: Sequence[torch.Tensor]) -> None:
    """Take an optimiser step with gradients from ``torch.autograd.grad``.

    The methods take gradients that way rather than with ``backward()``, which would also
    accumulate into the ``.grad`` of the model's parameters.
    """
    for tensor, grad in zip(tensors, grads, strict=True):
        tensor.grad = grad
    optimizer.step()


def report_step(progress: ProgressFn, done: int, steps: int, value: float | None = None, name: str = "objective") -> None:
    """Report ``done`` of ``steps`` optimisation steps, with the objective when there is one."""
    data = None if value is None else ObjectiveValue(step=done, steps=steps, value=value, name=name)
    # Out of steps + 1, so that the bar reaches 1 only once the results are gathered.
    progress(done / (steps + 1), f"step {done}/{steps}", data)
