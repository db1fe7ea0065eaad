"""Contract cases for Grad-CAM and Grad-CAM++ (wired into tests/cases.py by the lead)."""

from __future__ import annotations

from tests.models import region_model, tiny_cnn

CASES_BY_METHOD = {
    "gradcam": [
        (lambda: tiny_cnn(), (3, 16, 16), {}),
        (lambda: region_model(), (3, 16, 16), {"layer": "features.2", "relu": False}),
        (lambda: tiny_cnn(seed=1), (3, 12, 20), {"layer": "features.3", "output": "log_probability"}),
    ],
    "gradcam++": [
        (lambda: tiny_cnn(), (3, 16, 16), {}),
        (lambda: region_model(), (3, 16, 16), {"layer": "features.3", "output": "probability"}),
    ],
}
