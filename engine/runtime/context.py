"""The execution context of a run: the settings that decide how a method computes, never what.

``runner.explain`` (and ``explain_many``) sets one for the length of a run through a
``contextvars.ContextVar``; the methods and their helpers read it with :func:`current_context`
instead of taking a batch size or a memory budget among their parameters (which describe the
estimator, and are what a saved result records). Outside a run the defaults hold: batch sizes
measured, the default memory budget. A ContextVar is per thread (and per asyncio task), so two
runs on two threads never see each other's settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import Any

# The run settings that were method parameters before they became settings of the run; the
# runner still takes them from a parameter mapping (``params={"batch_size": 8}``).
from engine.core.params import RUN_SETTINGS

__all__ = ["RUN_SETTINGS", "ExecutionContext", "current_context", "inherit", "running"]


@dataclass(frozen=True)
class ExecutionContext:
    """Where and how a run computes.

    ``batch_size`` is the number of inputs a batched loop evaluates at once (0: measured, see
    ``engine.runtime.sizing``); ``memory_budget_mb`` the memory a batch may use (0: the device's
    default budget, ``engine.runtime.sizing.default_budget_bytes``). ``method``, ``model`` and
    ``input_shape`` name the run, so that a batch size measured once is remembered for the next
    run of the same method on the same model and input size. ``notes`` collects what the run
    should tell the user (the runner adds them to the result's notes).
    """

    device: Any = None  # torch.device of the model; None outside a run
    batch_size: int = 0
    memory_budget_mb: int = 0
    method: str = ""
    model: Any = None  # the module being explained (identity only: the key of remembered sizes)
    input_shape: tuple[int, ...] = ()
    notes: list[str] = field(default_factory=list)

    def note(self, text: str) -> None:
        """Record a note for the run's result, once."""
        if text not in self.notes:
            self.notes.append(text)


_CURRENT: ContextVar[ExecutionContext | None] = ContextVar("sensiscope_execution_context", default=None)


def current_context() -> ExecutionContext:
    """The context of the run in progress on this thread (a fresh one of defaults outside a run)."""
    return _CURRENT.get() or ExecutionContext()


@contextmanager
def running(context: ExecutionContext) -> Iterator[ExecutionContext]:
    """Make ``context`` current for the length of the ``with`` block (nested runs restore the outer)."""
    token = _CURRENT.set(context)
    try:
        yield context
    finally:
        _CURRENT.reset(token)


def inherit(**settings: Any) -> ExecutionContext:
    """A context for a run inside the current one: ``settings`` replace the current values, except
    a run setting of 0 (``batch_size``, ``memory_budget_mb``), which keeps the outer run's; notes
    start empty."""
    outer = current_context()
    for name in RUN_SETTINGS:
        if not settings.get(name):
            settings[name] = getattr(outer, name)
    return replace(outer, notes=[], **settings)
