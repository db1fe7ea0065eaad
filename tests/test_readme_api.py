"""The README's "Use from Python" example runs as printed and gives the known answers."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from engine.demo.phantom import phantom

ROOT = Path(__file__).resolve().parents[1]


def _example() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Use from Python", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_python_example_runs_and_ranks_ishigami_as_known(tmp_path):
    scan = phantom(1, 128, seed=0)  # index 1 is a benign lesion
    Image.fromarray((np.clip(scan.image, 0, 1) * 255).astype(np.uint8)).save(tmp_path / "scan.png")
    run = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r})\n" + _example()], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    label, probability, shape = re.fullmatch(r"(\w+) ([0-9.]+) (\(.*\))", lines[0]).groups()
    # The demo CNN recognises the benign phantom it was shown; maps come at the input's 128 x 128.
    assert label == "benign" and 0.5 < float(probability) <= 1
    assert shape == "(128, 128)"
    assert "spearman" in lines[1] and "'a': 'gradcam', 'b': 'local'" in lines[1]
    # Ishigami (a=7, b=0.1): total indices about 0.558, 0.442, 0.244, so the ranking is x1, x2, x3.
    assert lines[2].startswith("['x1', 'x2', 'x3']")
    totals = [float(v) for v in re.findall(r"[-0-9.]+(?:e-?\d+)?", lines[2].split("]", 1)[1])]
    np.testing.assert_allclose(totals, [0.558, 0.442, 0.244], atol=0.05)
