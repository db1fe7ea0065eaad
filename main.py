"""Sensiscope entry point: the GUI by default, headless commands otherwise (see `main.py --help`)."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] == "gui":
        from gui.app import run_gui

        return run_gui(argv[1:])
    from cli.main import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
