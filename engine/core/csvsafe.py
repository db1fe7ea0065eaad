"""CSV cells that spreadsheets show as text, never run as formulas ("CSV injection").

A column name such as ``=HYPERLINK(...)`` comes from the user's table and ends up in Sensiscope's
CSV outputs; a spreadsheet opening them would evaluate it. OWASP's advice is followed: a text cell
that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return gets a leading single quote.
Numbers, and text that is a plain number (``-0.25``, ``+1e-3``), are left as they are, so numeric
columns stay numeric.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:inf|nan)", re.IGNORECASE)


def safe_cell(value: Any) -> Any:
    """``value`` ready for a CSV cell: formula-like text is prefixed with a single quote."""
    if not isinstance(value, str) or not value.startswith(FORMULA_STARTS) or _PLAIN_NUMBER.fullmatch(value):
        return value
    return "'" + value


def safe_row(values: Iterable[Any]) -> list[Any]:
    """A row (or header) of cells through :func:`safe_cell`; write it with ``csv.writer.writerow``."""
    return [safe_cell(value) for value in values]
