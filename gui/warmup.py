"""Importing torch on a worker thread without freezing the main thread.

Jobs import the engine on a worker so that the window appears at once, but all Python threads
share one interpreter lock, and importing torch holds it for long stretches:

* the dynamic loader maps and initialises torch's C++ libraries (and the CUDA libraries torch
  loads by path) inside ``dlopen`` calls, and CPython keeps the lock around them: 0.1 to 0.5 s each
  for ``torch._C`` and ``libcublasLt`` on a server CPU;
* the cyclic garbage collector runs full passes over the hundreds of thousands of objects that
  the import creates, 50 to 150 ms each, also under the lock.

Meanwhile the main thread cannot run one line of Python (pyqtgraph's painting, every slot), so the
window froze for a third of a second or more during the first job. :func:`import_heavy_dependencies`
imports torch, torchvision and matplotlib once, on the worker, with three changes for the duration:

* before an extension module is imported, its file is loaded through libc's ``dlopen`` called via
  ctypes, which releases the lock; the import proper then finds it loaded and only runs the
  module's initialisation (for torch._C still about 45 ms under the lock: pybind11 registrations);
* ``ctypes.CDLL`` (with which torch loads its global and CUDA dependencies) opens libraries the
  same lock-free way;
* the collector is paused, and what the import created (modules, classes, functions, which live as
  long as the process) is frozen afterwards so that later passes skip it.

Each library is loaded at the moment the import would load it, with the same flags, so the same
files load in the same order (torch's CUDA preloading by path keeps working); only the lock is
released. Anything unexpected falls back to the regular import.
"""

from __future__ import annotations

import ctypes
import gc
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

log = logging.getLogger(__name__)

# The largest imports of the app's jobs (torch, torchvision) and of its views: the map views' colour
# maps come from matplotlib (gui/colours.py), imported here so that the main thread finds it loaded.
HEAVY_MODULES = ("torch", "torchvision", "matplotlib")

_lock = threading.Lock()
_imported = False


def _libc_dlopen() -> Callable | None:
    """libc's dlopen as a ctypes foreign function (ctypes releases the lock around those); None off Linux.

    Only Linux, where it was measured: elsewhere the collector pause alone applies, the safe half.
    """
    if not sys.platform.startswith("linux"):
        return None
    for library in (None, "libdl.so.2"):  # glibc < 2.34 keeps dlopen in libdl
        try:
            function = ctypes.CDLL(library).dlopen
        except (OSError, AttributeError):
            continue
        function.restype = ctypes.c_void_p
        function.argtypes = (ctypes.c_char_p, ctypes.c_int)
        return function
    return None


class _PreloadExtensions(importlib.abc.MetaPathFinder):
    """Before an extension module is imported, loads its shared library with the lock released.

    Finds nothing itself (returns None), so the regular finders and loaders do the import as usual.
    """

    def __init__(self, dlopen: Callable) -> None:
        self.dlopen = dlopen

    def find_spec(self, fullname: str, path: Sequence[str] | None, target=None) -> None:
        try:
            spec = importlib.machinery.PathFinder.find_spec(fullname, path)
            if spec is not None and isinstance(spec.loader, importlib.machinery.ExtensionFileLoader) and spec.origin:
                self.dlopen(os.fsencode(spec.origin), sys.getdlopenflags())
        except Exception:  # an optimisation only: the regular import still runs and reports
            log.debug("cannot preload %s", fullname, exc_info=True)
        return None


@contextmanager
def _unlocked_loading() -> Iterator[None]:
    dlopen = _libc_dlopen()
    if dlopen is None:
        yield
        return
    finder = _PreloadExtensions(dlopen)
    regular = getattr(ctypes, "_dlopen", None)

    def ctypes_dlopen(name, mode=ctypes.DEFAULT_MODE):
        # ctypes's own dlopen always adds RTLD_NOW; on failure it is called for its error message.
        handle = dlopen(None if name is None else os.fsencode(name), mode | os.RTLD_NOW)
        return handle if handle else regular(name, mode)

    sys.meta_path.insert(0, finder)
    if regular is not None:
        ctypes._dlopen = ctypes_dlopen
    try:
        yield
    finally:
        if regular is not None:
            ctypes._dlopen = regular
        sys.meta_path.remove(finder)


@contextmanager
def _collector_paused() -> Iterator[None]:
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if collecting:
            gc.enable()


def import_heavy_dependencies(modules: Sequence[str] = HEAVY_MODULES) -> None:
    """Import HEAVY_MODULES once per process, holding the interpreter lock as little as possible.

    Call it on a worker thread. It never raises: a module that fails to import fails again, with
    its own message, in the job that needs it.
    """
    global _imported
    with _lock:
        if _imported:
            return
        _imported = True
        missing = [name for name in modules if name not in sys.modules and importlib.util.find_spec(name) is not None]
        if not missing:
            return
        try:
            with _collector_paused(), _unlocked_loading():
                for name in missing:
                    importlib.import_module(name)
        except Exception:
            log.debug("importing %s ahead of the first job failed", missing, exc_info=True)
