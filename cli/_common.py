"""What every command module shares: the parser class, argument types, log lines, JSON output,
a terminal progress line, and the mapping of --param assignments onto method parameters."""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time

from engine.core.errors import UserError
from engine.core.jsonable import dumps

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line on stderr with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see --help)")


MAX_SEED = 2**32 - 1  # numpy's seed range
SEED_HELP = f"(0 to {MAX_SEED})"


def integer(low: int, high: int | None = None):
    """An argparse type for a whole number in [low, high]; '1e3' is accepted when it is whole."""

    def parse(text: str) -> int:
        try:
            number = float(text)
            value = int(text) if text.strip().lstrip("+-").isdigit() else int(number)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if float(value) != number:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number")
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is outside {low} to {high if high is not None else 'any size'}")
        return value

    return parse


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False):
    """An argparse type for a finite number in [low, high] (or (low, high] with ``low_open``)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"'{text}' is not a finite number")
        too_low = low is not None and (value <= low if low_open else value < low)
        if too_low or (high is not None and value > high):
            bracket = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"{value:g} is outside {bracket}{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]")
        return value

    return parse


seed = integer(0, MAX_SEED)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _emit(data, as_json: bool, text: str) -> None:
    if as_json:
        sys.stdout.write(dumps(data))
        sys.stdout.write("\n")
    else:
        print(text)


def _method_params(method_names: list[str], assignments: dict[str, str], layer: str | None, run_settings: dict | None = None) -> dict:
    """Parameter objects per method. KEY=VALUE goes to every method that has KEY (and must fit at
    least one); METHOD.KEY=VALUE to that method only; --layer to every method with a layer.

    ``batch_size`` and ``memory_budget_mb`` are settings of the run, no longer method parameters
    (pertmap's ``batch_size``, its noise samples per step, excepted): where no method named takes
    them, they go into ``run_settings`` (explain's --batch-size and --memory-budget), or, without
    it, are refused in one line."""
    from engine.app.explain import get_method
    from engine.core.params import RUN_SETTINGS, build_params

    specs = {name: get_method(name) for name in method_names}
    fields = {name: {f.name for f in dataclasses.fields(spec.params_cls)} for name, spec in specs.items()}
    values: dict[str, dict] = {name: {} for name in specs}
    for key, value in assignments.items():
        scope, dot, field = key.rpartition(".")
        if dot and scope not in specs:
            raise UserError(f"parameter '{key}' is scoped to method '{scope}', which is not among --method {' '.join(specs)}")
        takers = [scope] if dot else [name for name in specs if key in fields[name]]
        if field in RUN_SETTINGS and not any(field in fields[name] for name in takers):
            _run_setting(field, value, run_settings)
            continue
        if not takers:
            raise UserError(f"unknown parameter '{key}' for {', '.join(specs)}; `main.py info` lists each method's parameters")
        for name in takers:
            values[name][field] = value
    if layer is not None:
        takers = [name for name in specs if "layer" in fields[name]]
        if not takers:
            raise UserError(f"method {', '.join(specs)} takes no layer")
        for name in takers:
            values[name].setdefault("layer", layer)
    return {name: build_params(spec.params_cls, values[name]) for name, spec in specs.items()}


def _run_setting(name: str, value: str, run_settings: dict | None) -> None:
    """``--param batch_size=N`` (or memory_budget_mb) for methods that no longer take it."""
    flag = {"batch_size": "--batch-size", "memory_budget_mb": "--memory-budget"}[name]
    if run_settings is None:
        raise UserError(f"{name} is a setting of the run, no longer a method parameter: explain takes {flag}; here the batches are sized by measurement")
    try:
        number = int(value)
    except ValueError:
        number = -1
    if number < 0:
        raise UserError(f"{name} takes a whole number of at least 0, not '{value}'")
    if run_settings.get(name) and run_settings[name] != number:
        raise UserError(f"{flag} {run_settings[name]} and --param {name}={value} disagree; give {flag} only")
    run_settings[name] = number


def _eta(seconds: float) -> str:
    minutes, secs = divmod(int(seconds + 0.5), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _progress_printer(prefix: str = ""):
    """A progress line on stderr, rewritten in place, with the time left once it can be estimated."""
    state = {"last": "", "start": time.perf_counter()}

    def report(fraction: float, message: str = "", data=None) -> None:
        elapsed = time.perf_counter() - state["start"]
        eta = f", {_eta(elapsed * (1 - fraction) / fraction)} left" if 0.02 <= fraction < 1 and elapsed > 2 else ""
        text = f"{prefix}[{fraction:4.0%}] {message}{eta}"
        if text != state["last"]:
            print("\r" + text[:110].ljust(78), end="", file=sys.stderr, flush=True)
            state["last"] = text

    return report


def _print_json(data) -> None:
    sys.stdout.write(dumps(data))
    sys.stdout.write("\n")


class _ProgressBar:
    """A rich progress bar on stderr with the rate and the time left; a context manager whose
    value is a progress callback. A payload with ``done``, ``total`` (and ``computed``) counts
    items, so the rate is items per second of this run (a resume's head start is not counted);
    otherwise the bar follows the fraction. ``quiet`` (--json) draws nothing."""

    def __init__(self, unit: str = "items", quiet: bool = False) -> None:
        self.unit, self.quiet = unit, quiet
        self._progress = None
        self._task = None
        self._start = time.perf_counter()
        self._base: int | None = None

    def __enter__(self):
        if self.quiet:
            return lambda fraction, message="", data=None: None
        return self.report

    def _start_bar(self) -> None:
        """Drawn from the first report on, so a refusal before the work leaves no empty bar."""
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn

        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"), TextColumn("{task.fields[rate]}"), TextColumn("{task.fields[eta]}"))
        self._progress = Progress(*columns, console=Console(stderr=True), refresh_per_second=4)
        self._progress.start()
        self._task = self._progress.add_task("", total=1.0, count="", rate="", eta="")

    def report(self, fraction: float, message: str = "", data=None) -> None:
        if self._progress is None:
            self._start_bar()
        elapsed = time.perf_counter() - self._start
        done, total = getattr(data, "done", None), getattr(data, "total", None)
        count = rate = eta = ""
        if done is not None and total:
            if self._base is None:
                self._base = done - getattr(data, "computed", 0)
            made = done - self._base
            count = f"{done}/{total} {self.unit}"
            if made > 0 and elapsed > 0:
                per_second = made / elapsed
                rate = f"{per_second:.2f} {self.unit}/s" if per_second >= 0.1 else f"{1 / per_second:.1f} s/{self.unit[:-1] if self.unit.endswith('s') else self.unit}"
                eta = f"{_eta((total - done) / per_second)} left"
            fraction = done / total
        elif 0.02 <= fraction < 1 and elapsed > 2:
            eta = f"{_eta(elapsed * (1 - fraction) / fraction)} left"
        self._progress.update(self._task, completed=min(max(fraction, 0.0), 1.0), description=message[:40], count=count, rate=rate, eta=eta)

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
