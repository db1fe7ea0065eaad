"""The engine must stay free of Qt so that it runs from the CLI, notebooks and workers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PROBE = """
import sys
import engine, engine.cli, engine.methods
engine.available_methods()
loaded = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'shiboken6', 'pyqtgraph', 'gui', 'PyQt5', 'PyQt6')]
print(','.join(loaded))
"""


def test_importing_the_engine_loads_no_qt_module():
    run = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == ""


def test_no_engine_source_imports_qt_or_gui():
    offenders = []
    for path in (ROOT / "engine").rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            words = line.strip().split()
            if len(words) >= 2 and words[0] in ("import", "from") and words[1].split(".")[0] in ("PySide6", "pyqtgraph", "gui"):
                offenders.append(f"{path.relative_to(ROOT)}:{number}")
    assert offenders == []
