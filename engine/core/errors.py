"""Errors the engine raises for problems in what the user gave it.

Front-ends decide from the type, never from the wording: the GUI asks for trust when it catches
:class:`UntrustedFile`, the CLI turns every :class:`UserError` into one line and exit status 2.
"""

from __future__ import annotations

from pathlib import Path


class UserError(Exception):
    """A problem with the user's input (file, model, parameter) that deserves a one-line message.

    The CLI turns it into exit status 2; the GUI shows it in a message box. The message must be
    readable on its own, without a traceback.
    """


class UntrustedFile(UserError):
    """A file holds pickled Python objects, which only an explicit trust decision may unpickle."""

    def __init__(self, path: str | Path, message: str) -> None:
        super().__init__(message)
        self.path = Path(path)


class WeightsMismatch(UserError):
    """A weights file does not fit the model it was given to (missing, unexpected or reshaped keys)."""

    def __init__(self, message: str, missing: list[str], unexpected: list[str], shapes: list[tuple[str, tuple, tuple]]) -> None:
        super().__init__(message)
        self.missing = missing
        self.unexpected = unexpected
        self.shapes = shapes


class Cancelled(Exception):
    """Raised inside a computation when its cancel token was set."""
