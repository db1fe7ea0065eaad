"""Sessions and exports of the main window.

A session is a .zip holding ``session.json`` (the model and data references, display settings and
every map cell with its method, parameters, target and input) and the cells' arrays as .npy files
(map, display image, mask, array extras). Arrays are read with ``allow_pickle=False``: a session
never runs code. Reading and rebuilding run in a file-lane job; a corrupt or foreign file fails with
a message.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
from PySide6.QtWidgets import QFileDialog

from engine.core.jsonable import jsonable

from .jobs import FILE_LANE, Job
from .tabular_results import rebuild_results, results_state

FORMAT = "sensiscope-session"
VERSION = 1
SESSION_FILTER = "Sensiscope sessions (*.sensiscope.zip *.zip);;All files (*)"
MAX_ARRAY_BYTES = 512 * 1024 * 1024


class SessionError(ValueError):
    """A session file that cannot be read: corrupt, foreign or incomplete."""


def cell_record(cell, index: int) -> tuple[dict, dict[str, np.ndarray]]:
    """The JSON record of a finished cell and its arrays (names inside the zip)."""
    request, explanation = cell.request, cell.explanation
    prefix = f"cells/{index}"
    arrays = {f"{prefix}/map.npy": np.asarray(explanation.map, dtype=np.float32)}
    if cell.image is not None:
        arrays[f"{prefix}/image.npy"] = np.asarray(cell.image, dtype=np.float32)
    if cell.mask is not None:
        arrays[f"{prefix}/mask.npy"] = np.asarray(cell.mask, dtype=bool)
    extras, array_extras = {}, []
    for name, value in explanation.extras.items():
        if isinstance(value, np.ndarray) and value.dtype.kind in "biuf":
            arrays[f"{prefix}/extra_{name}.npy"] = value
            array_extras.append(name)
            continue
        try:
            extras[name] = jsonable(value)
        except TypeError:
            continue  # an extra that is neither an array nor JSON (a tensor, an object) is left out
    summary = explanation.summary()
    record = {
        "method": request.method,
        "params": jsonable(request.params),
        "defaults": jsonable(request.defaults),
        "target": request.target,
        "target_label": request.target_label,
        "input_name": request.input_name,
        "input_path": cell.input_path,
        "explanation": {**{key: summary[key] for key in ("method", "params", "target", "target_probability", "predicted", "probability", "device", "seed")}, "elapsed_s": float(explanation.elapsed_s)},
        "extras": extras,
        "array_extras": array_extras,
        "folder": prefix,
    }
    return record, arrays


def write_session(path: str | Path, state: dict, arrays: dict[str, np.ndarray]) -> None:
    path = Path(path)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("session.json", json.dumps({"format": FORMAT, "version": VERSION, **state}, indent=2))
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            archive.writestr(name, buffer.getvalue())


def read_session(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """The session's JSON and arrays; SessionError with a readable message for anything wrong."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            try:
                state = json.loads(archive.read("session.json").decode("utf-8"))
            except KeyError:
                raise SessionError(f"{path.name}: not a Sensiscope session (no session.json inside)") from None
            if not isinstance(state, dict) or state.get("format") != FORMAT:
                raise SessionError(f"{path.name}: not a Sensiscope session")
            if int(state.get("version", 0)) > VERSION:
                raise SessionError(f"{path.name}: written by a newer Sensiscope (session version {state.get('version')})")
            arrays = {}
            for info in archive.infolist():
                if info.filename.endswith(".npy"):
                    if info.file_size > MAX_ARRAY_BYTES:
                        raise SessionError(f"{path.name}: {info.filename} is implausibly large")
                    arrays[info.filename] = np.load(io.BytesIO(archive.read(info)), allow_pickle=False)
    except SessionError:
        raise
    except FileNotFoundError:
        raise SessionError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError):
        raise SessionError(f"{path.name}: not a Sensiscope session (not a zip archive, or a damaged one)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, ValueError, TypeError) as exc:
        raise SessionError(f"{path.name}: damaged session ({type(exc).__name__}: {exc})") from None
    return state, arrays


def rebuild_cells(state: dict, arrays: dict[str, np.ndarray]) -> list[dict]:
    """Per cell: the record, an engine Explanation, the image and the mask (runs in a job)."""
    from engine.core.explanation import Explanation

    cells = []
    for record in state.get("cells", []):
        try:
            folder, info = record["folder"], record["explanation"]
            extras = dict(record.get("extras", {}))
            extras.update({name: arrays[f"{folder}/extra_{name}.npy"] for name in record.get("array_extras", [])})
            explanation = Explanation(
                map=arrays[f"{folder}/map.npy"],
                method=info["method"],
                params=dict(info["params"]),
                target=int(info["target"]),
                predicted=int(info["predicted"]),
                probability=float(info["probability"]),
                device=str(info["device"]),
                elapsed_s=float(info["elapsed_s"]),
                target_probability=info.get("target_probability"),
                seed=info.get("seed"),
                extras=extras,
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SessionError(f"the session has an incomplete map record ({type(exc).__name__}: {exc})") from None
        cells.append({"record": record, "explanation": explanation, "image": arrays.get(f"{folder}/image.npy"), "mask": arrays.get(f"{folder}/mask.npy")})
    return cells


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_") or "map"


def write_maps(items: list[tuple[str, np.ndarray, np.ndarray | None]], folder: str | Path) -> list[str]:
    """Each map as raw float32 .npy and as a PNG overlay on its image (engine.render.save_overlay)."""
    from engine.core.errors import UserError
    from engine.io.render import save_overlay

    folder = Path(folder)
    files = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for stem, saliency, image in items:
            np.save(folder / f"{stem}.npy", np.asarray(saliency, dtype=np.float32), allow_pickle=False)
            background = image if image is not None else np.zeros((*saliency.shape, 3), np.float32)
            save_overlay(folder / f"{stem}.png", background, saliency)
            files += [str(folder / f"{stem}.npy"), str(folder / f"{stem}.png")]
    except OSError as exc:
        raise UserError(f"cannot write the maps to {folder}: {exc}") from None
    return files


class SessionActions:
    """File > Export and File > Save / Open session for a MainWindow."""

    def __init__(self, window) -> None:
        self.window = window
        self.pending: dict | None = None  # the session's data selection, made once its dataset opens

    # ---------------------------------------------------------------- exports
    def export_comparison(self, path: str | Path | None = None) -> bool:
        window = self.window
        if path is None:
            path, _ = QFileDialog.getSaveFileName(window, "Export the comparison", "comparison.png", "PNG images (*.png)")
            if not path:
                return False
        ok = window.grid.grab().save(str(path), "PNG")
        if ok:
            window.statusBar().showMessage(f"Saved {path}", 6000)
        else:
            window.show_error("Cannot export the comparison", f"cannot write {path}")
        return ok

    def export_maps(self, folder: str | Path | None = None) -> Job | None:
        window = self.window
        cells = window.grid.finished_cells()
        if not cells:
            window.show_error("Nothing to export", "No finished map yet.")
            return None
        if folder is None:
            folder = QFileDialog.getExistingDirectory(window, "Export the maps to a folder")
            if not folder:
                return None
        items = [(safe_name(f"cell{c.cell_id}_{c.request.method}_{Path(c.request.input_name).stem}"), c.explanation.map, c.image) for c in cells]
        job = window.jobs.submit(lambda progress, cancel: write_maps(items, folder), f"Exporting {len(items)} map(s)", lane=FILE_LANE)
        job.signals.finished.connect(lambda files: window.statusBar().showMessage(f"Wrote {len(files)} file(s) to {folder}", 8000))
        job.signals.failed.connect(lambda message: window.show_error("Cannot export the maps", message))
        return job

    def export_tables(self, folder: str | Path | None = None) -> Job | None:
        window = self.window
        if folder is None:
            folder = QFileDialog.getExistingDirectory(window, "Export the tabular results to a folder")
            if not folder:
                return None
        return window.tabular_panel.export_results(folder)

    # ---------------------------------------------------------------- sessions
    def state(self) -> tuple[dict, dict[str, np.ndarray]]:
        window = self.window
        ws, grid = window.workspace, window.grid
        records, arrays = [], {}
        for index, cell in enumerate(grid.finished_cells()):
            record, cell_arrays = cell_record(cell, index)
            records.append(record)
            arrays.update(cell_arrays)
        current = ws.current.item.path if ws.current is not None else None
        table = window.tabular_panel.table
        state = {
            "model": ws.model.ref if ws.model is not None else None,
            "data": {**ws.data_ref, "selected": str(current) if current else ""} if ws.data_ref else None,
            "device": ws.device,
            "display": {
                "colormap": grid.colormap_box.currentText(),
                "opacity": grid.opacity_slider.value(),
                "scale": grid.scale_box.currentIndex(),
                "mask": grid.mask_box.isChecked(),
                "follow": grid.follow_box.isChecked(),
            },
            "table": {"path": str(table.path), "target": window.tabular_panel.target()} if table is not None else None,
            "tabular_results": results_state(window.tabular_panel),
            "cells": records,
        }
        return state, arrays

    def save(self, path: str | Path | None = None) -> bool:
        window = self.window
        if path is None:
            path, _ = QFileDialog.getSaveFileName(window, "Save the session", "session.sensiscope.zip", SESSION_FILTER)
            if not path:
                return False
        try:
            state, arrays = self.state()
            write_session(path, state, arrays)
        except (OSError, TypeError, ValueError) as exc:
            window.show_error("Cannot save the session", f"{path}: {exc}")
            return False
        window.statusBar().showMessage(f"Session saved to {path} ({len(state['cells'])} map(s))", 8000)
        return True

    def open(self, path: str | Path | None = None) -> Job | None:
        window = self.window
        if path is None:
            path, _ = QFileDialog.getOpenFileName(window, "Open a session", "", SESSION_FILTER)
            if not path:
                return None

        def load(progress, cancel):
            from engine.core.errors import UserError

            try:
                state, arrays = read_session(path)
                cells = rebuild_cells(state, arrays)
            except SessionError as exc:
                raise UserError(str(exc)) from None
            try:
                results = rebuild_results(state.get("tabular_results"))
            except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
                raise UserError(f"{Path(path).name}: the session has damaged table results ({type(exc).__name__}: {exc})") from None
            return state, cells, results

        job = window.jobs.submit(load, f"Opening session {Path(path).name}", lane=FILE_LANE, key="session")
        job.signals.finished.connect(lambda result: self._restore(*result))
        job.signals.failed.connect(lambda message: window.show_error("Cannot open the session", message))
        return job

    def _restore(self, state: dict, cells: list[dict], results: tuple = (None, None)) -> None:
        from .widgets.map_view import AnalysisRequest

        window = self.window
        grid = window.grid
        window.cancel_analyses()
        grid.clear()
        display = state.get("display") or {}
        try:
            grid.colormap_box.setCurrentText(str(display.get("colormap", "auto")))
            grid.opacity_slider.setValue(int(display.get("opacity", 60)))
            grid.scale_box.setCurrentIndex(int(display.get("scale", 0)))
            grid.mask_box.setChecked(bool(display.get("mask", True)))
            grid.follow_box.setChecked(bool(display.get("follow", True)))
        except (TypeError, ValueError):
            pass
        for item in cells:
            record = item["record"]
            get = record.get
            request = AnalysisRequest(record["method"], dict(get("params", {})), get("target"), str(get("target_label", "")), str(get("input_name", "")), dict(get("defaults", {})))
            cell = grid.add_cell(request)
            cell.input_path = str(record.get("input_path", ""))
            cell.set_result(item["explanation"], item["image"], item["mask"], window.workspace.label)
        grid.refresh_display()
        window.tabs.setCurrentIndex(0)
        model, data = state.get("model"), state.get("data")
        self.pending = data if data and data.get("selected") else None
        if model and model.get("spec"):
            window._load_model(model["spec"], model.get("weights", ""), model.get("labels", ""), bool(model.get("trust", False)))
        if data and (data.get("path") or data.get("demo")):
            window.workspace.open_dataset(data.get("path") or None, demo=bool(data.get("demo")))
        table, panel = state.get("table"), window.tabular_panel
        if any(r is not None for r in results):
            panel.restore_results(*results)
        if table and table.get("path"):
            panel.pending_target = table.get("target")
            panel.pending_results = results if any(r is not None for r in results) else None
            panel.open_table(table["path"])
        window.statusBar().showMessage(f"Session restored: {len(cells)} map(s)", 8000)
        window.session_restored.emit(len(cells))

    def choose_item(self, scan):
        """The item a restored session selected, when this scan holds it (else None)."""
        if self.pending is None:
            return None
        wanted = self.pending.get("selected")
        return next((item for item in scan.items if str(item.path) == wanted), None)

    def skip_rerun(self, state) -> bool:
        """True once, for the input a restored session selects: its maps are shown as saved, not recomputed."""
        if self.pending is not None and str(state.item.path) == self.pending.get("selected"):
            self.pending = None
            return True
        return False
