"""Parameter declarations: conversion, bounds and choices, as the CLI and GUI use them."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine import UserError
from engine.core.params import build_params, param, param_specs, parse_assignments


@dataclass(frozen=True)
class Example:
    steps: int = param(10, "optimisation steps", low=1, high=1000)
    rate: float = param(0.1, "learning rate", low=0.0)
    mode: str = param("fast", "how to run", choices=("fast", "exact"))
    central: bool = param(False, "use central differences")


def test_specs_carry_defaults_bounds_choices_and_help():
    specs = {s.name: s for s in param_specs(Example)}
    assert specs["steps"].type is int and specs["steps"].default == 10
    assert (specs["steps"].low, specs["steps"].high) == (1, 1000)
    assert specs["mode"].choices == ("fast", "exact")
    assert specs["central"].help == "use central differences"


def test_strings_are_converted_to_the_declared_types():
    params = build_params(Example, {"steps": "25", "rate": "1e-3", "mode": "exact", "central": "yes"})
    assert params == Example(steps=25, rate=0.001, mode="exact", central=True)


@pytest.mark.parametrize(
    "values,message",
    [
        ({"steps": "0"}, "at least 1"),
        ({"steps": "1001"}, "at most 1000"),
        ({"steps": "2.5"}, "integer"),
        ({"steps": "many"}, "integer"),
        ({"rate": "-1"}, "at least 0"),
        ({"rate": "nan"}, "finite number"),
        ({"rate": "inf"}, "finite number"),
        ({"mode": "slow"}, "one of fast, exact"),
        ({"central": "maybe"}, "true or false"),
        ({"colour": "red"}, "unknown parameter"),
    ],
)
def test_bad_values_are_user_errors(values, message):
    with pytest.raises(UserError, match=message):
        build_params(Example, values)


@given(st.integers(min_value=1, max_value=1000))
def test_every_integer_in_bounds_is_accepted(value):
    assert build_params(Example, {"steps": str(value)}).steps == value


def test_assignments_parse_and_reject_malformed_items():
    assert parse_assignments(["a=1", "b = x=y"]) == {"a": "1", "b": " x=y"}
    with pytest.raises(UserError, match="key=value"):
        parse_assignments(["novalue"])
