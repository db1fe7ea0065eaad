"""A headless check that the installation works: imports, devices, and a known-answer explanation."""

from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn


def self_check() -> int:
    """Explain a linear model whose saliency is known exactly; print what was checked; 0 when all is well."""
    from engine.app.explain import explain
    from engine.app.system import list_devices, select_device
    from engine.core.versions import versions

    report = []
    try:
        report.append("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
        report.append("devices: " + "; ".join(d.label() for d in list_devices()))
        device = select_device("auto")
        generator = torch.Generator().manual_seed(0)
        model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 4))
        with torch.no_grad():
            model[1].weight.copy_(torch.randn(4, 3 * 8 * 8, generator=generator))
        image = torch.rand(3, 8, 8, generator=generator)
        result = explain(model, image, "saliency", target=2, params={"reduce": "sum"}, device=device)
        expected = model[1].weight[2].detach().cpu().view(3, 8, 8).sum(0).numpy()
        error = float(np.abs(result.map - expected).max())
        report.append(f"saliency on {device}: max error {error:.2e} against the analytic gradient")
        if error > 1e-4:
            raise AssertionError(f"saliency differs from the analytic answer by {error}")
    except Exception as exc:  # the self-check reports any failure instead of crashing the installer
        print("\n".join(report), file=sys.stderr)
        print(f"self-check FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print("\n".join(report))
    print("self-check passed")
    return 0
