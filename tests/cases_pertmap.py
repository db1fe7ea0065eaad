"""Contract cases for pertmap: (model factory, input shape C x H x W, parameters)."""

from __future__ import annotations

from tests.models import LinearModel, region_model, tiny_cnn

CASES = [
    (lambda: LinearModel(3, 8, 4), (3, 8, 8), {"steps": 6, "batch_size": 4, "record_every": 2}),
    (lambda: tiny_cnn(), (3, 16, 16), {"steps": 5, "batch_size": 3, "patch": 4, "optimizer": "rmsprop", "margin": "logit", "clip": True}),
    (lambda: region_model(), (3, 16, 16), {"steps": 4, "batch_size": 2, "optimizer": "sgd", "w_init": 0.1, "clip": True, "clip_range": "fixed"}),
]
