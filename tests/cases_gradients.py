"""Contract cases for the gradient family: ig, smoothgrad, inputxgrad, guidedbp, guided-gradcam."""

from __future__ import annotations

from tests.models import LinearModel, region_model, tiny_cnn

CASES_BY_METHOD = {
    "ig": [
        (lambda: tiny_cnn(), (3, 16, 16), {"steps": 8}),
        (lambda: LinearModel(3, 8, 4), (3, 8, 8), {"steps": 4, "rule": "riemann_trapezoid", "baseline": "mean", "reduce": "l2", "batch_size": 3}),
        (lambda: tiny_cnn(seed=1), (3, 12, 20), {"steps": 5, "baseline": "noise", "output": "log_probability", "reduce": "abs", "batch_size": 2}),
        (lambda: region_model(), (3, 16, 16), {"steps": 6, "baseline": "blur", "blur_sigma": 2.0, "rule": "riemann_middle", "output": "probability"}),
    ],
    "smoothgrad": [
        (lambda: tiny_cnn(), (3, 16, 16), {"samples": 5, "batch_size": 2}),
        (lambda: LinearModel(3, 8, 4), (3, 8, 8), {"samples": 4, "variant": "vargrad", "base": "inputxgrad", "reduce": "sum"}),
        (lambda: tiny_cnn(seed=1), (3, 12, 20), {"samples": 3, "base": "ig", "steps": 3, "variant": "smoothgrad_sq", "output": "probability"}),
    ],
    "inputxgrad": [
        (lambda: LinearModel(3, 8, 4), (3, 8, 8), {}),
        (lambda: tiny_cnn(), (3, 16, 16), {"reduce": "maxabs", "output": "log_probability"}),
    ],
    "guidedbp": [
        (lambda: tiny_cnn(), (3, 16, 16), {}),
        (lambda: region_model(), (3, 16, 16), {"reduce": "l2", "output": "probability"}),
    ],
    "guided-gradcam": [
        (lambda: tiny_cnn(), (3, 16, 16), {}),
        (lambda: region_model(), (3, 16, 16), {"layer": "features.2", "reduce": "sum"}),
    ],
}
