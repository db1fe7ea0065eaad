"""The accelerated paths, each with the plain path behind it: when acceleration is off (see
``_switch``) every entry gives what the plain path uses, so a method calling them needs no branch
of its own."""

from __future__ import annotations

import torch
from torch import nn

from engine.accel import _fast
from engine.accel._incremental import IncrementalExecutor, Untraceable
from engine.accel._switch import ENVIRONMENT_VARIABLE, enabled

SWITCHED_OFF = f"acceleration is switched off ({ENVIRONMENT_VARIABLE}=0 or engine.accel.disabled())"


def fast_copy(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """A copy of ``model`` with its batch norms folded into the convolutions and channels-last
    weights (traced, cached per model, checked on ``example``: equal up to float rounding), or the
    model itself: when acceleration is off, and whenever folding could not be exact and cheap."""
    return _fast.fast_model(model, example) if enabled() else model


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 4-D batch in the channels-last layout convolutions run fastest in (other ranks, and every
    batch when acceleration is off, as they are)."""
    return _fast.channels_last(x) if enabled() else x


def first_linear(model: nn.Module) -> _fast.FirstLinear | None:
    """A ``fast_copy`` split as ``rest(conv(x))`` at a first zero-padded convolution, so that a
    straight path can run that layer by linearity; None when there is no such split (a model
    that is not a folded copy, another first layer) or acceleration is off."""
    return _fast.first_linear(model) if enabled() else None


def incremental_executor(model: nn.Module, x: torch.Tensor) -> IncrementalExecutor:
    """An executor of window perturbations of the 1 x C x H x W input ``x`` that recomputes only
    the part of each layer a window changes (``IncrementalExecutor``). Raises ``Untraceable``,
    with the reason, when the model cannot run that way or acceleration is off."""
    if not enabled():
        raise Untraceable(SWITCHED_OFF)
    return IncrementalExecutor(model, x)
