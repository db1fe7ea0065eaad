"""Errors the engine raises for problems in what the user gave it."""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input (file, model, parameter) that deserves a one-line message.

    The CLI turns it into exit status 2; the GUI shows it in a message box. The message must be
    readable on its own, without a traceback.
    """


class Cancelled(Exception):
    """Raised inside a computation when its cancel token was set."""
