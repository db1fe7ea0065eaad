"""Shared helpers for methods: input checks, predictions and the scalar output being explained."""

from __future__ import annotations

import torch

from engine.core.errors import UserError

OUTPUT_CHOICES = ("logit", "probability", "log_probability")


def as_batch(inputs: torch.Tensor) -> torch.Tensor:
    """Accept C x H x W or 1 x C x H x W and return 1 x C x H x W."""
    if not isinstance(inputs, torch.Tensor):
        raise UserError(f"inputs must be a torch tensor, not {type(inputs).__name__}")
    if inputs.ndim == 3:
        inputs = inputs.unsqueeze(0)
    if inputs.ndim != 4 or inputs.shape[0] != 1:
        raise UserError(f"expected one image as C x H x W or 1 x C x H x W, got shape {tuple(inputs.shape)}")
    if not inputs.is_floating_point():
        raise UserError(f"inputs must be floating point, got {inputs.dtype}")
    return inputs


def logits_of(output) -> torch.Tensor:
    """The N x K class scores from whatever a classifier returns (tensor, tuple, namedtuple, dict)."""
    if isinstance(output, torch.Tensor):
        logits = output
    elif isinstance(output, dict):
        logits = output.get("logits", output.get("out"))
    elif isinstance(output, (tuple, list)) and output:
        logits = output[0]
    else:
        logits = getattr(output, "logits", None)
    if not isinstance(logits, torch.Tensor):
        raise UserError(f"the model returned {type(output).__name__}; expected a tensor of class scores")
    if logits.ndim == 1:
        logits = logits.unsqueeze(0)
    if logits.ndim != 2:
        raise UserError(f"the model returned scores of shape {tuple(logits.shape)}; expected N x classes")
    return logits


def check_target(target: int | None, n_classes: int) -> int | None:
    if target is None:
        return None
    target = int(target)
    if not 0 <= target < n_classes:
        raise UserError(f"target class {target} does not exist: the model has {n_classes} classes (0 to {n_classes - 1})")
    return target


def prediction(logits: torch.Tensor) -> tuple[int, float]:
    """Top class and its softmax probability for the first row of a logit batch."""
    probs = torch.softmax(logits.detach()[0].float(), dim=0)
    top = int(torch.argmax(probs))
    return top, float(probs[top])


def select_output(logits: torch.Tensor, target: int, output: str) -> torch.Tensor:
    """The scalar (per batch row) being explained: a logit, a probability or a log-probability."""
    if output == "logit":
        return logits[:, target]
    if output == "probability":
        return torch.softmax(logits, dim=1)[:, target]
    if output == "log_probability":
        return torch.log_softmax(logits, dim=1)[:, target]
    raise UserError(f"unknown output '{output}'; choose one of {', '.join(OUTPUT_CHOICES)}")
