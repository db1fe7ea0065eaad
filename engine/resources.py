"""Where the files shipped with Sensiscope live, and the names users give them (demo:NAME)."""

from __future__ import annotations

from pathlib import Path

from .errors import UserError

RESOURCES = Path(__file__).resolve().parent.parent / "resources"
DEMO_TABLES = {"pima": RESOURCES / "data" / "pima.csv"}


def resolve_table(spec: str) -> Path:
    """A CSV path, or ``demo:pima`` for the embedded Pima Indians diabetes table."""
    if spec.startswith("demo:"):
        name = spec[len("demo:"):]
        if name not in DEMO_TABLES:
            raise UserError(f"unknown demo table '{spec}'; available: {', '.join('demo:' + n for n in DEMO_TABLES)}")
        path = DEMO_TABLES[name]
        if not path.is_file():
            raise UserError(f"the demo table {path} is missing from this installation")
        return path
    return Path(spec)
