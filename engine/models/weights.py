"""Weight files and the torch hub cache: state dicts and safetensors read without unpickling
objects, comparison of a state dict with a model, metadata written beside a weights file."""

from __future__ import annotations

import os
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from engine.core.errors import UntrustedFile, UserError, WeightsMismatch
from engine.core.files import regular_file
from engine.models.architectures import classification_models

_MAX_LISTED = 8


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _refused_object(exc: Exception) -> str:
    """The Python object a file names, where torch's weights-only unpickler refused one, in a few
    words of ours: torch's own advice (re-running ``torch.load`` with ``weights_only=False``,
    allow-listing globals) is never passed on, it bypasses the safety."""
    found = re.search(r"GLOBAL\s+([\w.<>]+)", str(exc))
    return f"it names the Python object {found.group(1)}" if found else ""


def _unsafe_pickle_message(path: Path, exc: Exception) -> str:
    reason = _refused_object(exc)
    return (
        f"{path}: refused to load: the file contains Python objects, not only tensors{f' ({reason})' if reason else ''}. "
        "Unpickling it could run arbitrary code. If you made this file yourself or trust its author, "
        "pass --trust (GUI: confirm the warning); better, save a state dict or safetensors instead."
    )


def _is_weights_only_refusal(exc: Exception) -> bool:
    text = str(exc)
    return ("Weights only load failed" in text or "WeightsUnpickler" in text) and bool(_refused_object(exc))


def _torch_load_safely(path: Path):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols: the refusal, if any, says it all
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a weights file") from None
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, zip errors ...
        if _is_weights_only_refusal(exc):
            raise UntrustedFile(path, _unsafe_pickle_message(path, exc)) from None
        raise UserError(f"{path}: not a readable PyTorch file, it may be truncated or corrupt ({torch_error_reason(exc)})") from None


def torch_error_reason(exc: Exception) -> str:
    """What went wrong in a ``torch.load``, in one phrase: the refused object or the first sentence
    of torch's error, never its advice (what to re-run with ``weights_only=False``, where to file issues)."""
    refused = _refused_object(exc)
    if refused:
        return refused
    text = str(exc)
    if isinstance(exc, EOFError):
        return "the file ends early"
    if isinstance(exc, KeyError) or len(text.strip()) < 8:  # the unpickler met a byte it has no meaning for
        return "not data that torch.save wrote"
    operation = re.search(r"Unsupported operand (\d+)", text)
    if operation:  # junk, or a pickle protocol the safe reader does not take
        return f"pickle operation {operation.group(1)} is not one a file of tensors uses"
    if "Weights only load failed" in text or "WeightsUnpickler" in text:
        inner = re.search(r"WeightsUnpickler error:\s*(.+)", text, re.DOTALL)
        lines = [line.strip() for line in (inner.group(1) if inner else "").splitlines() if line.strip() and "torch.load" not in line and "weights_only" not in line]
        return lines[0] if lines else "the pickled data cannot be read"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first.split(". ")[0] if len(first) > 120 else first


def _unwrap_checkpoint(obj, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("state_dict", "model_state_dict", "model"):
            inner = obj.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                return inner
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) == len(obj):
            return obj
    raise UserError(f"{path}: holds a {type(obj).__name__}, not a state dict (a mapping of names to tensors, or a checkpoint with 'state_dict' or 'model')")


def trusted_unpickle(path: Path):
    """The object in a pickled file the user explicitly trusts (the only full unpickling Sensiscope
    does); a failure is one line, with a hint when the file's own classes cannot be found here."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # any unpickling failure: the file's own classes may be missing here
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = " (run from the folder of the code that defines its classes, or save a state dict instead)" if "No module named" in text or "Can't get attribute" in text else ""
        raise UserError(f"{path}: the trusted file could not be unpickled: {text}{hint}") from None


def _trusted_state(path: Path) -> dict[str, torch.Tensor]:
    """A pickled checkpoint or whole model the user trusts: its tensors (a module's state dict)."""
    obj = trusted_unpickle(path)
    if isinstance(obj, nn.Module):
        return obj.state_dict()
    return _unwrap_checkpoint(obj, path)


def read_state_dict(path: str | Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a .pt/.pth state dict or checkpoint, never unpickling
    objects unless ``trust`` (then a pickled checkpoint or whole model gives its tensors).

    The ``module.`` prefix that DataParallel and DistributedDataParallel add is removed.
    """
    path = regular_file(path, "weights file")
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
            raise UserError(f"{path}: not a readable safetensors file, it may be truncated or corrupt ({exc})") from None
    else:
        if _is_torchscript_archive(path):
            raise UserError(f"{path}: is a TorchScript model, not a weights file; pass it as the model (--model {path})")
        try:
            state = _unwrap_checkpoint(_torch_load_safely(path), path)
        except UntrustedFile:
            if not trust:
                raise
            state = _trusted_state(path)
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def _fix_densenet_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # Old torchvision DenseNet checkpoints name layers 'norm.1' where the module is 'norm1'.
    pattern = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")
    fixed = {}
    for key, value in state.items():
        match = pattern.match(key)
        fixed[match.group(1) + match.group(2) if match else key] = value
    return fixed


@dataclass(frozen=True)
class StateMismatch:
    missing: list[str]
    unexpected: list[str]
    shapes: list[tuple[str, tuple, tuple]]  # key, expected, found

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.shapes)

    def message(self, source: str, target: str) -> str:
        def listing(items):
            more = f" and {len(items) - _MAX_LISTED} more" if len(items) > _MAX_LISTED else ""
            return ", ".join(items[:_MAX_LISTED]) + more

        parts = []
        if self.missing:
            parts.append(f"missing keys ({len(self.missing)}): {listing(self.missing)}")
        if self.unexpected:
            parts.append(f"unexpected keys ({len(self.unexpected)}): {listing(self.unexpected)}")
        if self.shapes:
            parts.append("shape conflicts (" + str(len(self.shapes)) + "): " + listing([f"{k} expects {tuple(e)} but the file has {tuple(f)}" for k, e, f in self.shapes]))
        return f"the weights in {source} do not fit {target}: " + "; ".join(parts)


def compare_state(model: nn.Module, state: dict[str, torch.Tensor]) -> StateMismatch:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [(k, tuple(expected[k].shape), tuple(state[k].shape)) for k in expected if k in state and expected[k].shape != state[k].shape]
    return StateMismatch(missing, unexpected, shapes)


def head_classes(mismatch: StateMismatch) -> int | None:
    """If the only conflicts are in the output layer's class count, that count; else None."""
    if mismatch.missing or mismatch.unexpected or not mismatch.shapes:
        return None
    counts = set()
    for _, expected, found in mismatch.shapes:
        if len(expected) != len(found) or tuple(expected[1:]) != tuple(found[1:]):
            return None
        counts.add(found[0])
    return counts.pop() if len(counts) == 1 else None


def load_weights_into(model: nn.Module, state: dict[str, torch.Tensor], source: str, target: str) -> None:
    """Copy a state dict into a model, or raise UserError naming every mismatch."""
    mismatch = compare_state(model, state)
    if not mismatch.ok and any("denselayer" in k for k in state):
        state = _fix_densenet_keys(state)
        mismatch = compare_state(model, state)
    if not mismatch.ok:
        raise WeightsMismatch(mismatch.message(source, target), mismatch.missing, mismatch.unexpected, mismatch.shapes)
    model.load_state_dict(state, strict=True)


@dataclass(frozen=True)
class CachedWeights:
    architecture: str
    weights: str  # enum member name, e.g. IMAGENET1K_V1
    path: Path

    @property
    def spec(self) -> str:
        return f"{self.architecture}:{self.weights}"


def hub_checkpoint_dir() -> Path:
    """Where torchvision keeps downloaded weights (TORCH_HOME/hub/checkpoints by default)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _weights_enum(architecture: str):
    try:
        return torchvision.models.get_model_weights(architecture)
    except (ValueError, KeyError):
        return None


def _resolve_weights_member(architecture: str, name: str):
    enum = _weights_enum(architecture)
    if enum is None:
        raise UserError(f"torchvision has no pretrained weights for '{architecture}'")
    members = {member.name: member for member in enum}
    if name.upper() == "DEFAULT":
        return enum.DEFAULT
    member = members.get(name) or members.get(name.upper())
    if member is None:
        raise UserError(f"'{architecture}' has no weights named '{name}'; known: DEFAULT, {', '.join(members)}")
    return member


def cached_file(member) -> Path:
    return hub_checkpoint_dir() / os.path.basename(member.url)


def find_cached_weights() -> list[CachedWeights]:
    """Torchvision ImageNet weights already in the local hub cache; nothing is downloaded."""
    folder = hub_checkpoint_dir()
    if not folder.is_dir():
        return []
    present = {p.name for p in folder.iterdir()}
    found = []
    for architecture in classification_models():
        enum = _weights_enum(architecture)
        for member in enum or ():
            name = os.path.basename(member.url)
            if name in present:
                found.append(CachedWeights(architecture, member.name, folder / name))
    return found


def _sidecar(path: Path) -> dict:
    """Metadata written beside a weights or model file (engine.models.sidecar), validated field by field."""
    from engine.models.sidecar import read_sidecar

    return read_sidecar(path)


def validate_metadata(data: dict, source: Path) -> dict:
    """Check the fields of a sidecar that the loader uses; return ``data`` (engine.models.sidecar)."""
    from engine.models.sidecar import validate_sidecar

    return validate_sidecar(data, source)
