"""Menus and habits of the main window: recent files, theme, shortcuts, copy, memory use, drops."""

from __future__ import annotations

import sys
from pathlib import Path

import psutil
from PySide6.QtCore import QSettings, Qt, QTimer
from PySide6.QtGui import QAction, QActionGroup, QColor, QGuiApplication, QKeySequence, QPalette
from PySide6.QtWidgets import QApplication, QDialog, QDialogButtonBox, QLabel, QMenu, QTreeWidget, QTreeWidgetItem, QVBoxLayout

from engine.core.vocab import MODEL_FILE_SUFFIXES
from gui.plotting import configure_pyqtgraph

from .results import looks_like_store

MAX_RECENT = 8
RECENT_KINDS = (("models", "Recent &models"), ("data", "Recent &data"), ("tables", "Recent &tables"))
MODEL_SUFFIXES = frozenset(MODEL_FILE_SUFFIXES) | {".pt2"}  # a dropped file with one of these goes to the model panel
TABLE_SUFFIXES = frozenset({".csv", ".tsv", ".parquet"})
THEMES = ("light", "dark")
WARNING_COLOURS = {"light": "#b02a00", "dark": "#ff8a5c"}  # both at least 4.5:1 against their window colour (WCAG AA)
MEMORY_INTERVAL_MS = 2000


class RecentFiles:
    """Most recent first, at most MAX_RECENT per kind, stored in QSettings under recent/KIND."""

    def __init__(self, settings: QSettings) -> None:
        self.settings = settings

    def paths(self, kind: str) -> list[str]:
        value = self.settings.value(f"recent/{kind}", [])
        if isinstance(value, str):
            value = [value] if value else []
        return [str(v) for v in (value or [])]

    def add(self, kind: str, path: str | Path) -> None:
        path = str(Path(path).resolve())
        paths = [path, *(p for p in self.paths(kind) if p != path)][:MAX_RECENT]
        self.settings.setValue(f"recent/{kind}", paths)

    def prune(self, kind: str) -> list[str]:
        """Drop the paths that no longer exist; returns the dropped ones."""
        paths = self.paths(kind)
        kept = [p for p in paths if Path(p).exists()]
        if len(kept) != len(paths):
            self.settings.setValue(f"recent/{kind}", kept)
        return [p for p in paths if p not in kept]


def readable_light(palette: QPalette) -> QPalette:
    """The platform's light palette with the two colours that fall short of 4.5:1 made readable: the
    warning colour (the untrained mark) and the selection (white on Fusion's light blue is 3.7:1)."""
    palette.setColor(QPalette.ColorRole.BrightText, QColor(WARNING_COLOURS["light"]))
    for group in (QPalette.ColorGroup.Active, QPalette.ColorGroup.Inactive):
        palette.setColor(group, QPalette.ColorRole.Highlight, QColor("#2464a8"))
        palette.setColor(group, QPalette.ColorRole.HighlightedText, QColor("#ffffff"))
    return palette


def themed_palette(name: str) -> QPalette:
    """The light palette of the style, or a dark one."""
    app = QApplication.instance()
    if name != "dark":
        return readable_light(app.style().standardPalette())
    palette = QPalette()
    role = QPalette.ColorRole
    colours = {
        role.Window: "#2b2d30", role.WindowText: "#e6e6e6", role.Base: "#1f2023", role.AlternateBase: "#2b2d30",
        role.ToolTipBase: "#3a3c40", role.ToolTipText: "#e6e6e6", role.Text: "#e6e6e6", role.Button: "#35373b",
        role.ButtonText: "#e6e6e6", role.BrightText: WARNING_COLOURS["dark"], role.Link: "#6ab0ff", role.Highlight: "#2f64b5",
        role.HighlightedText: "#ffffff", role.PlaceholderText: "#8a8a8a", role.Mid: "#55585e",
    }
    for key, colour in colours.items():
        palette.setColor(key, QColor(colour))
    for key in (role.WindowText, role.Text, role.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, key, QColor("#7a7a7a"))
    return palette


def memory_text(device: str) -> str:
    """Memory use of the device: CUDA allocated/total when torch is already loaded, else the process RSS."""
    torch = sys.modules.get("torch")  # never import torch here: this runs on the main thread
    if torch is not None and device.startswith("cuda"):
        try:
            index = int(device.partition(":")[2] or 0)
            used = torch.cuda.memory_allocated(index) / 2**20
            total = torch.cuda.get_device_properties(index).total_memory / 2**20
            return f"GPU {used:,.0f} / {total:,.0f} MB"
        except Exception:  # a device that went away: fall back to the process
            pass
    try:
        return f"RAM {psutil.Process().memory_info().rss / 2**20:,.0f} MB"
    except (psutil.Error, OSError):  # a sandbox that hides the process's own statistics
        return "RAM ?"


SHORTCUTS = (
    ("open_image_action", "Ctrl+O"),
    ("open_model_action", "Ctrl+Shift+O"),
    ("run_action", "Ctrl+R"),
    ("cancel_action", "Esc"),
    ("save_session_action", "Ctrl+S"),
    ("export_comparison_action", "Ctrl+Shift+S"),
    ("copy_map_action", "Ctrl+C"),
    ("quit_action", "Ctrl+Q"),
    ("remove_cell_action", "Ctrl+W"),
    ("undo_action", "Ctrl+Z"),
    ("redo_action", "Ctrl+Shift+Z"),
    ("fit_action", "F"),
)


class WindowActions:
    """Adds the recent-file menus, Edit, theme, shortcuts and the memory label to a MainWindow."""

    def __init__(self, window) -> None:
        self.window = window
        self.recent = RecentFiles(window.settings)
        self.recent_menus: dict[str, QMenu] = {}
        self.theme = "light"
        self.memory_label = QLabel()
        self.memory_label.setToolTip("Memory used: the GPU's allocated memory on CUDA, the process's resident memory otherwise")
        window.statusBar().addPermanentWidget(self.memory_label)
        self.timer = QTimer(window)
        self.timer.setInterval(MEMORY_INTERVAL_MS)
        self.timer.timeout.connect(self.update_memory)
        self.timer.start()
        self.update_memory()

    # ---------------------------------------------------------------- menus
    def build(self, file_menu: QMenu, view_menu: QMenu, help_menu: QMenu, before_file: QAction, before_help: QAction) -> None:
        w = self.window
        for kind, title in RECENT_KINDS:
            menu = QMenu(title, w)
            menu.aboutToShow.connect(lambda kind=kind: self.fill_recent(kind))
            file_menu.insertMenu(before_file, menu)
            self.recent_menus[kind] = menu
        file_menu.insertSeparator(before_file)
        edit_menu = QMenu("&Edit", w)
        w.menuBar().insertMenu(view_menu.menuAction(), edit_menu)
        w.copy_map_action = QAction("&Copy map image", w)
        w.copy_map_action.triggered.connect(self.copy_map)
        w.remove_cell_action = QAction("&Remove the selected map", w)
        w.remove_cell_action.triggered.connect(self.remove_cell)
        w.run_action = QAction("&Run the analysis", w)
        w.run_action.triggered.connect(w.analysis_panel._run)
        w.cancel_action = QAction("Ca&ncel the running analyses", w)
        w.cancel_action.triggered.connect(w.cancel_analyses)
        w.undo_action = w.undo.stack.createUndoAction(w, "&Undo")
        w.redo_action = w.undo.stack.createRedoAction(w, "&Redo")
        for action in (w.undo_action, w.redo_action):
            edit_menu.addAction(action)
        edit_menu.addSeparator()
        for action in (w.copy_map_action, w.remove_cell_action, w.run_action, w.cancel_action):
            edit_menu.addAction(action)
        theme_menu = view_menu.addMenu("&Theme")
        group = QActionGroup(w)
        self.theme_actions = {}
        for name in THEMES:
            action = QAction(name.capitalize(), w, checkable=True)
            action.triggered.connect(lambda _checked=False, name=name: self.set_theme(name))
            group.addAction(action)
            theme_menu.addAction(action)
            self.theme_actions[name] = action
        w.shortcuts_action = QAction("&Keyboard shortcuts", w)
        w.shortcuts_action.triggered.connect(self.show_shortcuts)
        help_menu.insertAction(before_help, w.shortcuts_action)
        for name, keys in SHORTCUTS:
            getattr(w, name).setShortcut(QKeySequence(keys))
        w.cancel_action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
        if w.settings.value("view/theme") == "dark":  # light: the platform's own palette stays untouched
            self.set_theme("dark", save=False)
        else:
            self.theme_actions["light"].setChecked(True)
            QApplication.setPalette(readable_light(QApplication.palette()))

    def fill_recent(self, kind: str) -> None:
        menu = self.recent_menus[kind]
        menu.clear()
        missing = self.recent.prune(kind)
        if missing:
            names = ", ".join(Path(p).name for p in missing)
            self.window.statusBar().showMessage(f"Removed from the recent list (no longer found): {names}", 8000)
        paths = self.recent.paths(kind)
        for path in paths:
            action = menu.addAction(Path(path).name)
            action.setToolTip(path)
            action.setData(path)
            action.triggered.connect(lambda _checked=False, kind=kind, path=path: self.open_recent(kind, path))
        if not paths:
            menu.addAction("(none)").setEnabled(False)

    def open_recent(self, kind: str, path: str) -> None:
        w = self.window
        if not Path(path).exists():
            self.recent.prune(kind)
            w.show_error("File not found", f"{path} no longer exists; it was removed from the recent list.")
            return
        if kind == "models":
            w.model_panel.open_file(path)
        elif kind == "data":
            w.workspace.open_dataset(path)
        else:
            w.tabular_panel.open_table(path)

    def record_model(self, state) -> None:
        for path in (state.ref.get("weights"), state.ref.get("spec")):
            if path and Path(path).is_file():
                self.recent.add("models", path)
                return

    def record_data(self, _scan) -> None:
        ref = self.window.workspace.data_ref or {}
        if ref.get("path") and not ref.get("demo"):
            self.recent.add("data", ref["path"])

    def record_table(self, _table) -> None:
        spec = getattr(self.window.tabular_panel, "table_spec", "")
        if spec and Path(spec).is_file():
            self.recent.add("tables", spec)

    # ---------------------------------------------------------------- edit
    def selected_cell(self):
        grid = self.window.grid
        if grid.selected in grid.cells:
            return grid.selected
        return grid.cells[-1] if grid.cells else None

    def copy_map(self) -> bool:
        cell = self.selected_cell()
        if cell is None:
            self.window.statusBar().showMessage("No map to copy", 4000)
            return False
        QGuiApplication.clipboard().setImage(cell.grab().toImage())
        self.window.statusBar().showMessage("Map image copied to the clipboard", 4000)
        return True

    def remove_cell(self) -> None:
        cell = self.selected_cell()
        if cell is not None:
            self.window.undo.remove([cell])

    # ---------------------------------------------------------------- view and help
    def set_theme(self, name: str, save: bool = True) -> None:
        self.theme = name
        QApplication.instance().setPalette(themed_palette(name))
        configure_pyqtgraph()
        self.theme_actions[name].setChecked(True)
        if save:
            self.window.settings.setValue("view/theme", name)

    def shortcut_rows(self) -> list[tuple[str, str]]:
        w = self.window
        rows = []
        for name, _keys in SHORTCUTS:
            action = getattr(w, name)
            rows.append((action.text().replace("&", "").rstrip("."), action.shortcut().toString(QKeySequence.SequenceFormat.NativeText)))
        return rows

    def show_shortcuts(self) -> QDialog:
        dialog = QDialog(self.window)
        dialog.setWindowTitle("Keyboard shortcuts")
        tree = QTreeWidget()
        tree.setHeaderLabels(["Action", "Shortcut"])
        tree.setRootIsDecorated(False)
        for text, keys in self.shortcut_rows():
            tree.addTopLevelItem(QTreeWidgetItem([text, keys]))
        tree.resizeColumnToContents(0)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        buttons.rejected.connect(dialog.reject)
        layout = QVBoxLayout(dialog)
        layout.addWidget(tree)
        layout.addWidget(buttons)
        dialog.tree = tree
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.resize(380, 340)
        dialog.show()
        return dialog

    # ---------------------------------------------------------------- status
    def update_memory(self) -> None:
        self.memory_label.setText(memory_text(self.window.workspace.device))

    # ---------------------------------------------------------------- drops
    @staticmethod
    def dropped_paths(mime) -> list[str]:
        return [url.toLocalFile() for url in mime.urls() if url.isLocalFile()] if mime.hasUrls() else []

    @staticmethod
    def is_model_path(path: str) -> bool:
        """A model or weights file, or a Python file defining a model class (not a folder)."""
        return Path(path).suffix.lower() in MODEL_SUFFIXES | {".py"} and not Path(path).is_dir()

    def open_path(self, path: str) -> None:
        """A dropped or given file: a session opens, a model file goes to the model panel, a Python file to Open Python class (nothing runs before the user
        confirms), a table to the Table tab, a result store (a folder with its manifest) to the Results
        dock, an image, a DICOM series or a folder to the data panel."""
        w = self.window
        name = Path(path).name.lower()
        if looks_like_store(path):
            w.results.open_store(path)
        elif name.endswith(".zip"):
            w.session.open(path)
        elif Path(path).suffix.lower() in TABLE_SUFFIXES:
            w.tabular_panel.open_table(path)
        elif self.is_model_path(path) and name.endswith(".py"):
            w.open_python_class(path)
        elif self.is_model_path(path):
            w.model_panel.open_file(path)  # before the engine lists the models it waits for them
        else:
            w.tabs.setCurrentWidget(w.grid)
            w.workspace.open_dataset(path)
