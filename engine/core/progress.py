"""Cooperative cancellation and progress reporting, in plain Python (no Qt, no torch).

A progress callback is called as ``progress(fraction, message, data=None)``. ``data`` carries a
typed payload (one of the dataclasses below) when the computation has something a view can plot
or show, so that no front-end ever parses the message text.
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from engine.core.errors import Cancelled


class ProgressFn(Protocol):
    def __call__(self, fraction: float, message: str = "", data: Any = None) -> None: ...


@dataclass(frozen=True)
class EpochLosses:
    """One training epoch finished: its training loss and, when there is a validation split, that loss."""

    epoch: int
    epochs: int
    loss: float
    validation: float | None = None


@dataclass(frozen=True)
class ObjectiveValue:
    """An optimisation step's objective (activation maximisation, invariant perturbation)."""

    step: int
    steps: int
    value: float
    name: str = "objective"


@dataclass(frozen=True)
class PartialMap:
    """A map computed so far (H x W, float32), for views that draw while the method runs."""

    map: np.ndarray
    done: int
    total: int


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


def no_progress(fraction: float, message: str = "", data: Any = None) -> None:
    """The default progress callback: ignores every report."""


def _takes_data(progress: Any) -> bool:
    try:
        parameters = inspect.signature(progress).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: assume the full signature
        return True
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 3 or any(p.kind is p.VAR_POSITIONAL or p.name == "data" or p.kind is p.VAR_KEYWORD for p in parameters)


def resolve(progress: ProgressFn | None, cancel: CancelToken | None) -> tuple[ProgressFn, CancelToken]:
    """Substitute no-op defaults for missing progress and cancel arguments.

    A callback written for the older two-argument form ``progress(fraction, message)`` is wrapped
    so that it keeps working; it simply does not see the payloads.
    """
    if progress is None:
        progress = no_progress
    elif not _takes_data(progress):
        two_arguments = progress

        def progress(fraction: float, message: str = "", data: Any = None) -> None:
            two_arguments(fraction, message)

    return (progress, cancel or NEVER_CANCELLED)
