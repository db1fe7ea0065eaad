"""Loading models: torchvision architectures, weight files, the torch hub cache, TorchScript and
(only when the user trusts the file) whole pickled models."""

from __future__ import annotations

import difflib
import json
import os
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import torch
import torchvision
from torch import nn

from .errors import UserError
from .preprocess import Preprocess

WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")
_MAX_LISTED = 8


@lru_cache(maxsize=1)
def classification_models() -> tuple[str, ...]:
    """Every classification architecture torchvision provides, and Sensiscope's own, by name."""
    from .demo_models import OWN_ARCHITECTURES

    return tuple(torchvision.models.list_models(module=torchvision.models)) + tuple(OWN_ARCHITECTURES)


def adapt_input_channels(model: nn.Module, channels: int) -> nn.Module:
    """Replace the first convolution so the model takes ``channels`` input channels (e.g. 1 for
    grayscale ultrasound). Pretrained RGB filters, when present, are summed over their channels."""
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            if module.in_channels == channels:
                return model
            replacement = nn.Conv2d(channels, module.out_channels, module.kernel_size, module.stride, module.padding, module.dilation, module.groups, module.bias is not None, module.padding_mode)
            with torch.no_grad():
                summed = module.weight.sum(dim=1, keepdim=True)
                replacement.weight.copy_(summed.repeat(1, channels, 1, 1) / channels)
                if module.bias is not None:
                    replacement.bias.copy_(module.bias)
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, replacement)
            return model
    raise UserError("the model has no convolution whose input channels could be changed")


def _suggest(name: str, options) -> str:
    close = difflib.get_close_matches(name, list(options), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def build_architecture(name: str, num_classes: int | None = None, seed: int = 0, in_channels: int = 3) -> nn.Module:
    """A randomly initialised classifier (torchvision's or Sensiscope's own); the seed makes the
    initialisation repeatable; ``in_channels`` other than 3 replaces the first convolution."""
    from .demo_models import OWN_ARCHITECTURES

    if name in OWN_ARCHITECTURES:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return OWN_ARCHITECTURES[name](num_classes=num_classes or 3, in_channels=in_channels).eval()
    if name not in classification_models():
        raise UserError(f"unknown architecture '{name}'{_suggest(name, classification_models())}; `main.py info` lists them")
    kwargs = {"weights": None}
    if num_classes is not None:
        if num_classes < 1:
            raise UserError(f"num_classes must be positive, not {num_classes}")
        kwargs["num_classes"] = int(num_classes)
    if name in ("googlenet", "inception_v3"):
        kwargs["aux_logits"] = False  # the auxiliary heads only matter for training
        kwargs["init_weights"] = True
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torchvision.models.get_model(name, **kwargs)
        if in_channels != 3:
            adapt_input_channels(model, in_channels)
    return model.eval()


# ---------------------------------------------------------------------------- weight files


def _is_torchscript_archive(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def _unsafe_pickle_message(path: Path, exc: Exception) -> str:
    detail = str(exc).splitlines()
    hint = next((line.strip() for line in detail if "Unsupported global" in line or "GLOBAL" in line), "")
    reason = f" ({hint})" if hint else ""
    return (
        f"{path}: refused to load: the file contains Python objects, not only tensors{reason}. "
        "Unpickling it could run arbitrary code. If you made this file yourself or trust its author, "
        "pass --trust (GUI: confirm the warning); better, save a state dict or safetensors instead."
    )


def _torch_load_safely(path: Path):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a weights file") from None
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, zip errors ...
        text = str(exc)
        if "Weights only load failed" in text or "weights_only" in text:
            if "Unsupported global" in text or "GLOBAL" in text:
                raise UserError(_unsafe_pickle_message(path, exc)) from None
        first = text.splitlines()[0] if text else type(exc).__name__
        raise UserError(f"{path}: not a readable PyTorch file, it may be truncated or corrupt ({first})") from None


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


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a .pt/.pth state dict or checkpoint, never unpickling objects.

    The ``module.`` prefix that DataParallel and DistributedDataParallel add is removed.
    """
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
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
        state = _unwrap_checkpoint(_torch_load_safely(path), path)
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


def _head_classes(mismatch: StateMismatch) -> int | None:
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
        raise UserError(mismatch.message(source, target))
    model.load_state_dict(state, strict=True)


# ---------------------------------------------------------------------------- the hub cache


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


# ---------------------------------------------------------------------------- labels


def read_labels(path: str | Path) -> list[str]:
    """Class names from a text file (one a line) or JSON (a list, or a mapping of index to name)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such labels file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the labels ({exc})") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON ({exc})") from None
        if isinstance(data, dict):
            try:
                indexed = {int(k): str(v) for k, v in data.items()}
            except ValueError:
                raise UserError(f"{path}: a JSON labels mapping needs integer keys (class index to name)") from None
            if sorted(indexed) != list(range(len(indexed))):
                raise UserError(f"{path}: class indices must run from 0 to {len(indexed) - 1} without gaps")
            return [indexed[i] for i in range(len(indexed))]
        if isinstance(data, list) and all(isinstance(v, (str, int, float)) for v in data):
            return [str(v) for v in data]
        raise UserError(f"{path}: JSON labels must be a list of names or a mapping of index to name")
    labels = [line.strip() for line in text.splitlines() if line.strip()]
    if not labels:
        raise UserError(f"{path}: the labels file is empty")
    return labels


# ---------------------------------------------------------------------------- the loaded model


@dataclass
class LoadedModel:
    """A model ready to explain: the module in eval mode, its preprocessing and class names."""

    module: nn.Module
    spec: str
    source: str
    preprocess: Preprocess
    labels: list[str] | None = None
    num_classes: int | None = None
    notes: list[str] = field(default_factory=list)

    def label(self, index: int) -> str:
        if self.labels and 0 <= index < len(self.labels):
            return self.labels[index]
        return f"class {index}"

    def to_dict(self) -> dict:
        return {
            "spec": self.spec,
            "source": self.source,
            "num_classes": self.num_classes,
            "labels": len(self.labels) if self.labels else None,
            "preprocess": self.preprocess.to_dict(),
            "parameters": sum(p.numel() for p in self.module.parameters()),
        }


def _first_conv_channels(module: nn.Module) -> int | None:
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d):
            return sub.in_channels
        if isinstance(sub, nn.Linear):
            return None
    return None


def _output_classes(module: nn.Module) -> int | None:
    last = None
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            last = sub.out_features
    return last


def _sidecar(path: Path) -> dict:
    """Metadata written beside a weights file (same name, .json): architecture, labels, preprocessing."""
    candidate = path.with_suffix(".json")
    if not candidate.is_file():
        return {}
    try:
        data = json.loads(candidate.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{candidate}: metadata beside the weights is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise UserError(f"{candidate}: metadata must be a JSON object")
    return data


def _load_file_model(path: Path, trust: bool) -> tuple[nn.Module, str]:
    if _is_torchscript_archive(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream but still what users have
                return torch.jit.load(str(path), map_location="cpu").eval(), f"TorchScript {path.name}"
        except Exception as exc:  # torch.jit raises plain RuntimeError for most problems
            raise UserError(f"{path}: not a loadable TorchScript model ({str(exc).splitlines()[0]})") from None
    if path.suffix.lower() == ".safetensors":
        raise UserError(f"{path}: holds only weights; name the architecture too, e.g. --model resnet18 --weights {path}")
    if not trust:
        obj = _torch_load_safely(path)  # raises a clear refusal for a pickled model
        if isinstance(obj, nn.Module):
            return obj.eval(), f"model {path.name}"
        _unwrap_checkpoint(obj, path)
        raise UserError(f"{path}: holds only weights; name the architecture too, e.g. --model resnet18 --weights {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path}: the trusted model file could not be loaded ({first})") from None
    if not isinstance(obj, nn.Module):
        raise UserError(f"{path}: holds a {type(obj).__name__}, not a torch model")
    return obj.eval(), f"pickled model {path.name} (trusted)"


def load_model(
    spec: str,
    weights: str | None = None,
    labels: str | None = None,
    *,
    trust: bool = False,
    seed: int = 0,
    num_classes: int | None = None,
    preprocess: Preprocess | None = None,
    allow_download: bool = False,
) -> LoadedModel:
    """Load a model from a spec: an architecture name (``resnet18``), ``arch:WEIGHTS`` for torchvision
    weights in the hub cache, or a path to a TorchScript or (trusted) pickled model file.

    ``weights`` is a weights file, or the name of torchvision weights (``DEFAULT``, ``IMAGENET1K_V1``)
    that must already be in the hub cache unless ``allow_download`` is set.
    """
    spec = spec.strip()
    notes: list[str] = []
    label_names: list[str] | None = None
    chosen_preprocess: Preprocess | None = None
    if spec.startswith("demo:"):
        from .demos import demo_model_file

        if weights:
            raise UserError(f"{spec} brings its own weights; --weights cannot be combined with it")
        spec_path = demo_model_file(spec)
        loaded = load_model(str(spec_path), None, labels, trust=False, seed=seed, preprocess=preprocess)
        loaded.spec = spec
        loaded.source = f"demo model {spec} ({loaded.source})"
        return loaded
    architecture, _, weights_name = spec.partition(":")
    path = Path(spec).expanduser()
    meta = _sidecar(path) if path.is_file() and path.suffix.lower() in WEIGHT_SUFFIXES else {}
    if meta.get("arch"):
        # A weights file whose metadata names its architecture (what `train-images` writes).
        if weights:
            raise UserError(f"{path} already holds weights for {meta['arch']}; --weights cannot be combined with it")
        architecture, weights, weights_name = str(meta["arch"]), str(path), ""
        if architecture not in classification_models():
            raise UserError(f"{path.with_suffix('.json')}: unknown architecture '{architecture}'")
        module, source, label_names, chosen_preprocess = _load_architecture(architecture, weights, seed, num_classes, allow_download, notes)
    elif path.exists() and architecture not in classification_models():
        if path.is_dir():
            raise UserError(f"{path}: is a folder; give a model file or an architecture name")
        if weights:
            raise UserError("--weights goes with an architecture name; a model file already holds its weights")
        module, source = _load_file_model(path, trust)
        meta = _sidecar(path)
        if "labels" in meta or "classes" in meta:
            label_names = [str(v) for v in meta.get("labels") or meta.get("classes")]
        if isinstance(meta.get("preprocess"), dict):
            chosen_preprocess = Preprocess.from_dict(meta["preprocess"])
    elif architecture in classification_models():
        if weights_name and weights:
            raise UserError(f"give the weights either in the spec ('{spec}') or with --weights, not both")
        weights = weights or weights_name or None
        module, source, label_names, chosen_preprocess = _load_architecture(architecture, weights, seed, num_classes, allow_download, notes)
    elif looks_like_path(spec):
        raise UserError(f"{spec}: no such model file")
    else:
        raise UserError(f"unknown model '{spec}'{_suggest(architecture, classification_models())}: give a torchvision architecture name or a model file; `main.py info` lists the names")

    classes = _output_classes(module) if not isinstance(module, torch.jit.ScriptModule) else None
    if labels:
        label_names = read_labels(labels)
    if label_names is not None and classes is not None and len(label_names) != classes:
        raise UserError(f"{len(label_names)} class names were given but the model has {classes} outputs")
    if preprocess is None:
        preprocess = chosen_preprocess or Preprocess(channels=_first_conv_channels(module) or 3)
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return LoadedModel(module, spec, source, preprocess, label_names, classes or (len(label_names) if label_names else None), notes)


def looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or spec.lower().endswith(WEIGHT_SUFFIXES + (".ts", ".jit", ".pkl"))


def _load_architecture(architecture, weights, seed, num_classes, allow_download, notes):
    if not weights:
        module = build_architecture(architecture, num_classes, seed)
        return module, f"{architecture}, random initialisation (seed {seed})", None, None
    weights_path = Path(weights).expanduser()
    if weights_path.exists() or looks_like_path(weights):
        state = read_state_dict(weights_path)
        meta = _sidecar(weights_path)
        classes = num_classes or meta.get("num_classes")
        channels = int(meta.get("in_channels", 3))
        module = build_architecture(architecture, classes, seed, in_channels=channels)
        mismatch = compare_state(module, state)
        inferred = None if classes else _head_classes(mismatch)
        if inferred is not None:
            module = build_architecture(architecture, inferred, seed, in_channels=channels)
            notes.append(f"the weights have {inferred} output classes; the model was built to match")
        load_weights_into(module, state, weights_path.name, architecture)
        label_names = meta.get("labels") or meta.get("classes")
        pre = Preprocess.from_dict(meta["preprocess"]) if isinstance(meta.get("preprocess"), dict) else None
        return module, f"{architecture} with weights from {weights_path.name}", label_names, pre
    member = _resolve_weights_member(architecture, weights)
    file = cached_file(member)
    if not file.is_file():
        if not allow_download:
            raise UserError(
                f"{architecture} weights {member.name} are not in the local cache ({file}); "
                "Sensiscope never downloads unless asked: copy the file there, or pass --allow-download"
            )
        member.get_state_dict(progress=True, check_hash=True, weights_only=True)
    module = build_architecture(architecture, len(member.meta["categories"]), seed)
    load_weights_into(module, read_state_dict(file), file.name, architecture)
    pre = Preprocess.from_torchvision(member.transforms())
    return module, f"{architecture} with torchvision weights {member.name}", list(member.meta["categories"]), pre
