"""The one resolver for model specs: architecture names, ``arch:WEIGHTS`` from the hub cache,
``demo:NAME``, ``timm:NAME``, ``hf:DIR``, ONNX and TorchScript files and (only when the user trusts
the file) whole pickled models."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from engine.core.errors import UserError, WeightsMismatch
from engine.core.files import regular_file
from engine.core.requests import ModelSpec, parse_model_args
from engine.core.vocab import MODEL_FILE_SUFFIXES, WEIGHT_SUFFIXES
from engine.demo.catalogue import demo_name
from engine.io.preprocess import IMAGENET_MEAN, IMAGENET_STD, LUMA, Preprocess
from engine.models.architectures import build_architecture, classification_models, suggest
from engine.models.demo import demo_model_file
from engine.models.hub import HF_PREFIX, TIMM_PREFIX, load_hf, load_timm
from engine.models.labels import read_labels
from engine.models.sidecar import preprocess_from
from engine.models.user_class import build_user_model, split_class_spec
from engine.models.weights import (
    _is_torchscript_archive,
    _resolve_weights_member,
    _sidecar,
    _torch_load_safely,
    _unwrap_checkpoint,
    cached_file,
    compare_state,
    head_classes,
    load_weights_into,
    read_state_dict,
    trusted_unpickle,
)


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


def _probe_outputs(module: nn.Module, preprocess: Preprocess) -> int | None:
    """The output count of a model whose layers cannot be read, from one forward pass on zeros."""
    size = preprocess.crop or preprocess.resize or 224
    try:
        with torch.inference_mode():
            output = module(torch.zeros(1, preprocess.channels, size, size))
    except Exception:  # a model that wants another input size or type: the count stays unknown
        return None
    output = getattr(output, "logits", output)
    return int(output.shape[-1]) if isinstance(output, torch.Tensor) and output.ndim == 2 else None


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _load_file_model(path: Path, trust: bool) -> tuple[nn.Module, str]:
    path = regular_file(path, "model file")
    if path.suffix.lower() == ".onnx":
        from engine.models.onnx_model import load_onnx

        module = load_onnx(path)
        return module, f"ONNX {path.name} (onnxruntime: {', '.join(module.providers)})"
    if path.suffix.lower() == ".pt2":
        from engine.models.exported import load_exported

        return load_exported(path, trust=trust)
    if _is_torchscript_archive(path):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream but still what users have
                return torch.jit.load(str(path), map_location="cpu").eval(), f"TorchScript {path.name}"
        except Exception as exc:  # torch.jit raises plain RuntimeError for most problems
            raise UserError(f"{path}: not a loadable TorchScript model ({_first_line(exc)})") from None
    if path.suffix.lower() == ".safetensors":
        raise UserError(f"{path}: holds only weights; name the architecture too, e.g. --model resnet18 --weights {path}")
    if not trust:
        obj = _torch_load_safely(path)  # raises a clear refusal for a pickled model
        if isinstance(obj, nn.Module):
            return obj.eval(), f"model {path.name}"
        _unwrap_checkpoint(obj, path)
        raise UserError(f"{path}: holds only weights; name the architecture too, e.g. --model resnet18 --weights {path}")
    obj = trusted_unpickle(path)
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
    model_args: dict | None = None,
) -> LoadedModel:
    """Load a model from a spec: an architecture name (``resnet18``), ``arch:WEIGHTS`` for torchvision
    weights in the hub cache, ``timm:NAME[:pretrained]``, ``hf:DIR`` (a Hugging Face folder), a
    model class from the user's code (``path/to/net.py:ClassName`` or ``package.module:ClassName``,
    built with ``model_args``; importing the file runs it, as running the user's script would), or a
    path to an ONNX, TorchScript, torch.export (.pt2) or (trusted) pickled model file.

    ``weights`` is a weights file, or the name of torchvision weights (``DEFAULT``, ``IMAGENET1K_V1``)
    that must already be in the hub cache unless ``allow_download`` is set.
    """
    spec = spec.strip()
    notes: list[str] = []
    if not spec:
        raise UserError("no model given: name an architecture (resnet18), a model file, path/to/net.py:ClassName, timm:NAME or hf:DIR")
    if model_args and split_class_spec(spec) is None:
        raise UserError("constructor arguments (--model-args) go with a model class, e.g. --model net.py:Net; this model is built without them")
    if demo_name(spec) is not None:
        if weights:
            raise UserError(f"{spec} brings its own weights; --weights cannot be combined with it")
        spec_path = demo_model_file(spec)
        loaded = load_model(str(spec_path), None, labels, trust=False, seed=seed, preprocess=preprocess)
        loaded.spec = spec
        loaded.source = f"demo model {spec} ({loaded.source})"
        return loaded
    if spec.startswith(TIMM_PREFIX):
        module, source, label_names, chosen = load_timm(spec, weights, seed, num_classes, allow_download, notes)
    elif spec.startswith(HF_PREFIX):
        module, source, label_names, chosen = load_hf(spec, weights, trust, notes)
    elif spec.partition(":")[0] not in classification_models() and split_class_spec(spec) is not None:
        module, source, label_names, chosen = _load_user_class(spec, weights, model_args, notes, trust)
    else:
        module, source, label_names, chosen = _resolve_spec(spec, weights, trust, seed, num_classes, allow_download, notes)
    # Models Sensiscope does not know (the user's class, a model file) say nothing of their input
    # size: find one they take, rather than fail on the first image.
    probe = not spec.startswith((TIMM_PREFIX, HF_PREFIX)) and spec.partition(":")[0] not in classification_models()
    return _finish(module, spec, source, label_names, chosen, labels, preprocess, notes, probe_size=probe)


def _resolve_spec(spec, weights, trust, seed, num_classes, allow_download, notes):
    """(module, source, labels, preprocess) for architecture names and model files."""
    label_names: list[str] | None = None
    chosen_preprocess: Preprocess | None = None
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
        return _load_architecture(architecture, weights, seed, num_classes, allow_download, notes, say_sidecar=False)
    if path.exists() and architecture not in classification_models():
        if path.is_dir():
            raise UserError(f"{path}: is a folder; give a model file, an architecture name, or hf:{spec} for a Hugging Face folder")
        if path.suffix.lower() == ".py":
            from engine.models.user_class import classes_in_source

            found = classes_in_source(path)
            example = found[0] if found else "ClassName"
            listed = f"; it defines {', '.join(found)}" if found else ""
            raise UserError(f"{path}: name the model class too, e.g. --model {spec}:{example} (the file is run to build it){listed}")
        if weights:
            raise UserError("--weights goes with an architecture name or a model class (net.py:Net); a model file already holds its weights")
        module, source = _load_file_model(path, trust)
        meta = _sidecar(path)
        if "labels" in meta or "classes" in meta:
            label_names = [str(v) for v in meta.get("labels") or meta.get("classes")]
        chosen_preprocess = preprocess_from(meta)
        if meta:
            notes.append(f"read {path.with_suffix('.json').name} beside the model (its labels and preprocessing)")
        if chosen_preprocess is None and hasattr(module, "preprocess") and callable(module.preprocess):
            chosen_preprocess = module.preprocess()  # an ONNX graph's or a .pt2 program's input size
        if chosen_preprocess is not None and not meta and path.suffix.lower() == ".pt2":
            pre = chosen_preprocess
            size = f"{pre.crop} x {pre.crop} px" if pre.crop else "their own size"
            notes.append(
                f"preprocessing from the model's input: {pre.channels} channel(s) at {size}, normalised with ImageNet's mean and std "
                f"({','.join(f'{m:g}' for m in pre.mean)} / {','.join(f'{v:g}' for v in pre.std)}); give --mean/--std or a sidecar if it was trained otherwise"
            )
        return module, source, label_names, chosen_preprocess
    if architecture in classification_models():
        if weights_name and weights:
            raise UserError(f"give the weights either in the spec ('{spec}') or with --weights, not both")
        weights = weights or weights_name or None
        return _load_architecture(architecture, weights, seed, num_classes, allow_download, notes, trust)
    if looks_like_path(spec):
        raise UserError(f"{spec}: no such model file")
    raise UserError(
        f"unknown model '{spec}'{suggest(architecture, classification_models())}: give a torchvision architecture name, timm:NAME, hf:DIR "
        "or a model file; `main.py info` lists the names"
    )


def _load_user_class(spec, weights, model_args, notes, trust=False):
    """(module, source, labels, preprocess) for ``FILE.py:Class`` and ``module:Class`` specs."""
    meta: dict = {}
    weights_path = Path(weights).expanduser() if weights else None
    if weights_path is not None:
        regular_file(weights_path, "weights file")
        meta = _sidecar(weights_path)
        if meta:
            notes.append(f"read {weights_path.with_suffix('.json').name} beside the weights (constructor arguments, labels, preprocessing)")
    arguments = model_args if model_args else parse_model_args(meta.get("model_args"), f"{weights_path.with_suffix('.json') if weights_path else 'sidecar'}: model_args")
    module, source = build_user_model(spec, arguments)
    if weights_path is None:
        notes.append(f"{source} has random weights (no --weights given): its explanations show an untrained network")
        source = f"{source}, random initialisation"
    else:
        state = read_state_dict(weights_path, trust)
        try:
            load_weights_into(module, state, weights_path.name, source.partition(" from ")[0])
        except WeightsMismatch as exc:
            from engine.models.user_class import count_argument, resolve_class

            classes = head_classes(compare_state(module, state))
            argument = count_argument(resolve_class(spec)[0])
            if classes is not None and argument:
                hint = f"; the file has {classes} outputs: give them, e.g. --model-args '{{\"{argument}\": {classes}}}'"
            elif not arguments:
                hint = "; the class was built with its default arguments: give the ones it was trained with in --model-args (or the sidecar's model_args)"
            else:
                source_of = "--model-args" if model_args else "the sidecar's model_args"
                hint = f"; the class was built with {arguments} from {source_of}"
            raise WeightsMismatch(f"{exc}{hint}", exc.missing, exc.unexpected, exc.shapes) from None
        source = f"{source} with weights from {weights_path.name}"
    label_names = meta.get("labels") or meta.get("classes")
    pre = preprocess_from(meta)
    return module, source, label_names, pre


# Sizes tried, in order, on a model whose input size nothing states (the usual crops and the
# small sizes of digit and toy networks).
PROBE_SIZES = (224, 32, 28, 64, 96, 128, 256, 299, 384, 512)


def _takes(module: nn.Module, channels: int, size: int) -> bool:
    try:
        with torch.inference_mode():
            module(torch.zeros(1, channels, size, size))
    except Exception:  # any failure means "not this size"; the cause is reported when none fits
        return False
    return True


def default_preprocess(module: nn.Module, notes: list[str], probe_size: bool = False) -> Preprocess:
    """Preprocessing for a model that states none: its first convolution's channels, ImageNet's
    normalisation (its luma for one channel) and, when asked, an input size it takes."""
    channels = _first_conv_channels(module) or 3
    if channels == 3:
        pre = Preprocess()
    else:
        luma_mean = sum(w * m for w, m in zip(LUMA, IMAGENET_MEAN, strict=True))
        luma_std = sum(w * s for w, s in zip(LUMA, IMAGENET_STD, strict=True))
        pre = Preprocess(channels=1, mean=(round(luma_mean, 4),), std=(round(luma_std, 4),))
    if not probe_size or not getattr(module, "has_gradients", True):
        return pre
    was_training = module.training
    module.eval()
    try:
        size = next((s for s in PROBE_SIZES if _takes(module, channels, s)), None)
    finally:
        module.train(was_training)
    if size is None:
        notes.append(f"the model took none of the usual input sizes ({channels} channel(s), {', '.join(map(str, PROBE_SIZES))} px); set --resize and --crop to the size it was trained on")
        return pre
    if size != pre.crop:
        pre = Preprocess(resize=size, crop=size, mean=pre.mean, std=pre.std, channels=channels)
    notes.append(
        f"no preprocessing is stated for this model: images become {channels} channel(s) at {size} x {size} px, normalised with mean "
        f"{','.join(f'{m:g}' for m in pre.mean)} and std {','.join(f'{v:g}' for v in pre.std)}; "
        "give --resize/--crop/--mean/--std or a sidecar JSON (info --write-sidecar) if the model was trained otherwise"
    )
    return pre


def _finish(module, spec, source, label_names, chosen_preprocess, labels, preprocess, notes, probe_size: bool = False) -> LoadedModel:
    """Labels, preprocessing and class count checked together; the module frozen in eval mode."""
    classes = _output_classes(module) if not isinstance(module, torch.jit.ScriptModule) else None
    classes = getattr(module, "num_classes", None) if not getattr(module, "has_gradients", True) else classes
    if classes is None and isinstance(getattr(module, "num_classes", None), int):
        classes = module.num_classes  # a torch.export program states its output count
    if labels:
        label_names = read_labels(labels)
    if preprocess is None:
        preprocess = chosen_preprocess or default_preprocess(module, notes, probe_size)
    if label_names is not None and classes is None:
        classes = _probe_outputs(module, preprocess)  # TorchScript hides its layers: ask the model itself
    if label_names is not None and classes is not None and len(label_names) != classes:
        raise UserError(f"{len(label_names)} class names were given but the model has {classes} outputs")
    module.eval()
    for parameter in module.parameters():
        parameter.requires_grad_(False)
    return LoadedModel(module, spec, source, preprocess, label_names, classes or (len(label_names) if label_names else None), notes)


def looks_like_path(spec: str) -> bool:
    return os.sep in spec or "/" in spec or spec.lower().endswith(MODEL_FILE_SUFFIXES)


def _load_architecture(architecture, weights, seed, num_classes, allow_download, notes, trust=False, say_sidecar=True):
    if not weights:
        module = build_architecture(architecture, num_classes, seed)
        return module, f"{architecture}, random initialisation (seed {seed})", None, None
    weights_path = Path(weights).expanduser()
    if weights_path.exists() or looks_like_path(weights):
        state = read_state_dict(weights_path, trust)
        meta = _sidecar(weights_path)
        if meta and say_sidecar:
            notes.append(f"read {weights_path.with_suffix('.json').name} beside the weights (classes, labels, preprocessing)")
        classes = num_classes or meta.get("num_classes")
        channels = int(meta.get("in_channels", 3))
        module = build_architecture(architecture, classes, seed, in_channels=channels)
        mismatch = compare_state(module, state)
        inferred = None if classes else head_classes(mismatch)
        if inferred is not None:
            module = build_architecture(architecture, inferred, seed, in_channels=channels)
            notes.append(f"the weights have {inferred} output classes; the model was built to match")
        load_weights_into(module, state, weights_path.name, architecture)
        label_names = meta.get("labels") or meta.get("classes")
        pre = preprocess_from(meta)
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


def load_spec(spec: ModelSpec, *, check_size: bool = True) -> LoadedModel:
    """Load the model a :class:`ModelSpec` names, with the user's preprocessing changes applied
    and (``check_size``) checked against the model: an input size or channel count it cannot take
    is refused here in one line, before any file is written or any image read."""
    loaded = load_model(
        spec.spec, spec.weights, spec.labels, trust=spec.trust, seed=spec.seed, num_classes=spec.num_classes,
        allow_download=spec.allow_download, model_args=spec.model_args or None,
    )
    if spec.preprocess.given:
        loaded.preprocess = Preprocess.from_dict(spec.preprocess.apply(loaded.preprocess.to_dict()))
        loaded.notes = [n for n in loaded.notes if not n.startswith("no preprocessing is stated")]
        if check_size:
            check_input_fits(loaded)
    return loaded


def check_input_fits(loaded: LoadedModel) -> None:
    """One forward pass on zeros of the preprocessed size; a failure names --resize/--crop/--channels."""
    module = loaded.module
    pre = loaded.preprocess
    if not getattr(module, "has_gradients", True) and hasattr(module, "preprocess"):
        return  # ONNX graphs state their input; onnxruntime checks it with its own message
    size = pre.crop or pre.resize
    if size is None:
        return  # images keep their own size: nothing to check before one is read
    try:
        device = next(iter(module.parameters())).device
    except StopIteration:
        device = torch.device("cpu")
    try:
        with torch.inference_mode():
            module(torch.zeros(1, pre.channels, size, size, device=device))
    except Exception as exc:
        raise UserError(
            f"the model does not take {pre.channels}-channel {size} x {size} inputs ({_first_line(exc)[:160]}); "
            "set --resize/--crop to the size it was trained on and --channels to its input channels"
        ) from None
