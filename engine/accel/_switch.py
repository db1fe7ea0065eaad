"""The off switch of the speed-ups: the environment variable ``SENSISCOPE_ACCEL`` for a whole
process (and the workers it starts), ``disabled()`` for one block of one thread.

A context variable rather than a global: a GUI job or a test that turns acceleration off for its
own run leaves the runs of other threads as they were.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from contextvars import ContextVar

ENVIRONMENT_VARIABLE = "SENSISCOPE_ACCEL"
_OFF_VALUES = {"0", "false", "off", "no"}
_switched_off: ContextVar[bool] = ContextVar("sensiscope_accel_switched_off", default=False)


def enabled() -> bool:
    """Whether the speed-ups may run: not under ``disabled()`` and ``SENSISCOPE_ACCEL`` not 0
    (nor false, off or no). Read at every call, so a change of the environment takes effect."""
    if _switched_off.get():
        return False
    return os.environ.get(ENVIRONMENT_VARIABLE, "1").strip().lower() not in _OFF_VALUES


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Within this block (in this thread or task) every method takes its plain path."""
    token = _switched_off.set(True)
    try:
        yield
    finally:
        _switched_off.reset(token)
