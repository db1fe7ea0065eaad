"""Contract cases for the CAM family: layercam, xgradcam, hirescam, eigencam, scorecam, ablationcam."""

from __future__ import annotations

from tests.models import region_model, tiny_cnn

_GRADIENT_CAM_CASES = [
    (lambda: tiny_cnn(), (3, 16, 16), {}),
    (lambda: region_model(), (3, 16, 16), {"layer": "features.2", "relu": False}),
    (lambda: tiny_cnn(seed=1), (3, 12, 20), {"layer": "features.3", "output": "log_probability"}),
]

CASES_BY_METHOD = {
    "layercam": _GRADIENT_CAM_CASES,
    "xgradcam": _GRADIENT_CAM_CASES,
    "hirescam": _GRADIENT_CAM_CASES,
    "eigencam": [
        (lambda: tiny_cnn(), (3, 16, 16), {}),
        (lambda: region_model(), (3, 16, 16), {"layer": "features.2", "relu": False}),
    ],
    "scorecam": [
        (lambda: tiny_cnn(), (3, 16, 16), {"batch_size": 3}),
        (lambda: region_model(), (3, 16, 16), {"layer": "features.3", "weighting": "scores", "output": "probability"}),
    ],
    "ablationcam": [
        (lambda: tiny_cnn(), (3, 16, 16), {"batch_size": 3}),
        (lambda: tiny_cnn(seed=1), (3, 12, 20), {"layer": "features.3", "relu": False, "output": "logit"}),
    ],
}
