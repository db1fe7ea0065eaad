"""The result store of a data-set run: a folder of formats the field opens without Sensiscope.

::

    STORE/
      manifest.json          the run's settings (model, data, images, methods and their
                             parameters, metric settings, seed), the versions, and one entry
                             per run or resume
      records/part-*.parquet one row per (image, method): the image, its label, the target, the
                             prediction, every metric and the deletion/insertion curves
                             (``pandas.read_parquet(STORE / "records")`` reads them all)
      maps.zarr/METHOD       one Zarr array per method, images x H x W (float32, or float16 by
                             choice), one chunk per map; NaN where a map is not computed yet

Results are written as they finish: the maps first, then a new Parquet part file for the
records (written to a temporary name and renamed, so a part is either whole or absent). A record
is what marks a pair finished; a run killed at any moment loses only the pairs whose record was
not yet written, and :meth:`Store.done_pairs` is what ``resume`` skips.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from engine.core.errors import UserError
from engine.core.files import atomic_path, check_output_folder, read_text, write_text
from engine.core.jsonable import dumps
from engine.core.versions import versions
from engine.runs.store_format import FORMAT, FORMAT_VERSION, MANIFEST, MAP_DTYPES, MAPS, METRIC_COLUMNS, RECORDS, _read_part, _schema  # noqa: F401  (the store's names)

# How a changed fingerprint entry is named when a resume is refused.
_CHANGED = {
    "fingerprint.model_file": "the model file's contents (another network at the same path)",
    "fingerprint.weights": "the weights file's contents",
    "fingerprint.sidecar": "the sidecar beside the model",
    "fingerprint.sensiscope": "the Sensiscope version",
}


def _refuse_links(folder: Path) -> None:
    """A store, or a folder inside it, that is a symbolic link would make a run write elsewhere."""
    for path in (folder, folder / RECORDS, folder / MAPS, folder / MANIFEST):
        if path.is_symlink():
            raise UserError(f"{path}: is a symbolic link; Sensiscope writes a store only into real folders (give the real path, {path.resolve()})")
    if (folder / MAPS).is_dir():
        for child in (folder / MAPS).iterdir():
            if child.is_symlink():
                raise UserError(f"{child}: is a symbolic link inside the store; Sensiscope does not follow it")


def _describe_change(key: str) -> str:
    if key in _CHANGED:
        return _CHANGED[key]
    if key.startswith("fingerprint.preprocess"):
        return f"the preprocessing the model gets ({key.rpartition('.')[2]})"
    return key


def _normalised(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists, NaN None), for comparisons."""
    return json.loads(dumps(value))


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return out
    return [] if old == new else [prefix.rstrip(".")]


class Store:
    """A run's folder (see the module docstring). Only the process that runs the run writes it."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser()

    # --- opening -------------------------------------------------------------------------
    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    def manifest(self) -> dict:
        try:
            data = json.loads(read_text(self.manifest_path, "store manifest"))
        except json.JSONDecodeError as exc:
            raise UserError(f"{self.manifest_path}: is not valid JSON ({exc.msg})") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise UserError(f"{self.folder}: is not a Sensiscope result store (its manifest.json says otherwise)")
        if data.get("format_version", 0) > FORMAT_VERSION:
            raise UserError(f"{self.folder}: was written by a newer Sensiscope (store format {data.get('format_version')})")
        return data

    @property
    def settings(self) -> dict:
        return self.manifest()["settings"]

    @classmethod
    def open(cls, folder: str | Path, *, check: bool = True) -> Store:
        """An existing store, for reading; its records and maps are checked first (one line naming
        the first damage, and the way to repair it)."""
        store = cls(folder)
        if store.folder.is_symlink():
            raise UserError(f"{store.folder}: is a symbolic link; a store is opened only at its real path ({store.folder.resolve()})")
        if not store.manifest_path.is_file():
            raise UserError(f"{store.folder}: holds no result store (no {MANIFEST})")
        store.manifest()
        if check:
            store.check()
        return store

    def check(self) -> None:
        from engine.runs.store_check import check_store

        problems = check_store(self)
        if not problems.ok:
            raise UserError(f"{self.folder}: cannot read this result store: {problems.describe()}; `batch ... --resume --repair` sets the damage aside and computes what was lost")

    def repair(self):
        """Set damaged parts, maps and records aside (engine.runs.store_check); returns (problems, folder)."""
        from engine.runs.store_check import repair_store

        return repair_store(self)

    @classmethod
    def for_run(cls, folder: str | Path, settings: dict, *, resume: bool, repair: bool = False) -> Store:
        """The store a run writes: a new one in an empty (or new) folder, or, with ``resume``, the
        existing one when its settings are the same as ``settings`` (refused otherwise). A resumed
        store is checked; ``repair`` sets its damage aside first, so the resume recomputes it."""
        _refuse_links(Path(folder).expanduser())
        store = cls(check_output_folder(folder))
        settings = _normalised(settings)
        if store.manifest_path.exists():
            manifest = store.manifest()
            if not resume:
                raise UserError(f"{store.folder}: already holds a run; pass --resume to continue it, or choose another folder")
            if repair:
                store.repair()
            store.check()
            changed = _differences(manifest["settings"], settings)
            if changed:
                what = ", ".join(dict.fromkeys(_describe_change(key) for key in changed[:6]))
                raise UserError(f"{store.folder}: cannot resume, the settings differ from the stored run's in {what}; use the same model and settings, or another folder")
            return store
        if store.folder.exists() and any(store.folder.iterdir()):
            raise UserError(f"{store.folder}: is a folder with other files in it; give a new or empty folder for the store")
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "created": _now(), "settings": settings, "versions": versions(), "runs": []}
        store._write_manifest(manifest)
        return store

    def _write_manifest(self, manifest: dict) -> None:
        write_text(self.manifest_path, dumps(manifest), overwrite=True)

    def add_run_entry(self, entry: dict) -> None:
        manifest = self.manifest()
        manifest.setdefault("runs", []).append({"finished": _now(), **entry, "versions": versions()})
        self._write_manifest(manifest)

    # --- writing -------------------------------------------------------------------------
    def _maps_group(self, mode: str = "a"):
        import zarr

        return zarr.open_group(store=str(self.folder / MAPS), mode=mode)

    def write(self, results: list) -> None:
        """Write finished pairs (objects with ``index``, ``method``, ``record`` and ``map``): maps
        first, then one Parquet part with their records."""
        if not results:
            return
        settings = self.settings
        n_images, dtype = len(settings["images"]), settings.get("map_dtype", "float32")
        group = self._maps_group()
        for result in results:
            if result.map is None:
                continue  # a failed pair: only its record (with the reason) is written
            values = np.asarray(result.map, dtype=np.float32)
            if result.method not in group:
                group.create_array(name=result.method, shape=(n_images, *values.shape), chunks=(1, *values.shape), dtype=dtype, fill_value=np.nan)
            array = group[result.method]
            if tuple(array.shape[1:]) != values.shape:
                raise UserError(f"{result.method}: a {values.shape[0]} x {values.shape[1]} map does not fit the store's {array.shape[1]} x {array.shape[2]} maps; give the model a fixed input size")
            array[result.index] = values.astype(dtype)
        self._write_records([r.record for r in results])

    def _write_records(self, records: list[dict]) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        folder = self.folder / RECORDS
        schema = _schema()
        table = pa.Table.from_pylist([{name: record.get(name) for name in schema.names} for record in records], schema=schema)
        name = f"part-{_dt.datetime.now(_dt.timezone.utc).strftime('%Y%m%dT%H%M%S%f')}-{uuid.uuid4().hex[:8]}.parquet"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot write {folder}: {exc.strerror or exc}") from None
        with atomic_path(folder / name, record=False) as temporary:
            pq.write_table(table, temporary)
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())

    # --- reading -------------------------------------------------------------------------
    def part_files(self) -> list[Path]:
        folder = self.folder / RECORDS
        return sorted(p for p in folder.glob("part-*.parquet")) if folder.is_dir() else []

    def _all_records(self):
        import pandas as pd

        parts = self.part_files()
        schema = _schema()
        if not parts:
            return schema.empty_table().to_pandas()
        return pd.concat([_read_part(p, schema).to_pandas() for p in parts], ignore_index=True)

    def table(self, failed: bool = False):
        """Every record as a pandas DataFrame, one row per (image, method), sorted by image and the
        run's method order (a pair written twice, by a run killed after its write, counts once; a
        pair that failed and then succeeded on a retry counts as its success). ``failed``: the
        failed pairs instead (their ``error`` says why), those no later retry mended."""
        return _finished(self._all_records(), self.settings["methods"], failed)

    def failures(self) -> list[tuple[str, str, str]]:
        """(image, method, reason) of every pair that failed and was not mended."""
        frame = self.table(failed=True)
        return [(str(r.image), str(r.method), str(r.error)) for r in frame.itertuples()]

    def done_pairs(self, include_failed: bool = True) -> set[tuple[int, str]]:
        """The pairs a resume skips: finished ones, and failed ones unless ``include_failed`` is False."""
        import pyarrow.parquet as pq

        done: set[tuple[int, str]] = set()
        for part in self.part_files():
            names = pq.read_schema(part).names
            columns = pq.read_table(part, columns=["image_index", "method", *(["error"] if "error" in names else [])]).to_pydict()
            errors = columns.get("error") or [None] * len(columns["image_index"])
            done.update((i, m) for i, m, e in zip(columns["image_index"], columns["method"], errors, strict=True) if include_failed or e is None)
        return done

    def read_map(self, index: int, method: str) -> np.ndarray:
        group = self._maps_group("r")
        if method not in group:
            raise UserError(f"{self.folder}: holds no maps of {method}")
        return np.asarray(group[method][index], dtype=np.float32)

    def map_shape(self, method: str) -> tuple[int, ...]:
        """The H x W of a method's maps (KeyError when it has none yet)."""
        return tuple(self._maps_group("r")[method].shape[1:])

    def read_map_stack(self, method: str) -> np.ndarray:
        """All of a method's maps, images x H x W (NaN where one is not computed)."""
        group = self._maps_group("r")
        if method not in group:
            raise UserError(f"{self.folder}: holds no maps of {method}")
        return np.asarray(group[method][:], dtype=np.float32)


def _finished(frame, methods, failed: bool):
    """One row per pair: its success when there is one, else its failure; then only the successes
    (or, with ``failed``, only the failures), in image and method order."""
    frame = frame.assign(_failed=frame["error"].notna()).sort_values("_failed", kind="stable")
    frame = frame.drop_duplicates(subset=["image_index", "method"], keep="first")
    frame = frame[frame["_failed"] == failed].drop(columns="_failed")
    order = {name: i for i, name in enumerate(methods)}
    frame = frame.assign(_order=frame["method"].map(order)).sort_values(["image_index", "_order"], kind="stable").drop(columns="_order")
    return frame.reset_index(drop=True)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class MemoryStore(Store):
    """A store held in memory, for a run whose results are only read back once (``evaluate``
    without ``--store``): the same manifest, records and maps as a folder store, with nothing
    written to disk, so both paths give their report from the same code."""

    def __init__(self) -> None:
        super().__init__("<memory>")
        self._manifest: dict = {}
        self._records: list[dict] = []
        self._maps: dict[str, np.ndarray] = {}

    @classmethod
    def for_run(cls, folder=None, settings: dict | None = None, *, resume: bool = False) -> MemoryStore:
        if resume:
            raise UserError("an in-memory evaluation cannot be resumed; give --store to keep its results")
        store = cls()
        store._manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "created": _now(), "settings": _normalised(settings or {}), "versions": versions(), "runs": []}
        return store

    def manifest(self) -> dict:
        return self._manifest

    def _write_manifest(self, manifest: dict) -> None:
        self._manifest = manifest

    def write(self, results: list) -> None:
        n_images = len(self.settings["images"])
        for result in results:
            if result.map is None:
                continue
            values = np.asarray(result.map, dtype=np.float32)
            stack = self._maps.get(result.method)
            if stack is None:
                stack = self._maps[result.method] = np.full((n_images, *values.shape), np.nan, dtype=np.float32)
            if stack.shape[1:] != values.shape:
                raise UserError(f"{result.method}: a {values.shape[0]} x {values.shape[1]} map does not fit the run's {stack.shape[1]} x {stack.shape[2]} maps; give the model a fixed input size")
            stack[result.index] = values
        self._records.extend(result.record for result in results)

    def part_files(self) -> list[Path]:
        return []

    def _all_records(self):
        import pyarrow as pa

        schema = _schema()
        return pa.Table.from_pylist([{name: record.get(name) for name in schema.names} for record in self._records], schema=schema).to_pandas()

    def done_pairs(self, include_failed: bool = True) -> set[tuple[int, str]]:
        return {(int(r["image_index"]), str(r["method"])) for r in self._records if include_failed or r.get("error") is None}

    def map_shape(self, method: str) -> tuple[int, ...]:
        return tuple(self._maps[method].shape[1:])

    def read_map(self, index: int, method: str) -> np.ndarray:
        if method not in self._maps:
            raise UserError(f"the run holds no maps of {method}")
        return self._maps[method][index].copy()

    def read_map_stack(self, method: str) -> np.ndarray:
        if method not in self._maps:
            raise UserError(f"the run holds no maps of {method}")
        return self._maps[method].copy()
