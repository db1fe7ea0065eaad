"""Contract cases of the black-box perturbation methods: rise, extremal and kernelshap."""

from __future__ import annotations

from tests.models import LinearModel, rectangle_model, region_model, tiny_cnn

CASES_BY_METHOD = {
    "rise": [
        (lambda: tiny_cnn(), (3, 16, 16), {"masks": 40, "grid": 4, "batch_size": 8}),
        (lambda: LinearModel(3, 8, 4), (3, 8, 8), {"masks": 25, "grid": 3, "p": 0.3, "center": False, "output": "logit", "batch_size": 7}),
        (lambda: region_model(), (3, 16, 16), {"masks": 30, "grid": 5, "seed": 3, "output": "log_probability"}),
    ],
    "extremal": [
        (lambda: tiny_cnn(), (3, 16, 16), {"steps": 4, "step": 4, "blur_sigma": 2.0}),
        (lambda: rectangle_model(size=16, region=(4, 12, 4, 12)), (3, 16, 16), {"areas": "0.05,0.2", "steps": 3, "step": 3, "variant": "delete", "output": "probability"}),
    ],
    "kernelshap": [
        (lambda: LinearModel(3, 8, 4), (3, 8, 8), {"segmentation": "grid", "grid": 2, "baseline": "zero", "batch_size": 5}),
        (lambda: tiny_cnn(), (3, 16, 16), {"segmentation": "grid", "grid": 4, "samples": 30, "baseline": "mean", "batch_size": 8, "output": "probability"}),
        (lambda: tiny_cnn(), (3, 24, 24), {"n_segments": 10, "samples": 20, "blur_sigma": 2.0}),
    ],
}
