"""Cases of the `local` method for the generic method contract (tests/engine/test_method_contract.py)."""

from __future__ import annotations

from tests.models import LinearModel, tiny_cnn

CASES = [
    (lambda: tiny_cnn(), (3, 16, 16), {"window": 4}),
    (lambda: LinearModel(3, 8, 4), (3, 8, 8), {"mode": "additive", "window": 2, "stride": 1, "central": True, "output": "probability", "batch_size": 16}),
    (lambda: tiny_cnn(), (3, 16, 16), {"window": 5, "stride": 3, "baseline": "blur", "blur_sigma": 2.0, "output": "log_probability", "batch_size": 7}),
]
