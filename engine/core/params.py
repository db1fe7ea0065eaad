"""Method parameters: frozen dataclasses whose fields carry help text, bounds and choices.

The GUI builds its form from these fields and the CLI parses ``--param key=value`` with them, so a
method declares its parameters once.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.core.errors import UserError


def param(
    default: Any,
    help: str,
    *,
    low: float | None = None,
    high: float | None = None,
    choices: Sequence[Any] | None = None,
) -> Any:
    """Declare one method parameter with its default, a one-line help and optional limits."""
    meta = {"help": help, "low": low, "high": high, "choices": tuple(choices) if choices else None}
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class ParamSpec:
    """A parameter as a form or a parser sees it."""

    name: str
    type: type
    default: Any
    help: str
    low: float | None
    high: float | None
    choices: tuple | None

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "type": self.type.__name__,
            "default": self.default,
            "help": self.help,
            "low": self.low,
            "high": self.high,
            "choices": list(self.choices) if self.choices else None,
        }


def param_specs(params_cls: type) -> list[ParamSpec]:
    """The parameters a method's dataclass declares, in declaration order."""
    hints = typing.get_type_hints(params_cls)
    specs = []
    for field in dataclasses.fields(params_cls):
        meta = field.metadata
        specs.append(
            ParamSpec(
                name=field.name,
                type=hints[field.name],
                default=field.default,
                help=meta.get("help", ""),
                low=meta.get("low"),
                high=meta.get("high"),
                choices=meta.get("choices"),
            )
        )
    return specs


def _convert(spec: ParamSpec, value: Any) -> Any:
    kind = spec.type
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise UserError(f"parameter '{spec.name}' takes true or false, not '{value}'")
    if kind is int:
        if isinstance(value, bool):
            raise UserError(f"parameter '{spec.name}' takes an integer, not {value}")
        if isinstance(value, int):
            return value
        try:
            as_float = float(str(value).strip())
        except ValueError:
            raise UserError(f"parameter '{spec.name}' takes an integer, not '{value}'") from None
        if not as_float.is_integer():
            raise UserError(f"parameter '{spec.name}' takes an integer, not '{value}'")
        return int(as_float)
    if kind is float:
        try:
            return float(str(value).strip()) if not isinstance(value, (int, float)) else float(value)
        except ValueError:
            raise UserError(f"parameter '{spec.name}' takes a number, not '{value}'") from None
    return str(value).strip() if kind is str else value


def validate(spec: ParamSpec, value: Any) -> Any:
    """Convert a value to the parameter's type and check it against its choices and bounds."""
    value = _convert(spec, value)
    if spec.choices is not None and value not in spec.choices:
        options = ", ".join(str(c) for c in spec.choices)
        raise UserError(f"parameter '{spec.name}' must be one of {options}, not '{value}'")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):  # NaN or +-inf would turn a map into NaN without a word
            raise UserError(f"parameter '{spec.name}' must be a finite number, not {value}")
        if spec.low is not None and value < spec.low:
            raise UserError(f"parameter '{spec.name}' must be at least {spec.low}, not {value}")
        if spec.high is not None and value > spec.high:
            raise UserError(f"parameter '{spec.name}' must be at most {spec.high}, not {value}")
    return value


# Former parameters of the batched methods that are settings of the run now (the runner's
# ``batch_size`` and ``memory_budget_mb``, ``engine.runtime.context``); the front-ends and the
# runner still take them where parameters are given, and move them to the run.
RUN_SETTINGS = ("batch_size", "memory_budget_mb")


def build_params(params_cls: type, values: dict[str, Any] | None = None) -> Any:
    """Make a parameter object from a mapping of names to values (strings are converted).

    A class may name former parameters that are settings of the run now (``retired_params``, a
    tuple of names: the batch size and memory budget of the batched methods); those are accepted
    and left out here. ``runner.explain`` takes them from a mapping into the run's settings before
    it builds the parameters.
    """
    values = dict(values or {})
    for name in getattr(params_cls, "retired_params", ()):
        values.pop(name, None)
    specs = {spec.name: spec for spec in param_specs(params_cls)}
    unknown = sorted(set(values) - set(specs))
    if unknown:
        known = ", ".join(specs) or "none"
        raise UserError(f"unknown parameter(s) {', '.join(unknown)}; this method takes: {known}")
    checked = {name: validate(specs[name], value) for name, value in values.items()}
    return params_cls(**checked)


def parse_assignments(items: Sequence[str]) -> dict[str, str]:
    """Parse ``key=value`` strings from the command line."""
    result = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"malformed parameter '{item}': write it as key=value")
        result[key.strip()] = value
    return result
