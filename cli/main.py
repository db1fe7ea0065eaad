"""The headless command line: the root parser and the dispatch to one module per command group
(the GUI entry lives in main.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from cli import batch, explain, images, phantom, tabular
from cli._common import EXIT_USER_ERROR, _Parser
from engine.core.errors import Cancelled, UserError
from engine.core.requests import ModelSpec

# Sub-commands appear in --help in this order.
_GROUPS = (explain, tabular, phantom, images, batch)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="main.py", description="Sensiscope: sensitivity analysis of neural networks. With no command, the GUI opens.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--self-check", action="store_true", help="check the installation headlessly and exit")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
    commands.add_parser("gui", help="open the desktop application (the default)")
    for group in _GROUPS:
        group.add_parsers(commands)
    return parser


# Options that name a model, a file or a folder: an empty value (an unset shell variable) would
# otherwise become the current folder ("."), explained, trained on or written into.
_NAMES_A_PATH = {
    "model": "a model",
    "weights": "a weights file",
    "labels": "a labels file",
    "input": "an image, a folder or a DICOM file",
    "data": "a table, a folder of images or a demo name",
    "out": "a folder or file to write",
    "store": "a result store folder",
}


def _refuse_empty_values(args) -> None:
    for name, what in _NAMES_A_PATH.items():
        value = getattr(args, name, None)
        if not isinstance(value, str) or value.strip():
            continue
        if name == "model" and args.command not in tabular.COMMANDS:
            ModelSpec(value)  # the engine's own refusal of an empty model, the one the GUI shows too
        if name == "model":
            what = "a model saved by `train` (MODEL.safetensors with its MODEL.json)"
        raise UserError(f"--{name} is empty: give {what} (is a shell variable unset?)")


def main(argv: Sequence[str] | None = None) -> int:
    """Run a headless command; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        _refuse_empty_values(args)
        if args.version:
            from engine.core.versions import app_version

            print(f"Sensiscope {app_version()}")
            return 0
        if args.self_check:
            from cli.selfcheck import self_check  # imports torch: only when asked for

            return self_check()
        for group in _GROUPS:
            if args.command in group.COMMANDS:
                return group.COMMANDS[args.command](args)
        raise UserError("no command given; use info, explain, train, sobol, reduce, phantom, train-images, evaluate or batch (or no arguments for the GUI)")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Cancelled:
        print("cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
