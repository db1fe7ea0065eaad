"""A model class from the user's own code: ``path/to/net.py:ClassName`` or ``package.module:ClassName``.

The file is code the user named on purpose, so importing it runs it, exactly as running their own
script would. Nothing here imports a file or module the user did not name. Weights come from a
state dict (read with ``weights_only=True``) or a safetensors file; constructor arguments from
``model_args`` (the CLI's ``--model-args``) or the sidecar beside the weights.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import re
import sys
import traceback
from pathlib import Path
from typing import Any

from torch import nn

from engine.core.errors import UserError
from engine.core.files import regular_file

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_MODULE_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def split_class_spec(spec: str) -> tuple[str, str] | None:
    """(file or module, class name) when ``spec`` names a model class, else None.

    ``net.py:Net``, ``C:/models/net.py:Net`` and ``mypackage.models:Net`` name a class;
    ``resnet18:IMAGENET1K_V1`` (an architecture and its weights) does not, because its right
    side is not a class name (classes start with a capital by convention, weights names too, so
    the test is the left side: a ``.py`` file or a dotted module path).
    """
    source, colon, name = spec.rpartition(":")
    if not colon or not source or not _IDENTIFIER.match(name):
        return None
    if source.lower().endswith(".py"):
        return source, name
    if "." in source and _MODULE_PATH.match(source) and not source.lower().endswith((".pt", ".pth", ".pt2", ".onnx", ".ts", ".jit", ".safetensors", ".pkl", ".bin", ".ckpt")):
        return source, name
    return None


def _user_traceback_line(exc: BaseException, path: str) -> str:
    """The line of the user's file where ``exc`` was raised, so the message points at their code."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == path]
    if not frames:
        return ""
    frame = frames[-1]
    return f" (line {frame.lineno}: {frame.line})" if frame.line else f" (line {frame.lineno})"


def _module_from_file(file: str) -> Any:
    path = regular_file(file, "Python file").resolve()
    if path.suffix.lower() != ".py":
        raise UserError(f"{path}: a model class comes from a .py file")
    # A name of its own per file (and content), so two files both called net.py never collide and a
    # changed file is imported afresh.
    digest = hashlib.sha1(str(path).encode() + path.read_bytes()).hexdigest()[:12]
    name = f"sensiscope_user_{re.sub(r'[^A-Za-z0-9_]', '_', path.stem)}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"{path}: cannot be imported as a Python module")
    module = importlib.util.module_from_spec(spec)
    # The file's folder on the path while it runs, so `from layers import Block` beside it works
    # as it does when the user runs their own script from there.
    folder = str(path.parent)
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    sys.modules[name] = module  # dataclasses and pickling look classes up by module name
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        sys.modules.pop(name, None)
        raise UserError(f"{path}: line {exc.lineno}: syntax error ({exc.msg})") from None
    except Exception as exc:
        sys.modules.pop(name, None)
        raise UserError(f"{path}: running the file failed with {type(exc).__name__}: {exc}{_user_traceback_line(exc, str(path))}") from None
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)
    return module


def _module_from_name(name: str) -> Any:
    try:
        found = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        found = None
    if found is None:
        raise UserError(f"no Python module '{name}' is installed; give a file instead, e.g. path/to/{name.rpartition('.')[2]}.py:ClassName")
    try:
        return importlib.import_module(name)
    except Exception as exc:
        raise UserError(f"importing {name} failed with {type(exc).__name__}: {exc}") from None


def classes_in_source(path: str | Path) -> list[str]:
    """The classes a Python file defines, read from its text (nothing is run)."""
    import ast

    try:
        tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return []
    return [node.name for node in tree.body if isinstance(node, ast.ClassDef)]


def count_argument(cls: type) -> str | None:
    """The constructor argument of ``cls`` that most likely sets its number of outputs."""
    try:
        names = list(inspect.signature(cls).parameters)
    except (TypeError, ValueError):
        return None
    for wanted in ("num_classes", "n_classes", "classes", "nclasses", "num_outputs", "n_outputs", "outputs", "out_features", "num_labels"):
        if wanted in names:
            return wanted
    return None


def model_classes(module: Any) -> list[str]:
    """The nn.Module subclasses a module defines itself (not those it imports)."""
    return sorted(
        name for name, value in vars(module).items() if inspect.isclass(value) and issubclass(value, nn.Module) and getattr(value, "__module__", None) == module.__name__
    )


def resolve_class(spec: str) -> tuple[type[nn.Module], str]:
    """The class a ``FILE.py:Class`` or ``module:Class`` spec names, and where it came from."""
    parts = split_class_spec(spec)
    if parts is None:
        raise UserError(f"'{spec}' does not name a model class; write path/to/net.py:ClassName or package.module:ClassName")
    source, name = parts
    module = _module_from_file(source) if source.lower().endswith(".py") else _module_from_name(source)
    where = Path(source).name if source.lower().endswith(".py") else source
    value = getattr(module, name, None)
    if value is None:
        classes = model_classes(module)
        listed = ", ".join(classes) if classes else "none"
        raise UserError(f"{where} defines no '{name}'; its model classes: {listed}")
    if not (inspect.isclass(value) and issubclass(value, nn.Module)):
        raise UserError(f"{where}:{name} is a {type(value).__name__}, not a torch.nn.Module class")
    return value, where


def _class_file(cls: type) -> str:
    try:
        return str(Path(inspect.getfile(cls)).resolve())
    except (TypeError, OSError):
        return ""


def build_user_model(spec: str, model_args: dict | None = None) -> tuple[nn.Module, str]:
    """The user's class, constructed with ``model_args``; a wrong argument gets one line naming the signature."""
    cls, where = resolve_class(spec)
    arguments = dict(model_args or {})
    try:
        signature = inspect.signature(cls)
    except (TypeError, ValueError):
        signature = None  # a signature Python cannot read: let the constructor speak
    if signature is not None:
        try:
            signature.bind(**arguments)
        except TypeError as exc:
            hint = "give constructor arguments with --model-args '{\"name\": value}' or in the sidecar's model_args"
            raise UserError(f"{where}:{cls.__name__} takes {signature} (defaults shown): {exc}; {hint}") from None
    try:
        module = cls(**arguments)
    except Exception as exc:
        call = f"{where}:{cls.__name__}({', '.join(f'{k}={v!r}' for k, v in arguments.items())})"
        raise UserError(f"{call} failed with {type(exc).__name__}: {exc}{_user_traceback_line(exc, _class_file(cls))}") from None
    if not isinstance(module, nn.Module):
        raise UserError(f"{where}:{cls.__name__} did not build a torch.nn.Module")
    shown = ", ".join(f"{k}={v!r}" for k, v in arguments.items())
    return module, f"{cls.__name__}({shown}) from {where}"
