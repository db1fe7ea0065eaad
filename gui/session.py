"""Sessions and exports of the main window.

A session is a .zip holding ``session.json`` (the model and data references, display settings and
every map cell with its method, parameters, target and input) and the cells' arrays as .npy files
(map, display image, mask, array extras). The file format, its limits and the check of every field
live in gui/session_file.py; reading and checking run in a file-lane job, and the window changes
only once the whole session was read and found sound. A session never carries trust: a pickled
model it names is asked about again.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PySide6.QtWidgets import QFileDialog, QInputDialog, QMessageBox

from engine.core.errors import UserError
from engine.core.files import OutputExists, atomic_path, check_output
from engine.core.jsonable import jsonable

from .document import AnalysisRequest, ModelInfo
from .jobs import FILE_LANE, Job
from .model_names import args_text, class_spec_parts
from .session_file import Session, SessionError, read_session, write_session
from .tabular_results import rebuild_results, report_tables, results_state
from .widgets.map_view import METHOD_TITLES

FIGURE_FILTER = "PNG image (*.png);;SVG drawing (*.svg);;PDF document (*.pdf)"
DEFAULT_DPI = 200
SESSION_FILTER = "Sensiscope sessions (*.sensiscope.zip *.zip);;All files (*)"


EXPLANATION_KEYS = ("method", "params", "target", "target_probability", "predicted", "probability", "device", "seed")


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
        "model": request.model.to_dict() if getattr(request, "model", None) is not None else None,
        # jsonable: a map read from a result store has no probability (NaN, written as null)
        "explanation": jsonable({**{key: summary[key] for key in EXPLANATION_KEYS}, "elapsed_s": float(explanation.elapsed_s)}),
        "extras": extras,
        "array_extras": array_extras,
        "folder": prefix,
    }
    return record, arrays


def figure_panel(cell, colormap: str, show_mask: bool) -> dict:
    """What a figure draws of a cell: the map as on screen (levels, colour map), image, mask, title, bar label."""
    request = cell.request
    model = request.model
    params = request.key_params()
    title = f"{METHOD_TITLES.get(request.method, request.method)}" + (f" ({params})" if params else "")
    title += f"\n{request.input_name} · target {request.target_label}" + (f" · {model.name()}" + (" UNTRAINED" if model.untrained else "") if model else "")
    data = cell.map_item.image if cell.map_item.image is not None else cell.explanation.map
    levels = tuple(float(v) for v in cell.colorbar.levels())
    return {"map": np.asarray(data), "image": cell.image, "mask": cell.mask if show_mask else None, "title": title,
            "label": cell.colorbar.axis.labelText or "map value", "levels": levels, "colormap": cell.colormap_choice or colormap}


def map_record(cell) -> dict:
    """The parameters JSON of one exported map: what was asked, of which model and input, and what came back."""
    request, explanation = cell.request, cell.explanation
    summary = explanation.summary()
    return jsonable({
        "method": request.method, "params": request.params, "target": request.target, "target_label": request.target_label,
        "input": request.input_name, "input_path": request.input_path, "model": request.model.to_dict() if request.model else None,
        **{key: summary.get(key) for key in ("predicted", "probability", "target_probability", "device", "seed")},
        "elapsed_s": float(explanation.elapsed_s),
    })


def safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text).strip("_") or "map"


def foreign_files(stems: list[str], folder: str | Path) -> list[Path]:
    """The export's files that exist in ``folder`` and were not written by Sensiscope."""
    found = []
    for stem in stems:
        for suffix in (".npy", ".png"):
            try:
                check_output(Path(folder) / f"{stem}{suffix}")
            except OutputExists as exc:
                found.append(exc.path)
    return found


def write_maps(items: list[tuple[str, np.ndarray, np.ndarray | None]], folder: str | Path, overwrite: bool = False) -> list[str]:
    """Each map as raw float32 .npy and as a PNG overlay on its image (engine.io.render.save_overlay).

    Every file is written atomically and none replaces a file Sensiscope did not write: all names
    are checked before the first is written, so a refusal leaves the folder as it was."""
    from engine.app.data import save_overlay

    folder = Path(folder)
    names = [(folder / f"{stem}.npy", folder / f"{stem}.png") for stem, _, _ in items]
    for pair in names:
        for path in pair:
            check_output(path, overwrite)
    files = []
    for (npy, png), (_, saliency, image) in zip(names, items, strict=True):
        with atomic_path(npy, overwrite) as temporary, temporary.open("wb") as handle:
            np.save(handle, np.asarray(saliency, dtype=np.float32), allow_pickle=False)
        background = image if image is not None else np.zeros((*saliency.shape, 3), np.float32)
        with atomic_path(png, overwrite) as temporary:
            save_overlay(temporary, background, saliency)
        files += [str(npy), str(png)]
    return files


class SessionActions:
    """File > Export and File > Save / Open session for a MainWindow."""

    def __init__(self, window) -> None:
        self.window = window
        self.pending: dict | None = None  # the session's data selection, made once its dataset opens

    # ---------------------------------------------------------------- exports
    def export_comparison(self, path: str | Path | None = None, dpi: int | None = None) -> bool:
        """Every finished map as one figure (PNG at a chosen DPI, SVG or PDF) with a JSON of parameters beside it."""
        cells = self.window.grid.finished_cells()
        stem = safe_name(f"{Path(cells[0].request.input_name).stem}_comparison") if cells else "comparison"
        return self.export_figure(cells, path, dpi, stem, "Export the comparison as a figure")

    def export_cell(self, cell, path: str | Path | None = None, dpi: int | None = None) -> bool:
        """One map as a figure (the cell's right-click menu), named from its input and method."""
        stem = safe_name(f"{Path(cell.request.input_name).stem}_{cell.request.method}")
        return self.export_figure([cell], path, dpi, stem, "Export the map as a figure")

    def export_report(self, path: str | Path | None = None) -> bool:
        """The session as one HTML file for a browser: each map as a figure with its parameters, and the versions."""
        window = self.window
        cells = window.grid.finished_cells()
        tables = report_tables(window.tabular_panel)
        if not cells and not tables:
            window.show_error("Nothing to report", "No finished map or table result yet.")
            return False
        if path is None:
            path, _ = QFileDialog.getSaveFileName(window, "Export a report of the session", "report.html", "HTML (*.html)")
            if not path:
                return False
        from engine.core.files import write_text
        from engine.core.versions import versions

        from .report import report_html

        grid, ws = window.grid, window.workspace
        table = window.tabular_panel.table
        context = {
            "session": Path(window.session_path).name if window.session_path else "(not saved)",
            "model": ws.model.loaded.spec if ws.model else "", "model source": ws.model.loaded.source if ws.model else "",
            "data": (ws.data_ref or {}).get("path") or ("the demo images" if (ws.data_ref or {}).get("demo") else ""),
            "table": str(table.path) if table is not None else "", "maps": len(cells),
        }
        panels = [figure_panel(cell, grid.colormap_box.currentText(), grid.mask_box.isChecked()) for cell in cells]
        try:
            write_text(path, report_html("Sensiscope report", panels, [map_record(cell) for cell in cells], context, versions(), tables=tables), overwrite=True)
        except UserError as exc:
            window.show_error("Cannot write the report", str(exc))
            return False
        window.statusBar().showMessage(f"Report written to {path}", 8000)
        return True

    def export_figure(self, cells: list, path, dpi: int | None, stem: str, caption: str) -> bool:
        window = self.window
        cells = [cell for cell in cells if cell.explanation is not None]
        if not cells:
            window.show_error("Nothing to export", "No finished map yet.")
            return False
        interactive = path is None
        if interactive:
            path, _ = QFileDialog.getSaveFileName(window, caption, f"{stem}.png", FIGURE_FILTER)
            if not path:
                return False
        if dpi is None:
            dpi = int(window.settings.value("export/dpi", DEFAULT_DPI))
            if interactive and Path(path).suffix.lower() == ".png":
                dpi, ok = QInputDialog.getInt(window, "Resolution", "Dots per inch of the PNG:", dpi, 72, 1200, 50)
                if not ok:
                    return False
                window.settings.setValue("export/dpi", dpi)
        from engine.app.explain import write_figure

        grid = window.grid
        panels = [figure_panel(cell, grid.colormap_box.currentText(), grid.mask_box.isChecked()) for cell in cells]
        title = cells[0].request.input_name if len({c.request.input_name for c in cells}) == 1 else ""
        try:
            files = write_figure(path, panels, [map_record(cell) for cell in cells], dpi=dpi, title=title, overwrite=True)
        except UserError as exc:
            window.show_error("Cannot export the figure", str(exc))
            return False
        window.statusBar().showMessage(f"Saved {files[0]} and its parameters ({Path(files[1]).name})", 8000)
        return True

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
        foreign = foreign_files([stem for stem, _, _ in items], folder)
        overwrite = bool(foreign) and self.confirm_replace(foreign, folder)
        if foreign and not overwrite:
            return None
        job = window.jobs.submit(lambda progress, cancel: write_maps(items, folder, overwrite), f"Exporting {len(items)} map(s)", lane=FILE_LANE)
        job.signals.finished.connect(lambda files: window.statusBar().showMessage(f"Wrote {len(files)} file(s) to {folder}", 8000))
        job.signals.failed.connect(lambda message: window.show_error("Cannot export the maps", message))
        return job

    def confirm_replace(self, paths: list[Path], folder: str | Path) -> bool:
        """Ask before replacing files Sensiscope did not write; the default answer is No."""
        listing = "<br>".join(p.name for p in paths[:6]) + (f"<br>... and {len(paths) - 6} more" if len(paths) > 6 else "")
        box = QMessageBox(
            QMessageBox.Icon.Warning,
            "Replace files?",
            f"{len(paths)} file(s) in {folder} were not written by Sensiscope and would be replaced:<br>{listing}",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            self.window,
        )
        box.setDefaultButton(QMessageBox.StandardButton.No)
        box.button(QMessageBox.StandardButton.Yes).setText("Replace them")
        return box.exec() == QMessageBox.StandardButton.Yes

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
            # how the model was loaded, never whether it was trusted: trust is not the file's to give
            "model": self.model_state(),
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

    def model_state(self) -> dict | None:
        """The loaded model as a session records it: spec, weights, labels and a class's constructor
        arguments (never the trust decision)."""
        model = self.window.workspace.model
        if model is None:
            return None
        record = {key: model.ref.get(key, "") for key in ("spec", "weights", "labels")}
        if model.ref.get("model_args"):
            record["model_args"] = dict(model.ref["model_args"])
        return record

    def save(self, path: str | Path | None = None) -> bool:
        window = self.window
        if path is None:
            path, _ = QFileDialog.getSaveFileName(window, "Save the session", "session.sensiscope.zip", SESSION_FILTER)
            if not path:
                return False
        try:
            state, arrays = self.state()
            write_session(path, state, arrays)
        except UserError as exc:
            window.show_error("Cannot save the session", str(exc))
            return False
        except (OSError, TypeError, ValueError) as exc:
            window.show_error("Cannot save the session", f"{path}: {exc}")
            return False
        window.statusBar().showMessage(f"Session saved to {path} ({len(state['cells'])} map(s))", 8000)
        window.session_saved(str(path))
        return True

    def open(self, path: str | Path | None = None) -> Job | None:
        window = self.window
        if path is None:
            path, _ = QFileDialog.getOpenFileName(window, "Open a session", "", SESSION_FILTER)
            if not path:
                return None

        def load(progress, cancel):
            from engine.app import explain as engine_explain

            methods = {spec.name for spec in engine_explain.available_methods()}
            try:
                session = read_session(path, methods)
            except SessionError as exc:
                raise UserError(str(exc)) from None
            try:
                results = rebuild_results(session.tabular_results)
            except (AttributeError, KeyError, TypeError, ValueError, IndexError) as exc:
                raise UserError(f"{Path(path).name}: the session has damaged table results ({type(exc).__name__}: {exc})") from None
            return session, results

        job = window.jobs.submit(load, f"Opening session {Path(path).name}", lane=FILE_LANE, key="session")
        job.signals.finished.connect(lambda result: (self._restore(*result), window.session_saved(str(path))))
        job.signals.failed.connect(lambda message: window.show_error("Cannot open the session", message))
        return job

    def _restore(self, session: Session, results: tuple = (None, None)) -> None:
        """Apply a session that was read and checked whole (nothing here can meet a wrong type)."""
        window = self.window
        grid = window.grid
        window.cancel_analyses()
        grid.clear()
        window.undo.stack.clear()  # a new document: nothing before it can be undone
        display = session.display
        grid.colormap_box.setCurrentText(display.colormap)
        grid.opacity_slider.setValue(display.opacity)
        grid.scale_box.setCurrentIndex(display.scale)
        grid.mask_box.setChecked(display.mask)
        grid.follow_box.setChecked(display.follow)
        model = session.model
        fallback = ModelInfo(model.spec, model.weights, model.labels, model_args=args_text(model.model_args)) if model and model.spec else None
        for item in session.cells:
            # The cell's own model when the file names it (older sessions: the session's model).
            made_by = ModelInfo(**item.model) if item.model else fallback
            request = AnalysisRequest(item.method, dict(item.params), item.target, item.target_label, item.input_name, dict(item.defaults), item.input_path, made_by)
            window.analyses.restore(request, item.explanation, item.image, item.mask)
        grid.refresh_display()
        window.tabs.setCurrentIndex(0)
        data = session.data
        self.pending = {"selected": data.selected} if data and data.selected else None
        if model and model.spec:
            # Never trusted from the file: a pickled model fails with UntrustedFile and the user is asked;
            # a class of the user's code (net.py:Net) runs that file, so the user is asked first too.
            if class_spec_parts(model.spec) is None or window.model_panel.confirm_run_code(model.spec, "This session's model is a Python class."):
                window._load_model(model.spec, model.weights, model.labels, False, dict(model.model_args))
            else:
                window.show_error("The session's model was not loaded", f"{model.spec} was not run; load a model under Model to explain more")
        if data and (data.path or data.demo):
            window.workspace.open_dataset(data.path or None, demo=data.demo)
        panel = window.tabular_panel
        if any(r is not None for r in results):
            panel.restore_results(*results)
        if session.table and session.table.get("path"):
            panel.pending_target = session.table.get("target")
            panel.pending_results = results if any(r is not None for r in results) else None
            panel.open_table(session.table["path"])
        window.statusBar().showMessage(f"Session restored: {len(session.cells)} map(s)", 8000)
        window.session_restored.emit(len(session.cells))

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
