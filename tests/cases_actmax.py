"""Contract cases for activation maximisation (the lead wires them into tests/cases.py)."""

from __future__ import annotations

from tests.models import LinearModel, tiny_cnn

CASES = [
    (lambda: LinearModel(3, 8, 4), (3, 8, 8), {"steps": 4, "init": "noise", "l2": 0.1}),
    (lambda: tiny_cnn(), (3, 16, 16), {"steps": 3, "init": "input", "objective": "channel", "targets": "1,2", "jitter": 1}),
    (lambda: tiny_cnn(), (3, 16, 16), {"steps": 3, "fourier": True, "size": 12, "scale": 0.2, "blur_every": 2, "tv": 0.1}),
]
