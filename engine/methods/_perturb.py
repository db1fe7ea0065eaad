"""The perturbation family base: what the black-box perturbation methods (local, rise, kernelshap,
sobol, Score-CAM; extremal's scores) share.

They reach the model through forward calls only (extremal also takes the gradient of those
forwards with respect to its mask), so they run on any model that maps a batch of images to class
scores. A method of the family differs in one function, ``perturb(start, stop)``, the perturbed
inputs numbered start..stop-1 as a batch; the base does the rest:

* :func:`reference`: the forward of the unperturbed input (its prediction, its explained output
  f(x), and the memory one more input of a batch costs, for the batch size);
* :func:`perturbed_outputs`: every perturbed input's explained output, evaluated under inference
  mode in channels-last batches whose size comes from the run's execution context
  (``engine.runtime.sizing.plan_batches``: measured unless the run sets one, halved on
  out-of-memory), with cancellation and progress between batches.

Each output is computed from its own input alone and stored at its own index, so the split into
batches changes nothing beyond float rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from engine.accel import channels_last
from engine.core.progress import CancelToken, ProgressFn
from engine.methods._base import Setup, output_scores
from engine.models.outputs import logits_of
from engine.runtime.batching import forward_with_memory_estimate, run_in_batches
from engine.runtime.sizing import BatchSizer, plan_batches

BASELINES = ("zero", "mean", "blur")


def scores(output, target: int, kind: str) -> torch.Tensor:
    """The explained output per batch row, in at least single precision."""
    return output_scores(output, target, kind)


@dataclass(frozen=True)
class Reference:
    """The unperturbed input: its prediction, its explained output and the memory one more input
    in a batch costs (bytes)."""

    setup: Setup
    f_x: float
    per_image: int


def reference(model, x: torch.Tensor, target: int | None, output: str, extra_per_image: int = 0) -> Reference:
    """The forward of the unperturbed 1 x C x H x W input, channels-last as the batches run, with
    the memory estimate of one more input (plus ``extra_per_image``, e.g. its mask)."""
    with torch.inference_mode():
        raw, per_image = forward_with_memory_estimate(model, channels_last(x))
        setup = Setup.from_logits(x, logits_of(raw), target)
        f_x = float(scores(setup.logits, setup.target, output)[0])
    return Reference(setup, f_x, per_image + extra_per_image)


def perturbed_outputs(
    model: Callable[[torch.Tensor], torch.Tensor],
    count: int,
    perturb: Callable[[int, int], torch.Tensor],
    target: int,
    output: str,
    *,
    per_image: int,
    device: torch.device,
    progress: ProgressFn,
    cancel: CancelToken,
    message: str = "perturbed images",
    span: tuple[float, float] = (0.01, 0.99),
    on_scores: Callable[[int, int, torch.Tensor], None] | None = None,
    double: bool = False,
    sizer: BatchSizer | None = None,
) -> tuple[torch.Tensor, BatchSizer]:
    """The explained output of the ``count`` perturbed inputs ``perturb(start, stop)`` (float64,
    on the CPU for MPS, which has no float64), and the sizer that chose the batches (its
    ``extras()`` are the batching figures of the result). ``on_scores(start, stop, scores)`` sees
    each batch's scores as they come (RISE accumulates its masks with them); ``double`` takes the
    scores in float64 from the logits on. ``sizer`` replaces the default plan (a method whose
    batches must keep their start size makes its own, see local)."""
    sizer = sizer or plan_batches(per_image, device)
    outputs = torch.empty(count, dtype=torch.float64, device=device if device.type != "mps" else "cpu")

    def evaluate(start: int, stop: int) -> None:
        with torch.inference_mode():
            values = output_scores(model(channels_last(perturb(start, stop))), target, output, double=double)
            if on_scores is not None:
                on_scores(start, stop, values)
            outputs[start:stop] = values.to(outputs.device, outputs.dtype)

    run_in_batches(count, sizer, evaluate, cancel=cancel, progress=progress, message=message, device=device, progress_span=span)
    return outputs, sizer


def generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator on ``device``; a negative seed takes one from the run's (seeded) random state."""
    if seed < 0:
        seed = int(torch.randint(0, 2**62, (1,)))
    try:
        gen = torch.Generator(device=device)
    except RuntimeError:  # a device without its own generators: draw on the CPU
        gen = torch.Generator()
    return gen.manual_seed(seed)


def draw(gen: torch.Generator, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) numbers from ``gen``, placed on ``device``."""
    return torch.rand(shape, generator=gen, device=gen.device).to(device)
