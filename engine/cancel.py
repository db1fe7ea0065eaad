"""Cooperative cancellation and progress reporting, in plain Python (no Qt)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from .errors import Cancelled

ProgressFn = Callable[[float, str], None]


class CancelToken:
    """A flag that a long computation checks between batches or steps.

    The GUI (or any other thread) calls :meth:`cancel`; the computation calls :meth:`check`, which
    raises :class:`Cancelled` once the flag is set.
    """

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("cancelled by the user")


class _NeverCancelled(CancelToken):
    def cancel(self) -> None:  # pragma: no cover - a shared singleton must never be set
        raise RuntimeError("the default cancel token cannot be cancelled; pass your own CancelToken")


NEVER_CANCELLED: CancelToken = _NeverCancelled()


def no_progress(fraction: float, message: str = "") -> None:
    """The default progress callback: ignores every report."""


def resolve(progress: ProgressFn | None, cancel: CancelToken | None) -> tuple[ProgressFn, CancelToken]:
    """Substitute no-op defaults for missing progress and cancel arguments."""
    return (progress or no_progress, cancel or NEVER_CANCELLED)
