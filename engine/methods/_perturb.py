"""What the black-box perturbation methods (rise, extremal, kernelshap) share.

They reach the model through forward calls only (extremal also takes the gradient of those
forwards with respect to its mask), so they will run on any model that maps a batch of images
to class scores.
"""

from __future__ import annotations

import torch

from engine.models.outputs import logits_of, select_output
from engine.runtime.batching import batch_for_budget, default_budget_bytes

BASELINES = ("zero", "mean", "blur")


def automatic_batch_size(device: torch.device) -> int:
    """As for local (measured on resnet18 at 224): on a CPU batches beyond 16 get slower per image;
    GPUs want large batches."""
    return 16 if device.type == "cpu" else 64


def batch_size_for(requested: int, budget_mb: int, per_image: int, device: torch.device) -> tuple[int, int | None]:
    """The batch to start with and the memory budget in bytes (None if unknown) it was fitted to."""
    budget = budget_mb * 2**20 if budget_mb else default_budget_bytes(device)
    return batch_for_budget(requested or automatic_batch_size(device), per_image, budget), budget


def scores(output, target: int, output_kind: str) -> torch.Tensor:
    """The explained output per batch row, in at least single precision."""
    logits = logits_of(output)
    if logits.dtype not in (torch.float32, torch.float64):
        logits = logits.float()
    return select_output(logits, target, output_kind)


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
