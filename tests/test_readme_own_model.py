"""The README's "Your own model" section runs as printed: a class from the user's file with its
state dict, on the command line and in Python, then the same network as a torch.export program
whose Grad-CAM on the named layer equals the original's."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.engine.test_own_model import write_net

ROOT = Path(__file__).resolve().parents[1]


def _blocks() -> list[tuple[str, str]]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Your own model", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```(bash|python)\n(.*?)```", section, re.S)


def _run_bash(block: str, cwd: Path) -> None:
    for command in block.replace("\\\n", " ").strip().splitlines():
        words = shlex.split(command)
        assert words[:2] == ["python", "main.py"], command
        run = subprocess.run([sys.executable, str(ROOT / "main.py"), *words[2:]], cwd=cwd, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, f"{command}\n{run.stderr}"


def _run_python(block: str, cwd: Path) -> str:
    run = subprocess.run([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); sys.path.insert(0, '.')\n" + block], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_the_readme_own_model_section_runs_as_printed(tmp_path):
    write_net(tmp_path)  # net.py with DigitNet, and net.pth
    Image.fromarray((np.random.default_rng(1).random((40, 40)) * 255).astype(np.uint8)).save(tmp_path / "digit.png")
    blocks = _blocks()
    assert [kind for kind, _ in blocks] == ["bash", "python", "python", "bash"]

    _run_bash(blocks[0][1], tmp_path)
    first = np.load(tmp_path / "maps" / "digit.gradcam.npy")
    assert first.shape == (32, 32) and (tmp_path / "net.json").is_file()

    assert _run_python(blocks[1][1], tmp_path).split() == ["1", "32", "(32,", "32)"]

    _run_python(blocks[2][1], tmp_path)
    assert (tmp_path / "net.pt2").is_file()
    _run_bash(blocks[3][1], tmp_path)
    exported = np.load(tmp_path / "maps-pt2" / "digit.gradcam.npy")
    assert np.corrcoef(first.ravel(), exported.ravel())[0, 1] >= 0.999
