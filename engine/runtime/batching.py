"""Evaluating many perturbed inputs in batches that fit the device, halving on out-of-memory.

The sizes come from ``engine.runtime.sizing`` (a fixed size, or one grown from measured time per
item); the memory budget and the one formula that turns it into a batch live there too.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from engine.core.errors import UserError
from engine.core.progress import CancelToken, ProgressFn
from engine.runtime.context import current_context
from engine.runtime.sizing import BatchSizer, available_memory_bytes, batch_for_budget, default_budget_bytes

__all__ = [
    "available_memory_bytes",
    "batch_for_budget",
    "default_budget_bytes",
    "forward_with_backward_estimate",
    "forward_with_memory_estimate",
    "is_out_of_memory",
    "release_memory",
    "run_in_batches",
]

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
    batch_size: int | BatchSizer,
    evaluate: Callable[[int, int], None],
    *,
    cancel: CancelToken,
    progress: ProgressFn,
    message: str = "evaluating",
    device: torch.device | None = None,
    progress_span: tuple[float, float] = (0.0, 1.0),
) -> int:
    """Call ``evaluate(start, stop)`` over ``range(total)`` in chunks of at most ``batch_size``: a
    number, or a :class:`~engine.runtime.sizing.BatchSizer` that may grow the chunks as it times
    them (``plan_batches``).

    The cancel token is checked before every chunk. When a chunk runs out of device memory the
    batch size is halved and the same chunk is retried; at batch size 1 the error is reported as a
    UserError. Progress runs from ``progress_span[0]`` to ``progress_span[1]``. Returns the batch
    size that worked, so callers can record it.
    """
    sizer = batch_size if isinstance(batch_size, BatchSizer) else BatchSizer.fixed(batch_size)
    if total <= 0:
        return sizer.used
    sizer.fit(total)
    low, high = progress_span
    start, failed = 0, 0
    while start < total:
        cancel.check()
        stop = min(total, start + sizer.size)
        clock = sizer.started()
        try:
            evaluate(start, stop)
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            release_memory(device)
            if sizer.size == 1:
                raise UserError(f"out of memory on {device or 'the device'} even with a batch of one; try the CPU or a smaller input") from None
            failed = failed or sizer.size
            sizer.halved()
            continue
        sizer.finished(stop - start, clock, total - stop)
        start = stop
        progress(low + (high - low) * start / total, f"{message} {start}/{total}")
    sizer.close()
    if failed:  # said once, in the result's notes
        current_context().note(f"{message}: a batch of {failed} ran out of memory on {device or 'the device'}; the batch was halved to {sizer.size}")
    return sizer.used


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


def forward_with_backward_estimate(model, batch: torch.Tensor):
    """``model(batch)`` under inference, and the memory one image costs in a forward kept for a
    backward: every leaf module's output is held for the backward (an over-estimate where outputs
    are views), twice for the gradients, plus the image three times. Returns (output, bytes per
    image); 0 bytes for TorchScript, whose modules cannot be hooked."""
    total = 0

    def hook(_module, _inputs, output):
        nonlocal total
        outputs = output if isinstance(output, (tuple, list)) else (output,)
        total += sum(t.numel() * t.element_size() for t in outputs if isinstance(t, torch.Tensor))

    scripted = isinstance(model, torch.jit.ScriptModule)
    leaves = [] if scripted else [m for m in model.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.inference_mode():
            output = model(batch)
    finally:
        for handle in handles:
            handle.remove()
    per_image = 0 if scripted else (2 * total) // batch.shape[0] + 3 * batch[0].numel() * batch.element_size()
    return output, per_image
