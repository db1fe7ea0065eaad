"""Evaluating many perturbed inputs in batches that fit the device, halving on out-of-memory."""

from __future__ import annotations

from collections.abc import Callable

import torch

from engine.core.errors import UserError
from engine.core.progress import CancelToken, ProgressFn
from engine.runtime.device import cpu_memory_bytes

# What allocators say when memory runs out: CUDA and MPS ("out of memory"), the CPU allocator on
# Linux and macOS ("can't allocate memory") and on Windows ("not enough memory").
_OUT_OF_MEMORY_WORDS = ("out of memory", "can't allocate memory", "not enough memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether an exception means an allocation failed, on any device."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(words in text for words in _OUT_OF_MEMORY_WORDS)


def release_memory(device: torch.device | None) -> None:
    """Give cached device memory back after an out-of-memory error."""
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
            release_memory(device)
            if batch_size == 1:
                raise UserError(f"out of memory on {device or 'the device'} even with a batch of one; try the CPU or a smaller input") from None
            batch_size = max(1, batch_size // 2)
            continue
        start = stop
        progress(low + (high - low) * start / total, f"{message} {start}/{total}")
    return batch_size


def available_memory_bytes(device: torch.device) -> int | None:
    """Memory a computation may still use: free device memory on CUDA, available RAM on the CPU."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return cpu_memory_bytes()[1]


def default_budget_bytes(device: torch.device) -> int | None:
    """The default memory budget for batched evaluation: 80% of free GPU memory, a quarter of the
    available RAM on the CPU (the CPU does not raise out-of-memory; it swaps or gets killed)."""
    available = available_memory_bytes(device)
    if available is None:
        return None
    return int(available * (0.8 if device.type == "cuda" else 0.25))


def forward_with_memory_estimate(model, x: torch.Tensor):
    """Run ``model(x)`` for one image and estimate the memory one more image in a batch costs under
    inference: 1.5 x the largest input-plus-output of any module (the peak while that module runs),
    plus the image itself. Returns (output, bytes per image)."""
    peak = 0

    def hook(_module, inputs, output):
        nonlocal peak
        size = sum(t.numel() * t.element_size() for t in inputs if isinstance(t, torch.Tensor))
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        size += sum(t.numel() * t.element_size() for t in outputs if isinstance(t, torch.Tensor))
        peak = max(peak, size)

    handles = []
    if not isinstance(model, torch.jit.ScriptModule):
        handles = [module.register_forward_hook(hook) for module in model.modules()]
    try:
        output = model(x)
    finally:
        for handle in handles:
            handle.remove()
    per_image = int(1.5 * peak / max(1, x.shape[0])) + x[0].numel() * x.element_size()
    return output, per_image


def batch_for_budget(requested: int, per_image_bytes: int, budget_bytes: int | None) -> int:
    """The requested batch, lowered so that batch x per-image memory stays within the budget."""
    if not budget_bytes or per_image_bytes <= 0:
        return requested
    return max(1, min(requested, budget_bytes // per_image_bytes))
