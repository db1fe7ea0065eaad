"""The table of (method, model, params) cases that several test files run through."""

from __future__ import annotations

from tests.models import LinearModel, tiny_cnn

# name -> (model factory, input shape C x H x W, parameter sets)
METHOD_CASES = {
    "saliency": [
        (lambda: LinearModel(3, 8, 4), (3, 8, 8), {"reduce": "maxabs"}),
        (lambda: LinearModel(3, 8, 4), (3, 8, 8), {"reduce": "sum", "output": "probability"}),
        (lambda: tiny_cnn(), (3, 16, 16), {"reduce": "sum", "output": "log_probability"}),
    ],
}


def all_cases():
    for method, cases in METHOD_CASES.items():
        for index, (factory, shape, params) in enumerate(cases):
            yield method, index, factory, shape, params
