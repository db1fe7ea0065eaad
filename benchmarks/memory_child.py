"""Runs one explanation method in a fresh process and prints its peak resident memory as JSON.

Usage: memory_child.py '{"model": "vgg16", "size": 224, "method": "local", "params": {...}, "device": "cpu"}'
The peak resident set only grows, so the peak before the method (imports, model, input)
and after it are both printed; the method's own cost is at least their difference.
"""

from __future__ import annotations

import json
import sys
import time

import torch
from common import build_model, make_input, read_peak_rss_mb


def main(spec: dict) -> dict:
    device = torch.device(spec.get("device", "cpu"))
    model = build_model(spec["model"], device)
    x = make_input(spec["size"], device)
    from engine.methods.runner import explain

    before = read_peak_rss_mb()
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    if spec["method"] != "none":
        result = explain(model, x, spec["method"], target=None, params=spec.get("params") or {})
        extras = {k: v for k, v in result.extras.items() if k in ("batch_size_used", "windows", "forward_passes", "batch_size")}
    else:
        extras = {}
    elapsed = time.perf_counter() - start
    after = read_peak_rss_mb()
    out = {"peak_before_mb": before, "peak_after_mb": after, "method_mb": None if before is None or after is None else after - before, "elapsed_s": elapsed, "extras": extras}
    if cuda:
        out["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


if __name__ == "__main__":
    print(json.dumps(main(json.loads(sys.argv[1]))))
