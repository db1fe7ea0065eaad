"""Creating the QApplication and the main window; the demo and screenshot modes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

APP_NAME = "Sensiscope"
SCREENSHOT_TIMEOUT_S = 120


def create_app(argv: Sequence[str] | None = None):
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication([sys.argv[0], *(argv or [])])
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(APP_NAME)
    from gui.plotting import configure_pyqtgraph  # Qt and pyqtgraph load only when the GUI starts

    configure_pyqtgraph()
    return app


def parse_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="main.py gui", description="Open the Sensiscope window.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--demo", action="store_true", help="open the ultrasound demo and explain one image (the default)")
    group.add_argument("--empty", action="store_true", help="open an empty workspace instead of the demo")
    parser.add_argument(
        "paths", nargs="*", metavar="PATH",
        help="open these: a session (.zip), a model file (.pt2, .onnx, TorchScript), weights (.pth/.pt state dict or .safetensors: "
        "for --model, else for the architecture their sidecar .json names, else for resnet18), a Python file defining your model class "
        "(asked before it runs), an image, a folder or DICOM series, a table (.csv or .parquet), a result store folder",
    )
    parser.add_argument("--model", metavar="SPEC", help="the model: an architecture (resnet50) the weights among PATH are for, or your class (path/to/net.py:ClassName)")
    parser.add_argument("--model-args", metavar="JSON", help="constructor arguments of your class, e.g. '{\"num_classes\": 4}'")
    parser.add_argument("--screenshot", metavar="PATH", help="with the demo: save the window as PNG once its maps are drawn, then exit")
    parser.add_argument("--timeout", type=float, default=SCREENSHOT_TIMEOUT_S, help="screenshot mode: give up after this many seconds (default %(default)s)")
    return parser.parse_known_args(list(argv))


def absolute_class_spec(spec: str) -> str:
    """``net.py:Net`` with the file's absolute path (the window and its sessions outlive the current
    folder); any other spec as it is."""
    from .model_names import class_spec_parts

    parts = class_spec_parts(spec)
    if parts is None or not parts[0].lower().endswith(".py"):
        return spec
    return f"{Path(parts[0]).expanduser().resolve()}:{parts[1]}"


def open_window(args: argparse.Namespace, model_args: dict | None = None, settings=None):
    """The main window for parsed arguments, shown, with the paths given opened: model and weights
    files (and --model) as soon as the engine has listed the models, the rest at once."""
    from .main_window import MainWindow

    window = MainWindow(demo=args.demo or not (args.empty or args.paths or args.model), settings=settings)
    window.show()
    window.open_paths([str(Path(path).resolve()) for path in args.paths], absolute_class_spec(args.model or ""), model_args)
    return window


def _screenshot_mode(app, window, path: str, timeout_s: float) -> int:
    """Run until the demo's maps are drawn, save the window and return 0; non-zero on failure."""
    from PySide6.QtCore import QTimer

    outcome = {"code": None}

    def finish(code: int, message: str = "") -> None:
        if outcome["code"] is not None:
            return
        outcome["code"] = code
        if message:
            print(f"sensiscope: {message}", file=sys.stderr)
        app.exit(code)

    def save() -> None:
        app.processEvents()
        if window.grab().save(path, "PNG"):
            print(f"saved {path}")
            finish(0)
        else:
            finish(1, f"cannot write the screenshot to {path}")

    window.demo_ready.connect(lambda: QTimer.singleShot(400, save))  # let the last repaint settle
    window.demo_failed.connect(lambda message: finish(1, f"the demo failed: {message}"))
    QTimer.singleShot(int(timeout_s * 1000), lambda: finish(2, f"the demo maps were not drawn within {timeout_s:g} s"))
    code = app.exec()
    return outcome["code"] if outcome["code"] is not None else code


def run_gui(argv: Sequence[str] | None = None) -> int:
    """Open the main window (the demo unless --empty) and run the event loop until it closes."""
    args, rest = parse_args(argv or [])
    if args.screenshot and args.empty:
        print("sensiscope: --screenshot shows the demo; it cannot be combined with --empty", file=sys.stderr)
        return 2
    from engine.core.errors import UserError
    from engine.core.requests import parse_model_args  # torch-free

    try:
        model_args = parse_model_args(args.model_args)
    except UserError as exc:
        print(f"sensiscope: {exc}", file=sys.stderr)
        return 2
    app = create_app(rest)
    settings = None
    if args.screenshot:  # a reproducible picture: default layout, and the user's saved layout left alone
        import tempfile

        from PySide6.QtCore import QSettings

        scratch = tempfile.TemporaryDirectory()
        settings = QSettings(f"{scratch.name}/settings.ini", QSettings.Format.IniFormat)
    missing = [path for path in args.paths if not Path(path).exists()]
    if missing:
        print(f"sensiscope: no such file or folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    window = open_window(args, model_args, settings)
    try:
        if args.screenshot:
            window.confirm_close = lambda: True  # a picture, not a session: nothing to save at exit
            return _screenshot_mode(app, window, args.screenshot, args.timeout)
        return app.exec()
    finally:
        window.close()
