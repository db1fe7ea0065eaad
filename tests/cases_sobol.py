"""Contract cases for the image Sobol method: (model factory, input shape C x H x W, parameters)."""

from __future__ import annotations

from tests.models import LinearModel, region_model, tiny_cnn

CASES = [
    (lambda: tiny_cnn(), (3, 16, 16), {"grid": 4, "n": 8}),
    (lambda: LinearModel(3, 8, 4), (3, 8, 8), {"grid": 2, "n": 4, "baseline": "zero", "output": "probability", "index": "S1", "batch_size": 5, "softness": 0.0}),
    (lambda: region_model(), (3, 16, 16), {"regions": "segments", "segments": 6, "n": 8, "baseline": "mean", "output": "log_probability", "batch_size": 7}),
]
