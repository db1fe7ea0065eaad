"""Class names from a labels file."""

from __future__ import annotations

import json
from pathlib import Path

from engine.core.errors import UserError
from engine.core.files import read_text


def read_labels(path: str | Path) -> list[str]:
    """Class names from a text file (one a line) or JSON (a list, or a mapping of index to name)."""
    path = Path(path)
    text = read_text(path, "labels file")
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(data, dict):
            try:
                indexed = {int(k): str(v) for k, v in data.items()}
            except ValueError:
                raise UserError(f"{path}: a JSON labels mapping needs integer keys (class index to name)") from None
            if sorted(indexed) != list(range(len(indexed))):
                raise UserError(f"{path}: class indices must run from 0 to {len(indexed) - 1} without gaps")
            return [indexed[i] for i in range(len(indexed))]
        if isinstance(data, list) and all(isinstance(v, (str, int, float)) for v in data):
            return [str(v) for v in data]
        raise UserError(f"{path}: JSON labels must be a list of names or a mapping of index to name")
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise UserError(f"{path}: the labels file is empty")
    return labels
