"""Batch sizes from measured cost.

A batched loop (``engine.runtime.batching.run_in_batches``) takes its sizes from a
:class:`BatchSizer`, which :func:`plan_batches` makes from the run's execution context
(``engine.runtime.context``):

* a batch size set for the run is used as it is (lowered to fit the memory budget);
* otherwise the loop starts from the best size found earlier in this session for the same model,
  device, method and input shape, or from 16 on a CPU and 64 on a GPU, lowered to fit the memory
  budget. It times its batches (synchronising the GPU before reading the clock) and doubles the
  batch while the time per item falls by more than ``GAIN``, the budget allows and more than
  ``MIN_WORK_S`` of work is left; what it found is remembered for the session, and the next run
  of the same key goes on from there. An out-of-memory error halves the batch, as before, and ends
  the growth.

Which inputs go into which batch never changes a result beyond float rounding: every method that
takes a sizer evaluates each input on its own and adds the results up in a fixed order.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass
from typing import Any

import torch

from engine.runtime.context import current_context
from engine.runtime.device import cpu_memory_bytes

# A doubled batch is kept when it cuts the time per item by more than this fraction. Below it the
# gain is within the noise of a shared machine, and larger batches hold more memory for nothing.
GAIN = 0.10
# No batch grows beyond this many inputs, whatever the budget says.
MAX_BATCH = 4096
# A larger batch is tried only while more than this much work (seconds at the current pace) is
# left: shorter timings are noise, and a gain there is not worth a trial.
MIN_WORK_S = 0.2


def automatic_batch_size(device: torch.device) -> int:
    """The size a batched loop starts from when nothing better is known: on a CPU, resnet18 at
    224 px gains little per image beyond 16; GPUs want large batches."""
    return 16 if device.type == "cpu" else 64


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


def memory_budget(device: torch.device, budget_mb: int | None = None) -> int | None:
    """The memory budget in bytes: ``budget_mb`` MiB when given and not 0, else the current run's
    (its execution context), else the device's default (None when unknown)."""
    if budget_mb is None:
        budget_mb = current_context().memory_budget_mb
    return budget_mb * 2**20 if budget_mb else default_budget_bytes(device)


def batch_for_budget(requested: int, per_image_bytes: int, budget_bytes: int | None) -> int:
    """The requested batch, lowered so that batch x per-image memory stays within the budget."""
    if not budget_bytes or per_image_bytes <= 0:
        return requested
    return max(1, min(requested, budget_bytes // per_image_bytes))


def fit_batch(wanted: int, per_item: int, device: torch.device, budget_mb: int | None = None) -> tuple[int, int | None]:
    """The one place that turns a memory budget into a batch size: ``wanted`` lowered so that its
    items (``per_item`` bytes each) fit :func:`memory_budget`; and that budget in bytes."""
    budget = memory_budget(device, budget_mb)
    return batch_for_budget(wanted, per_item, budget), budget


@dataclass
class _Best:
    timed: dict[int, float]  # batch size -> seconds per item, as measured
    size: int  # the best of them (or the start size, where nothing was timed)
    settled: bool  # False: the run that measured them ended before its growth did


# model -> {(method, variant, device, input shape): _Best}; an entry goes with its model.
_REMEMBERED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def _recall(model: Any, key: tuple) -> _Best | None:
    if model is None:
        return None
    with _LOCK:
        try:
            return _REMEMBERED.get(model, {}).get(key)
        except TypeError:  # an object without weak references: nothing is remembered for it
            return None


def _remember(model: Any, key: tuple, best: _Best) -> None:
    if model is None:
        return
    with _LOCK:
        try:
            _REMEMBERED.setdefault(model, {})[key] = best
        except TypeError:
            pass


def forget_batch_sizes() -> None:
    """Forget every remembered batch size (the benchmarks time cold runs with it)."""
    with _LOCK:
        _REMEMBERED.clear()


def _synchronize(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device is not None and device.type == "mps":
        torch.mps.synchronize()


class BatchSizer:
    """The batch sizes of one batched loop: fixed, or grown from measured time per item.

    Growing, every full batch is timed. After one, the next is a trial of twice the size (or, when
    less than two of those are left, all that is left in one batch), within the memory budget; a
    trial that does not cut the time per item by more than ``GAIN`` sends the size back and ends
    the growth, as does the budget. A trial is made only while more than ``MIN_WORK_S`` of work
    is left: shorter timings are noise, and nobody waits for the gain (so short runs keep their
    split, and repeat bit for bit). A key's first batch carries one-time costs (allocations,
    kernel choice, a folded copy), so its timing serves that run only. What was timed is
    remembered for the next run of the same key, which goes on from there (its first batch is the
    next trial) until the growth ends.
    """

    def __init__(
        self,
        start: int,
        *,
        per_item: int = 0,
        budget: int | None = None,
        limit: int = MAX_BATCH,
        grow: bool = False,
        key: tuple | None = None,
        model: Any = None,
        device: torch.device | None = None,
        known: _Best | None = None,
    ) -> None:
        self.size = max(1, int(start))
        self.per_item, self.budget, self.device = per_item, budget, device
        self.limit = max(self.size, limit)
        self.growing, self._settled = grow, not grow
        self._key, self._model = key, model
        self._timed: dict[int, float] = dict(known.timed) if known is not None else {}  # size -> seconds per item
        self._kept: dict[int, float] = dict(self._timed)  # what the next run may trust (not a cold first batch)
        self._warm = known is not None  # an earlier run of this key paid the one-time costs
        if grow and known is not None and known.timed:  # go on from where the last run stopped: try the next size
            self.size = max(known.size, min(2 * known.size, self.limit))

    @classmethod
    def fixed(cls, size: int) -> BatchSizer:
        return cls(size)

    def fit(self, total: int) -> None:
        """Called with the number of inputs before the loop, when this run goes on from an earlier
        one's timings: no trial for less than ``MIN_WORK_S`` of work; a trial larger than all the
        inputs becomes all of them (one batch), or, when that is no larger than the best, none."""
        if not (self.growing and self._timed):
            return
        best = self.best
        if total * self._timed[best] < MIN_WORK_S or (self.size > total and total <= max(self._timed)):
            self.size, self.growing = best, False
        elif self.size > total:
            self.size = total

    def started(self) -> float | None:
        """Called before a batch: the clock reading when this batch is timed, else None."""
        if not self.growing:
            return None
        _synchronize(self.device)
        return time.perf_counter()

    def finished(self, count: int, started: float | None, remaining: int) -> None:
        """Called after a batch of ``count`` inputs with ``remaining`` still to come: times it and
        picks the next size (the class docstring)."""
        if started is None or count < self.size:  # not timed, or a short last batch
            return
        _synchronize(self.device)
        seconds = (time.perf_counter() - started) / count
        self._timed[self.size] = min(seconds, self._timed.get(self.size, seconds))
        if self._warm:
            self._kept[self.size] = self._timed[self.size]
        self._warm = True
        best = self.best
        if self.size != best:  # the trial did not gain enough: back, and stop growing
            self.size, self.growing, self._settled = best, False, True
            return
        trial = min(2 * self.size, self.limit)
        if remaining < 2 * trial:
            trial = min(remaining, self.limit)  # the rest in one batch
        if trial <= self.size:
            self.growing = False
            self._settled = self.size >= self.limit
        elif remaining * seconds < MIN_WORK_S:
            self.growing = False  # too little work left for a trial (the class docstring)
        else:
            self.size = trial

    def halved(self) -> None:
        """After an out-of-memory error: half the batch, and no more growth."""
        self.size = max(1, self.size // 2)
        self.limit = self.size
        self.growing, self._settled = False, True
        self._timed = {size: seconds for size, seconds in self._timed.items() if size <= self.size}
        self._kept = {size: seconds for size, seconds in self._kept.items() if size <= self.size}

    def allow_growth(self, variant: str) -> None:
        """Let a loop that started fixed (its batches were arranged for the start size) grow from
        here, remembered under ``variant``: when the arrangement stopped mattering."""
        if self._key is None or self.growing or not self._settled or self._timed:
            return  # a size set for the run, or growing already
        self._key = (self._key[0], variant, *self._key[2:])
        self.growing, self._settled = True, False

    @property
    def best(self) -> int:
        """The timed size with the least time per item, a larger one beating a smaller by ``GAIN``."""
        return _best_of(self._timed) or self.size

    @property
    def used(self) -> int:
        """The size the loop settled on: the best timed one, else the one it ran with."""
        return self.best if self._timed else self.size

    def close(self) -> None:
        """Remember what was found for the next run of the same key."""
        if self._key is not None and (self._kept or self._settled or self._timed):
            size = _best_of(self._kept) or self.used
            _remember(self._model, self._key, _Best(dict(self._kept), size, self._settled))

    def extras(self) -> dict[str, Any]:
        """The batching figures every batched method reports."""
        return {
            "batch_size_used": self.used,
            "memory_per_image_mb": self.per_item / 2**20,
            "memory_budget_mb": None if self.budget is None else self.budget / 2**20,
        }


def _best_of(timed: dict[int, float]) -> int | None:
    """The size with the least time per item, a larger one having to beat a smaller by ``GAIN``."""
    if not timed:
        return None
    best = min(timed)
    for size in sorted(timed):
        if timed[size] < (1.0 - GAIN) * timed[best]:
            best = size
    return best


def plan_batches(per_item: int, device: torch.device, *, automatic: int | None = None, variant: str = "", grow: bool = True) -> BatchSizer:
    """The sizer of one batched loop of the current run: the run's batch size when it sets one,
    else a measured size (the module docstring) starting from the remembered best, or from
    ``automatic`` (default :func:`automatic_batch_size`). ``grow=False`` keeps the start size
    (a loop whose batches were arranged for it). ``per_item`` is the memory one input of a batch
    costs; ``variant`` tells apart loops of one method whose costs differ."""
    context = current_context()
    if context.batch_size:
        size, budget = fit_batch(context.batch_size, per_item, device)
        return BatchSizer(size, per_item=per_item, budget=budget, device=device)
    budget = memory_budget(device)
    key = (context.method, variant, str(device), tuple(context.input_shape))
    known = _recall(context.model, key)
    start = known.size if known is not None else (automatic or automatic_batch_size(device))
    limit = batch_for_budget(MAX_BATCH, per_item, budget)
    grow = grow and not (known is not None and known.settled)
    return BatchSizer(min(start, limit), per_item=per_item, budget=budget, limit=limit, grow=grow, key=key, model=context.model, device=device, known=known if grow else None)
