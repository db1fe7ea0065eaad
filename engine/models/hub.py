"""Models from timm and from Hugging Face folders, loaded offline.

* ``timm:NAME`` builds any timm architecture with random weights (seeded); ``timm:NAME:pretrained``
  (or ``timm:NAME.TAG:pretrained``) reads timm's pretrained file from the local Hugging Face or torch
  hub cache, and downloads it only when the caller allows. ``--weights FILE`` loads a state dict or
  safetensors into the architecture. Preprocessing comes from timm's data config of the model.
* ``hf:DIR`` loads a local image-classification folder (``config.json`` and safetensors) with
  ``AutoModelForImageClassification``, its image processor's preprocessing and its ``id2label``.

The Hugging Face hub is switched to offline mode while anything loads, so nothing is fetched unless
``allow_download`` is set.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import numbers
import os
from pathlib import Path

import torch
from torch import nn

from engine.core.errors import UntrustedFile, UserError
from engine.core.files import read_json_object
from engine.core.requests import MAX_SIDE
from engine.core.vocab import MAX_CLASSES
from engine.io.preprocess import Preprocess
from engine.models.weights import compare_state, head_classes, hub_checkpoint_dir, load_weights_into, read_state_dict, torch_error_reason

TIMM_PREFIX = "timm:"
HF_PREFIX = "hf:"
PRETRAINED = "pretrained"


@contextlib.contextmanager
def hub_offline(allow_download: bool = False):
    """HF_HUB_OFFLINE=1 while the block runs (unless downloads are allowed), in the environment and
    in huggingface_hub's constants, which it reads once at import."""
    if allow_download:
        yield
        return
    old_env = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants = None
    with contextlib.suppress(ImportError):
        from huggingface_hub import constants
    old_constant = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env
        if constants is not None:
            constants.HF_HUB_OFFLINE = old_constant


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def parse_timm_spec(spec: str) -> tuple[str, bool]:
    """``timm:NAME[.TAG][:pretrained]`` -> (NAME[.TAG], pretrained)."""
    body = spec[len(TIMM_PREFIX):].strip()
    name, _, option = body.partition(":")
    if option and option.lower() != PRETRAINED:
        raise UserError(f"'{spec}': after the timm model name only ':{PRETRAINED}' may follow, e.g. timm:resnet18:{PRETRAINED}")
    if not name:
        raise UserError(f"'{spec}': name a timm model, e.g. timm:vit_base_patch16_224")
    return name, bool(option)


def _check_timm_name(name: str) -> None:
    import timm

    if timm.is_model(name):
        return
    base = name.split(".", 1)[0]
    close = difflib.get_close_matches(base, timm.list_models(), n=3, cutoff=0.6)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise UserError(f"timm has no model '{name}'{hint}; timm.list_models() lists the names")


def _cached_pretrained_state(name: str) -> tuple[dict[str, torch.Tensor] | None, str]:
    """The pretrained weights of a timm model from the local caches (Hugging Face hub, then torch
    hub), read without unpickling objects; (None, where it was looked for) when absent."""
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    if cfg is None:
        raise UserError(f"timm has no pretrained weights for '{name}'")
    places = []
    if cfg.hf_hub_id:
        from huggingface_hub import try_to_load_from_cache

        files = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for filename in files:
            found = try_to_load_from_cache(cfg.hf_hub_id, filename)
            if isinstance(found, str) and os.path.isfile(found):
                return read_state_dict(Path(found)), f"the Hugging Face cache ({cfg.hf_hub_id})"
        places.append(f"Hugging Face hub cache, repository {cfg.hf_hub_id}")
    if cfg.url and not cfg.url.endswith(".npz"):
        file = hub_checkpoint_dir() / os.path.basename(cfg.url)
        if file.is_file():
            return read_state_dict(file), f"the torch hub cache ({file.name})"
        places.append(f"torch hub cache, {file}")
    return None, "; ".join(places) or "no source known"


def _timm_preprocess(model: nn.Module) -> Preprocess:
    from timm.data import resolve_model_data_config

    config = dict(resolve_model_data_config(model))
    embed = getattr(model, "patch_embed", None)
    img_size = getattr(embed, "img_size", None)
    if img_size and tuple(img_size) != tuple(config["input_size"][1:]) and not getattr(embed, "dynamic_img_size", False):
        config["input_size"] = (config["input_size"][0], *img_size)  # built for another size than its config says
    return Preprocess.from_timm(config)


def _imagenet_labels(model: nn.Module) -> list[str] | None:
    try:
        from timm.data import ImageNetInfo, infer_imagenet_subset

        subset = infer_imagenet_subset(model)
        return list(ImageNetInfo(subset).label_descriptions()) if subset else None
    except Exception:  # labels are a convenience; a timm without them leaves the model unnamed
        return None


def _create(name: str, seed: int, allow_download: bool = False, **kwargs) -> nn.Module:
    import timm

    with torch.random.fork_rng(devices=[]), hub_offline(allow_download):
        torch.manual_seed(seed)
        try:
            return timm.create_model(name, **kwargs).eval()
        except UserError:
            raise
        except Exception as exc:  # timm raises RuntimeError, ValueError, hub errors ...
            raise UserError(f"timm could not build '{name}' ({_first_line(exc)})") from None


def load_timm(spec: str, weights: str | None, seed: int, num_classes: int | None, allow_download: bool, notes: list[str]):
    """(module, source, labels, preprocess) for a ``timm:`` spec."""
    name, pretrained = parse_timm_spec(spec)
    _check_timm_name(name)
    if num_classes is not None and not 1 <= num_classes <= MAX_CLASSES:
        raise UserError(f"the number of classes must be from 1 to {MAX_CLASSES}, not {num_classes}")
    extra = {"num_classes": int(num_classes)} if num_classes else {}
    if pretrained and weights:
        raise UserError(f"give either ':{PRETRAINED}' in the spec or --weights, not both")
    if weights:
        path = Path(weights).expanduser()
        state = read_state_dict(path)
        module = _create(name, seed, **extra)
        inferred = None if num_classes else head_classes(compare_state(module, state))
        if inferred is not None:
            module = _create(name, seed, num_classes=inferred)
            notes.append(f"the weights have {inferred} output classes; the model was built to match")
        load_weights_into(module, state, path.name, f"timm model {name}")
        return module, f"timm {name} with weights from {path.name}", None, _timm_preprocess(module)
    if not pretrained:
        module = _create(name, seed, **extra)
        return module, f"timm {name}, random initialisation (seed {seed})", None, _timm_preprocess(module)
    state, where = _cached_pretrained_state(name)
    if state is not None:
        module = _create(name, seed, pretrained=True, pretrained_cfg_overlay={"state_dict": state}, **extra)
        source = f"timm {name} with pretrained weights from {where}"
    elif allow_download:
        module = _create(name, seed, allow_download=True, pretrained=True, **extra)
        source = f"timm {name} with pretrained weights (downloaded)"
    else:
        raise UserError(f"the pretrained weights of timm model {name} are not in the local cache ({where}); Sensiscope never downloads unless asked: pass --allow-download")
    labels = _imagenet_labels(module) if not num_classes else None
    return module, source, labels, _timm_preprocess(module)


def _hf_weights(folder: Path, trust: bool) -> bool:
    """True to load safetensors; False for a pickled pytorch_model.bin the user trusts."""
    if (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file():
        return True
    pickled = folder / "pytorch_model.bin"
    if pickled.is_file() or (folder / "pytorch_model.bin.index.json").is_file():
        if not trust:
            raise UntrustedFile(
                pickled,
                f"{pickled}: refused to load: Hugging Face .bin weights are pickles, and unpickling them could run arbitrary code. "
                "If you trust the folder's author pass --trust (GUI: confirm the warning); better, save it with safetensors",
            )
        return False
    raise UserError(f"{folder}: holds no model weights (model.safetensors); save the model with save_pretrained(safe_serialization=True)")


def _read_json(path: Path) -> dict:
    return read_json_object(path, "configuration file")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def _shown(value) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_model_config(path: Path, config: dict) -> None:
    """The fields of config.json that decide how large the model is built, checked before
    transformers builds it: a class count of a billion would allocate gigabytes for minutes."""
    for name in ("id2label", "label2id"):
        mapping = config.get(name)
        if mapping is None:
            continue
        if not isinstance(mapping, dict):
            raise UserError(f"{path}: field '{name}' must be an object of class indices and names, not {_shown(mapping)}")
        if len(mapping) > MAX_CLASSES:
            raise UserError(f"{path}: field '{name}' names {len(mapping):,} classes, more than the {MAX_CLASSES:,} a classifier may have")
    if "num_labels" in config:
        count = config["num_labels"]
        if not _is_int(count) or not 1 <= count <= MAX_CLASSES:
            raise UserError(f"{path}: field 'num_labels' must be a whole number of classes from 1 to {MAX_CLASSES:,}, not {_shown(count)}")
    if "num_channels" in config and config["num_channels"] not in (1, 3):
        raise UserError(f"{path}: field 'num_channels' must be 1 (grey-scale) or 3 (RGB), not {_shown(config['num_channels'])}")
    if "image_size" in config:
        size = config["image_size"]
        sides = size if isinstance(size, list) else [size]
        if not sides or len(sides) > 2 or not all(_is_int(v) and 1 <= v <= MAX_SIDE for v in sides):
            raise UserError(f"{path}: field 'image_size' must be a size in pixels from 1 to {MAX_SIDE} (or [height, width]), not {_shown(size)}")


def _check_size_field(path: Path, name: str, value) -> None:
    """``size`` or ``crop_size``: a number of pixels, or an object of shortest_edge, height, width."""
    if _is_int(value) and 1 <= value <= MAX_SIDE:
        return
    optional = ("shortest_edge", "longest_edge")  # null in some processors; height and width never
    if isinstance(value, dict) and value and all((v is None and k in optional) or (_is_int(v) and 1 <= v <= MAX_SIDE) for k, v in value.items()):
        unknown = sorted(set(value) - {"shortest_edge", "longest_edge", "height", "width"})
        if not unknown:
            return
        raise UserError(f"{path}: field '{name}' has an unknown key '{unknown[0]}' (known: shortest_edge, longest_edge, height, width)")
    raise UserError(f"{path}: field '{name}' must be a size in pixels from 1 to {MAX_SIDE}, or an object such as {{\"height\": 224, \"width\": 224}}; not {_shown(value)}")


def _processor_config(path: Path, channels: int) -> dict:
    """preprocessor_config.json, its fields checked one by one (the message names the field);
    a single mean or std number is made a list, as Hugging Face's processors accept both."""
    config = _read_json(path)
    for name in ("do_resize", "do_center_crop", "do_normalize", "do_rescale"):
        if name in config and not isinstance(config[name], bool):
            raise UserError(f"{path}: field '{name}' must be true or false, not {_shown(config[name])}")
    for name in ("size", "crop_size"):
        if config.get(name) is not None:
            _check_size_field(path, name, config[name])
    for name in ("image_mean", "image_std"):
        values = config.get(name)
        if values is None:
            continue
        values = [values] if _is_number(values) else values
        if not isinstance(values, list) or not 1 <= len(values) <= 4 or not all(_is_number(v) for v in values):
            raise UserError(f"{path}: field '{name}' must be a list of 1 to 4 finite numbers (one per channel), not {_shown(config[name])}")
        if name == "image_std" and any(v <= 0 for v in values):
            raise UserError(f"{path}: field 'image_std' must hold positive numbers, not {_shown(config[name])}")
        if 1 < len(values) < channels:
            raise UserError(f"{path}: field '{name}' has {len(values)} values but the model takes {channels} channels")
        config[name] = values
    if "resample" in config and config["resample"] is not None and not (_is_int(config["resample"]) and 0 <= config["resample"] <= 5):
        raise UserError(f"{path}: field 'resample' must be a PIL resampling code from 0 to 5, not {_shown(config['resample'])}")
    crop_pct = config.get("crop_pct")
    if crop_pct is not None and not (_is_number(crop_pct) and 0 < crop_pct <= 1):
        raise UserError(f"{path}: field 'crop_pct' must be a number in (0, 1], not {_shown(crop_pct)}")
    return config


def _hf_labels(config) -> list[str] | None:
    mapping = getattr(config, "id2label", None) or {}
    try:
        labels = [str(mapping[i]) for i in range(len(mapping))]
    except KeyError:
        return None
    if not labels or all(label == f"LABEL_{i}" for i, label in enumerate(labels)):
        return None  # transformers' placeholder names, not real classes
    return labels


def load_hf(spec: str, weights: str | None, trust: bool, notes: list[str]):
    """(module, source, labels, preprocess) for an ``hf:DIR`` spec."""
    if weights:
        raise UserError("--weights cannot be combined with hf:DIR; the folder holds its own weights")
    if not spec[len(HF_PREFIX):].strip():
        raise UserError(f"'{spec}': name the folder of a Hugging Face model, e.g. hf:path/to/vit-model")
    folder = Path(spec[len(HF_PREFIX):].strip()).expanduser()
    if not folder.is_dir():
        raise UserError(f"{folder}: no such folder; hf:DIR takes a folder saved with save_pretrained (config.json and model.safetensors)")
    if not (folder / "config.json").is_file():
        raise UserError(f"{folder}: has no config.json; it is not a Hugging Face model folder")
    _check_model_config(folder / "config.json", _read_json(folder / "config.json"))
    safe = _hf_weights(folder, trust)
    from transformers import AutoModelForImageClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    with hub_offline():
        try:
            module = AutoModelForImageClassification.from_pretrained(str(folder), local_files_only=True, use_safetensors=safe)
        except Exception as exc:  # transformers raises OSError, ValueError, KeyError for bad folders
            # torch's refusal to unpickle carries advice to bypass it; only what it refused is said
            reason = torch_error_reason(exc) if "weights_only" in str(exc) or "Weights only" in str(exc) else _first_line(exc)
            raise UserError(f"{folder}: not a loadable image-classification model ({reason})") from None
    module.eval()
    config = module.config
    channels = int(getattr(config, "num_channels", 3) or 3)
    image_size = getattr(config, "image_size", None)
    image_size = image_size[0] if isinstance(image_size, (list, tuple)) else image_size
    processor = folder / "preprocessor_config.json"
    if processor.is_file():
        preprocess = Preprocess.from_hf(_processor_config(processor, channels), image_size, channels)
    else:
        size = int(image_size or 224)
        preprocess = Preprocess(resize=size, crop=size, channels=channels)
        notes.append(f"{folder} has no preprocessor_config.json; ImageNet normalisation at {size} x {size} is assumed")
    kind = "safetensors" if safe else "trusted pickle"
    return module, f"Hugging Face {type(module).__name__} from {folder.name} ({kind})", _hf_labels(config), preprocess
