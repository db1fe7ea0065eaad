"""The table of (method, model, params) cases that several test files run through.

Each method contributes its cases in ``tests/cases_<method>.py`` (``CASES`` for a file with one
method, ``CASES_BY_METHOD`` for a file that registers several).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

from tests.models import LinearModel, tiny_cnn

# name -> [(model factory, input shape C x H x W, params)]
METHOD_CASES = {
    "saliency": [
        (lambda: LinearModel(3, 8, 4), (3, 8, 8), {"reduce": "maxabs"}),
        (lambda: LinearModel(3, 8, 4), (3, 8, 8), {"reduce": "sum", "output": "probability"}),
        (lambda: tiny_cnn(), (3, 16, 16), {"reduce": "sum", "output": "log_probability"}),
    ],
}

for _module in pkgutil.iter_modules([str(Path(__file__).parent)]):
    if _module.name.startswith("cases_"):
        _cases = importlib.import_module(f"tests.{_module.name}")
        if hasattr(_cases, "CASES_BY_METHOD"):
            METHOD_CASES.update(_cases.CASES_BY_METHOD)
        else:
            METHOD_CASES[_module.name[len("cases_"):]] = _cases.CASES


def all_cases():
    for method, cases in METHOD_CASES.items():
        for index, (factory, shape, params) in enumerate(cases):
            yield method, index, factory, shape, params
