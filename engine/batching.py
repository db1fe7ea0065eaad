"""Evaluating many perturbed inputs in batches that fit the device, halving on out-of-memory."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .cancel import CancelToken, ProgressFn
from .errors import UserError


def is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _release(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.empty_cache()
    elif device is not None and device.type == "mps":
        torch.mps.empty_cache()


def run_in_batches(
    total: int,
    batch_size: int,
    evaluate: Callable[[int, int], None],
    *,
    cancel: CancelToken,
    progress: ProgressFn,
    message: str = "evaluating",
    device: torch.device | None = None,
    progress_span: tuple[float, float] = (0.0, 1.0),
) -> int:
    """Call ``evaluate(start, stop)`` over ``range(total)`` in chunks of at most ``batch_size``.

    The cancel token is checked before every chunk. When a chunk runs out of device memory the
    batch size is halved and the same chunk is retried; at batch size 1 the error is reported as a
    UserError. Progress runs from ``progress_span[0]`` to ``progress_span[1]``. Returns the batch
    size that worked, so callers can record it.
    """
    if total <= 0:
        return batch_size
    batch_size = max(1, int(batch_size))
    low, high = progress_span
    start = 0
    while start < total:
        cancel.check()
        stop = min(total, start + batch_size)
        try:
            evaluate(start, stop)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            _release(device)
            if batch_size == 1:
                raise UserError(f"out of memory on {device or 'the device'} even with a batch of one; try the CPU or a smaller input") from None
            batch_size = max(1, batch_size // 2)
            continue
        start = stop
        progress(low + (high - low) * start / total, f"{message} {start}/{total}")
    return batch_size
