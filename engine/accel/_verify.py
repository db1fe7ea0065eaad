"""The accelerated paths against the plain one on one model and input: the check that
tests/engine/test_accel.py runs on small networks and benchmarks/sweep_incremental.py on every
architecture at hand."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from engine.accel._incremental import Untraceable
from engine.accel._paths import channels_last, fast_copy, incremental_executor
from engine.models.outputs import logits_of


@dataclass(frozen=True)
class Verification:
    """How far the accelerated outputs on a batch of occluded copies of one input lie from the
    plain model's, as the largest difference over the largest magnitude of the plain outputs."""

    folded: bool  # fast_copy gave a folded copy (False: the model itself runs)
    fast_difference: float
    # None when the incremental executor ran; otherwise why it could not (the model runs densely)
    incremental_unavailable: str | None
    incremental_difference: float | None
    estimated_speedup: float | None  # multiply-accumulates of the dense forwards over those done

    def to_dict(self) -> dict:
        return asdict(self)


def occluded_batch(x: torch.Tensor, window: int, count: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` copies of the 1 x C x H x W input, each with a ``window`` square set to zero at
    a seeded random place, and the squares' top-left corners (count x 2)."""
    height, width = x.shape[-2:]
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, height - window + 1, (count,), generator=generator)
    cols = torch.randint(0, width - window + 1, (count,), generator=generator)
    origin = torch.stack([rows, cols], 1)
    batch = x.repeat(count, 1, 1, 1)
    for i, (r, c) in enumerate(origin.tolist()):
        batch[i, :, r : r + window, c : c + window] = 0
    return batch, origin


def _difference(ours, plain: torch.Tensor) -> float:
    ours = logits_of(ours)
    if ours.shape != plain.shape:
        return float("inf")
    scale = float(plain.abs().max()) if plain.numel() else 0.0
    return float((ours.double() - plain.double()).abs().max()) / max(scale, 1e-30) if plain.numel() else 0.0


def verify(model: nn.Module, x: torch.Tensor, *, window: int = 0, count: int = 4, seed: int = 0) -> Verification:
    """Run the fast copy and the incremental executor on ``count`` occluded copies of ``x`` (1 x C
    x H x W; windows of ``window`` pixels, 0: a quarter of the shorter side) and compare their
    outputs with the plain model's. ``model`` must be in eval mode, as the methods use it."""
    x = x.detach()
    window = window or max(1, min(x.shape[-2:]) // 4)
    batch, origin = occluded_batch(x, window, count, seed)
    with torch.inference_mode():
        plain = logits_of(model(batch))
        fast = fast_copy(model, x)
        fast_difference = _difference(fast(channels_last(batch)), plain)
        try:
            executor = incremental_executor(model, channels_last(x))
        except Untraceable as exc:
            return Verification(fast is not model, fast_difference, str(exc), None, None)
        output = executor.run(channels_last(batch), origin, (window, window))
    return Verification(fast is not model, fast_difference, None, _difference(output, plain), executor.stats.estimated_speedup)
