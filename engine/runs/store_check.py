"""Checking a result store on open, and repairing one.

A store is files on a disk that other programs, crashes and people can change: a Parquet part cut
short by a full disk, a foreign file dropped into ``records/``, a ``zarr.json`` edited by hand, a
record whose image index or method the run never had. :func:`check_store` finds each such problem
and says what it is in one line; :func:`repair_store` sets aside what is damaged (moved, never
deleted, into ``STORE/damaged-TIME/``) and keeps every sound record, so that a resume computes
exactly the pairs that were lost.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from engine.core.errors import UserError


@dataclass
class StoreProblems:
    """What :func:`check_store` found: damaged part files and map arrays (path, reason) and the
    number of records that do not belong to the run."""

    parts: list[tuple[Path, str]] = field(default_factory=list)
    maps: list[tuple[str, str]] = field(default_factory=list)  # method, reason
    foreign_rows: int = 0
    first_foreign: str = ""

    @property
    def ok(self) -> bool:
        return not (self.parts or self.maps or self.foreign_rows)

    def describe(self) -> str:
        if self.parts:
            path, reason = self.parts[0]
            more = f" (and {len(self.parts) - 1} more part files)" if len(self.parts) > 1 else ""
            return f"the record file {path.name} is damaged ({reason}){more}"
        if self.maps:
            method, reason = self.maps[0]
            return f"the maps of {method} are damaged ({reason})"
        return f"{self.foreign_rows} record(s) do not belong to the run ({self.first_foreign})"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _check_parts(store, schema_names: set[str], problems: StoreProblems) -> list:
    """The readable parts' tables; damaged or foreign parts go to ``problems``."""
    import pyarrow.parquet as pq

    tables = []
    for part in store.part_files():
        try:
            table = pq.read_table(part)
        except Exception as exc:  # ArrowInvalid, OSError, ...: any unreadable part is damage
            problems.parts.append((part, _first_line(exc)))
            continue
        missing = {"image_index", "method"} - set(table.column_names)
        unknown = set(table.column_names) - schema_names
        if missing or unknown:
            problems.parts.append((part, f"not a part of this store: {'no ' + ', '.join(sorted(missing)) if missing else 'columns ' + ', '.join(sorted(unknown)[:3])}"))
            continue
        tables.append((part, table))
    return tables


def _check_rows(tables: list, settings: dict, problems: StoreProblems) -> None:
    n_images, methods = len(settings.get("images") or []), set(settings.get("methods") or {})
    for _, table in tables:
        columns = table.select(["image_index", "method"]).to_pydict()
        for index, method in zip(columns["image_index"], columns["method"], strict=True):
            if index is None or not 0 <= int(index) < n_images or method not in methods:
                problems.foreign_rows += 1
                if not problems.first_foreign:
                    problems.first_foreign = f"image index {index}, method '{method}'"


def _check_maps(store, settings: dict, problems: StoreProblems) -> None:
    from engine.runs.store_format import MAPS

    folder = store.folder / MAPS
    if not folder.exists():
        return
    n_images = len(settings.get("images") or [])
    for method in settings.get("methods") or {}:
        meta = folder / method / "zarr.json"
        if not (folder / method).exists():
            continue
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
            shape = data["shape"]
            if not (isinstance(shape, list) and len(shape) == 3 and shape[0] == n_images and all(isinstance(v, int) and v > 0 for v in shape)):
                raise ValueError(f"shape {shape} is not {n_images} images x H x W")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.maps.append((method, _first_line(exc)))


def check_store(store) -> StoreProblems:
    """Every problem of a store's records and maps (its manifest is checked when it is read)."""
    from engine.runs.store_format import _schema

    problems = StoreProblems()
    settings = store.settings
    if not isinstance(settings.get("methods"), dict) or not isinstance(settings.get("images"), list):
        raise UserError(f"{store.folder}: its manifest is incompatible (it lacks the run's methods or image list), so it cannot be read or repaired")
    tables = _check_parts(store, set(_schema().names), problems)
    _check_rows(tables, settings, problems)
    _check_maps(store, settings, problems)
    return problems


def repair_store(store) -> tuple[StoreProblems, Path | None]:
    """Set aside what :func:`check_store` finds (into ``STORE/damaged-TIME/``): damaged parts
    and map arrays, and the records that no longer have a sound map or do not belong to the run;
    the sound records are written back as one part. Returns the problems and the folder they went to."""
    from engine.runs.store_format import MAPS, _read_part, _schema

    problems = check_store(store)
    if problems.ok:
        return problems, None
    aside = store.folder / f"damaged-{_dt.datetime.now(_dt.timezone.utc).strftime('%Y%m%dT%H%M%S')}"
    aside.mkdir(parents=True, exist_ok=True)
    for method, _ in problems.maps:
        shutil.move(str(store.folder / MAPS / method), str(aside / f"maps-{method}"))
    broken_maps = {method for method, _ in problems.maps}
    schema = _schema()
    damaged = {path for path, _ in problems.parts}
    settings = store.settings
    n_images, methods = len(settings["images"]), set(settings["methods"])
    kept = []
    for part in store.part_files():
        if part not in damaged:
            table = _read_part(part, schema).to_pylist()
            kept += [row for row in table if row["image_index"] is not None and 0 <= row["image_index"] < n_images and row["method"] in methods and row["method"] not in broken_maps]
        shutil.move(str(part), str(aside / part.name))
    if kept:
        store._write_records(kept)
    return problems, aside
