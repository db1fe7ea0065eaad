"""The first job's import of torch: libraries loaded with the interpreter lock released, the collector paused."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy

from gui.warmup import _PreloadExtensions

ROOT = Path(__file__).resolve().parents[2]


def test_an_extension_module_is_loaded_before_its_import_and_nothing_else_is():
    opened = []
    finder = _PreloadExtensions(lambda path, flags: opened.append((os.fsdecode(path), flags)) or 1)
    assert finder.find_spec("numpy._core._multiarray_umath", numpy._core.__path__) is None  # the regular import does the rest
    assert finder.find_spec("numpy._core.numeric", numpy._core.__path__) is None
    assert finder.find_spec("no_such_module_anywhere", None) is None
    assert [Path(path).name.split(".")[0] for path, _flags in opened] == ["_multiarray_umath"]
    assert opened[0][1] == sys.getdlopenflags()  # as the import itself would open it


def test_the_heavy_imports_happen_once_and_leave_the_interpreter_as_it_was():
    code = textwrap.dedent(
        """
        import ctypes, gc, sys, threading
        from gui import warmup
        regular_dlopen, finders = ctypes._dlopen, list(sys.meta_path)
        worker = threading.Thread(target=warmup.import_heavy_dependencies)
        worker.start()
        worker.join()
        assert {"torch", "torchvision", "matplotlib"} <= set(sys.modules)
        assert ctypes._dlopen is regular_dlopen and sys.meta_path == finders and gc.isenabled()
        assert gc.get_freeze_count() > 0  # what the import made is skipped by later collections
        import torch
        assert torch.ones(3).sum().item() == 3.0
        warmup.import_heavy_dependencies(("no_such_module_anywhere",))  # once per process: a no-op, never an error
        """
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr
