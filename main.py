"""Sensiscope entry point: the GUI by default, headless commands otherwise (see `main.py --help`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path


def _is_command(name: str) -> bool:
    """A headless command's name wins over a file of that name in the current folder."""
    from cli.main import _GROUPS

    return any(name in group.COMMANDS for group in _GROUPS)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] == "gui":
        from gui.app import run_gui

        return run_gui(argv[1:])
    if not argv[0].startswith("-") and Path(argv[0]).exists() and not _is_command(argv[0]):  # `sensiscope FILE...` ("Open with")
        from gui.app import run_gui

        return run_gui(argv)
    from cli.main import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
