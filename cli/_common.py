"""What every command module shares: the parser class, argument types, log lines, JSON output,
a terminal progress line, and the mapping of --param assignments onto method parameters."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from engine.core.errors import UserError
from engine.core.jsonable import dumps

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line on stderr with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see --help)")


def _size(text: str) -> int | None:
    if text.strip().lower() in ("none", "0", ""):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size in pixels or 'none'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive size")
    return value


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers") from None


def _target(text: str) -> int | None:
    if text.strip().lower() in ("pred", "predicted"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"target must be 'pred' or a class index, not '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"target must be a class index of 0 or more, not {value}")
    return value


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _emit(data, as_json: bool, text: str) -> None:
    if as_json:
        sys.stdout.write(dumps(data))
        sys.stdout.write("\n")
    else:
        print(text)


def _preprocess_overrides(args) -> dict:
    return {name: getattr(args, name) for name in ("resize", "crop", "mean", "std", "channels") if hasattr(args, name)}


def _method_params(method_names: list[str], assignments: dict[str, str], layer: str | None) -> dict:
    """Parameter objects per method. KEY=VALUE goes to every method that has KEY (and must fit at
    least one); METHOD.KEY=VALUE to that method only; --layer to every method with a layer."""
    from engine.core.params import build_params
    from engine.methods._registry import get_method

    specs = {name: get_method(name) for name in method_names}
    fields = {name: {f.name for f in dataclasses.fields(spec.params_cls)} for name, spec in specs.items()}
    values: dict[str, dict] = {name: {} for name in specs}
    for key, value in assignments.items():
        scope, dot, field = key.rpartition(".")
        if dot and scope in specs:
            values[scope][field] = value
        elif dot:
            raise UserError(f"parameter '{key}' is scoped to method '{scope}', which is not among --method {' '.join(specs)}")
        else:
            takers = [name for name in specs if key in fields[name]]
            if not takers:
                raise UserError(f"unknown parameter '{key}' for {', '.join(specs)}; `main.py info` lists each method's parameters")
            for name in takers:
                values[name][key] = value
    if layer is not None:
        takers = [name for name in specs if "layer" in fields[name]]
        if not takers:
            raise UserError(f"method {', '.join(specs)} takes no layer")
        for name in takers:
            values[name].setdefault("layer", layer)
    return {name: build_params(spec.params_cls, values[name]) for name, spec in specs.items()}


def _progress_printer():
    state = {"last": ""}

    def report(fraction: float, message: str) -> None:
        text = f"[{fraction:4.0%}] {message}"
        if text != state["last"]:
            print("\r" + text.ljust(78), end="", file=sys.stderr, flush=True)
            state["last"] = text

    return report


def _print_json(data) -> None:
    sys.stdout.write(dumps(data))
    sys.stdout.write("\n")
