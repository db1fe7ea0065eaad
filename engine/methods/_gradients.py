"""What the gradient methods share: channel reductions, baselines, the quadrature of Integrated
Gradients, gradients of many inputs evaluated in batches, and guided-backpropagation ReLUs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from engine.accel import channels_last, fast_copy, first_linear
from engine.core.errors import UserError
from engine.core.progress import CancelToken, ProgressFn
from engine.io.blur import baseline_image
from engine.models.outputs import logits_of, select_output
from engine.runtime.batching import run_in_batches
from engine.runtime.context import current_context
from engine.runtime.sizing import fit_batch

REDUCE_CHOICES = ("maxabs", "sum", "abs", "l2")
REDUCE_HELP = "how channels combine into one map: max of |a| (maxabs), signed sum (sum), sum of |a| (abs) or Euclidean norm (l2)"
BASELINE_CHOICES = ("zero", "blur", "mean", "noise")
RULE_CHOICES = ("gausslegendre", "riemann_trapezoid", "riemann_left", "riemann_right", "riemann_middle")


def reduce_channels(attribution: torch.Tensor, how: str) -> torch.Tensor:
    """C x H x W per-channel attributions -> H x W map."""
    if how == "maxabs":
        return attribution.abs().amax(dim=0)
    if how == "sum":
        return attribution.sum(dim=0)
    if how == "abs":
        return attribution.abs().sum(dim=0)
    if how == "l2":
        return attribution.pow(2).sum(dim=0).sqrt()
    raise UserError(f"unknown reduce '{how}'; choose one of {', '.join(REDUCE_CHOICES)}")


def make_baseline(x: torch.Tensor, kind: str, blur_sigma: float) -> torch.Tensor:
    """The reference input of Integrated Gradients for a 1 x C x H x W batch.

    ``noise`` is uniform noise between the image's minimum and maximum, drawn from torch's random
    state (which the runner seeds).
    """
    if kind == "noise":
        low, high = x.min(), x.max()
        return low + (high - low) * torch.rand(x.shape, device=x.device, dtype=x.dtype)
    return baseline_image(x, kind, blur_sigma, BASELINE_CHOICES)


def quadrature(rule: str, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points ``alphas`` in [0, 1] and weights of the integral over [0, 1] (float64)."""
    if rule == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return torch.from_numpy(0.5 * (nodes + 1.0)), torch.from_numpy(0.5 * weights)
    if steps < 2 and rule != "riemann_middle":
        raise UserError(f"{rule} needs at least 2 steps")
    n = steps
    weights = torch.full((n,), 1.0 / n, dtype=torch.float64)
    if rule == "riemann_trapezoid":
        alphas = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
        weights[0] = weights[-1] = 0.5 / n
        # The trapezoid rule's uniform spacing is 1 / (n - 1); Captum keeps steps of 1 / n with
        # halved ends, whose weights sum to (n - 1) / n. We rescale so they sum to one.
        weights = weights * n / (n - 1)
    elif rule == "riemann_left":
        alphas = torch.arange(n, dtype=torch.float64) / n
    elif rule == "riemann_right":
        alphas = torch.arange(1, n + 1, dtype=torch.float64) / n
    elif rule == "riemann_middle":
        alphas = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    else:
        raise UserError(f"unknown rule '{rule}'; choose one of {', '.join(RULE_CHOICES)}")
    return alphas, weights


def gradient_batch_size(device: torch.device, count: int, per_image: int) -> int:
    """The batch of inputs whose gradients are taken at once: the run's batch size (its execution
    context), or, when it sets none, as many as the memory budget allows, at most 64 on a CPU and
    256 on a GPU; never more than ``count``. (These loops are short, a few batches at most, so
    their size is not measured.)"""
    ceiling = current_context().batch_size or (64 if device.type == "cpu" else 256)
    return max(1, min(count, fit_batch(ceiling, per_image, device)[0]))


def gradients_in_batches(
    model: nn.Module,
    points: Callable[[int, int], torch.Tensor],
    count: int,
    target: int,
    output: str,
    on_gradients: Callable[[int, int, torch.Tensor, torch.Tensor], None],
    *,
    batch_size: int,
    cancel: CancelToken,
    progress: ProgressFn,
    span: tuple[float, float],
    message: str,
    device: torch.device | None = None,
) -> int:
    """For the inputs ``points(start, stop)`` (a B x C x H x W batch) take the gradient of the
    target output and hand ``on_gradients(start, stop, inputs, gradients)`` the result. Batches
    are halved on out-of-memory; returns the batch size that worked."""

    def evaluate(start: int, stop: int) -> None:
        # channels-last convolutions are faster on CPUs and GPUs alike
        inputs = channels_last(points(start, stop).detach())
        runner = fast_copy(model, inputs[:1])  # batch norms folded (cached), or the model itself
        inputs.requires_grad_(True)
        with torch.enable_grad():
            selected = select_output(logits_of(runner(inputs)), target, output)
            (grad,) = torch.autograd.grad(selected.sum(), inputs)
        on_gradients(start, stop, inputs.detach(), grad.detach())

    return run_in_batches(count, batch_size, evaluate, cancel=cancel, progress=progress, message=message, device=device, progress_span=span)


class _GuidedGradient(torch.autograd.Function):
    """Identity forward; backward lets only positive gradients through (the guided rule)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


_RELU_FUNCTIONS = (F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_)


class GuidedReLUs(TorchFunctionMode):
    """Within this context every ReLU passes back only positive gradients where its input was
    positive (Springenberg et al. 2015): nn.ReLU modules (in place or not), F.relu and
    torch.relu calls, and Tensor.relu alike, since all of them go through torch's function
    dispatch. The ReLU itself runs unchanged; its output goes through an identity whose backward
    clamps the gradient at zero, and the ReLU's own backward then zeroes it where the input was
    not positive (which, for a ReLU, is exactly where its output is not positive).

    An in-place ``x.relu_()`` whose result is dropped (the code goes on with ``x``) escapes the
    rule; ReLUs inside TorchScript are not seen at all (the caller refuses TorchScript models).
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if func in _RELU_FUNCTIONS and isinstance(result, torch.Tensor) and result.requires_grad:
            return _GuidedGradient.apply(result)
        return result


def refuse_script(model: nn.Module, method: str) -> None:
    if isinstance(model, torch.jit.ScriptModule):
        raise UserError(f"{method} changes how gradients pass the ReLUs, which a TorchScript model does not allow; load the architecture with its weights instead")


def path_gradient(
    model: nn.Module,
    x: torch.Tensor,
    baseline: torch.Tensor,
    target: int,
    output: str,
    rule: tuple[torch.Tensor, torch.Tensor],
    *,
    batch_size: int,
    cancel: CancelToken,
    progress: ProgressFn,
    span: tuple[float, float],
) -> tuple[torch.Tensor, int]:
    """The integral over alpha in [0, 1] of the gradient at baseline + alpha (x - baseline), by the
    quadrature ``rule`` (points and weights), the path evaluated in batches. Returns the C x H x W
    integral (float64) and the batch size that worked.

    When the model (batch norms folded, ``engine.accel.fast_copy``) starts with a convolution
    c(x) = W * x + beta, the first layer is not evaluated per point: along the path its output is
    c(b) + alpha W * (x - b) (two convolutions), and, the gradient at the input being W^T applied to
    the one at its output, the weighted sum of the input gradients is W^T applied to the weighted
    sum of the output gradients (one transposed convolution). Exact up to float rounding."""
    alphas, weights = (t.to(x.device) for t in rule)
    split = first_linear(fast_copy(model, x))
    if split is None:
        start, step, network = baseline, x - baseline, model
    else:
        with torch.no_grad():
            start, step = split.conv(channels_last(baseline)), split.bias_free(channels_last(x - baseline))
        network = split.rest
    total = torch.zeros(start.shape[1:], dtype=torch.float64, device=x.device)

    def points(first: int, stop: int) -> torch.Tensor:
        return start + alphas[first:stop].to(start.dtype).view(-1, 1, 1, 1) * step

    def accumulate(first: int, stop: int, _inputs: torch.Tensor, grad: torch.Tensor) -> None:
        total.add_((weights[first:stop].view(-1, 1, 1, 1) * grad.double()).sum(0))

    used = gradients_in_batches(
        network,
        points,
        len(alphas),
        target,
        output,
        accumulate,
        batch_size=batch_size,
        cancel=cancel,
        progress=progress,
        span=span,
        message="path points",
        device=x.device,
    )
    if split is not None:
        total = split.input_gradient(total[None], (1, *x.shape[1:]))[0]
    return total, used
