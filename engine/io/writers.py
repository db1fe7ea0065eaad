"""Writing an explanation to disk: the raw map (.npy), a picture (.png) and its record (.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from engine.core.explanation import Explanation
from engine.core.files import atomic_path, check_output, write_text
from engine.core.jsonable import dumps
from engine.core.versions import versions
from engine.io.images import InputItem
from engine.io.preprocess import Preprocess
from engine.io.render import save_overlay


class DescribedModel(Protocol):
    """What a result record needs from a loaded model (engine.models.loading.LoadedModel)."""

    source: str
    preprocess: Preprocess

    def label(self, index: int) -> str: ...


# File names longer than this (in UTF-8 bytes, before a suffix such as ".optimised12.png") are
# shortened: most file systems allow 255 bytes, and a 245-character image name plus
# ".gradcam.json" would not fit.
MAX_NAME_BYTES = 200


def short_name(name: str, limit: int = MAX_NAME_BYTES) -> str:
    """``name`` itself when it fits in ``limit`` bytes, else its start and a hash of the whole name
    (so two long names that share a start stay apart, and the same name always maps the same way)."""
    encoded = name.encode("utf-8")
    if len(encoded) <= limit:
        return name
    import hashlib

    digest = hashlib.sha1(encoded).hexdigest()[:12]
    start = encoded[: limit - len(digest) - 1].decode("utf-8", errors="ignore")
    return f"{start}~{digest}"


def _base(out_dir: Path, item: InputItem, name: str) -> Path:
    stem = item.output_stem
    return out_dir / stem.parent / short_name(f"{stem.name}.{name}")


def result_files(out_dir: str | Path, item: InputItem, method: str) -> dict[str, str]:
    """The .npy, .png and .json paths of one (input, method) result."""
    base = _base(Path(out_dir), item, method)
    return {suffix: f"{base}.{suffix}" for suffix in ("npy", "png", "json")}


def check_result_files(out_dir: str | Path, item: InputItem, method: str, overwrite: bool = False) -> None:
    """Refuse, before any work, results that would replace files Sensiscope did not write."""
    for path in result_files(out_dir, item, method).values():
        check_output(path, overwrite)


def write_comparison(comparisons: list[dict], out_dir: str | Path, item: InputItem, context: dict | None = None, overwrite: bool = False) -> str:
    """Write DIR/<stem>.compare.json with the pairwise agreement of an input's maps; return its path."""
    path = Path(str(_base(Path(out_dir), item, "compare")) + ".json")
    write_text(path, dumps({"pairs": comparisons, **(context or {})}), overwrite)
    return str(path)


def write_result(
    result: Explanation,
    display: np.ndarray,
    out_dir: str | Path,
    item: InputItem,
    loaded: DescribedModel | None = None,
    context: dict | None = None,
    overwrite: bool = False,
) -> dict:
    """Write DIR/<stem>.<method>.{npy,png,json}, mirroring sub-folders of a folder input; return the record.

    Each file is written atomically; a file Sensiscope did not write is replaced only with ``overwrite``.
    """
    files = result_files(out_dir, item, result.method)
    for path in files.values():  # all three are checked before the first is written
        check_output(path, overwrite)
    with atomic_path(files["npy"], overwrite) as temporary, temporary.open("wb") as handle:
        np.save(handle, result.map.astype(np.float32))
    with atomic_path(files["png"], overwrite) as temporary:
        save_overlay(temporary, display, result.map)
    record = result.summary()
    label = loaded.label if loaded else (lambda i: f"class {i}")
    record.update(
        {
            "target_label": label(result.target),
            "predicted_label": label(result.predicted),
            "label": item.label,
            "mask": str(item.mask) if item.mask else None,
            "files": files,
            "versions": versions(),
            "extras": _scalar_extras(result.extras),
        }
    )
    if item.frame is not None or item.meta:  # a frame of a multi-frame file, and what a DICOM file said about it
        record.update(frame=item.frame, input_meta=item.meta)
    if loaded is not None:
        record["model_source"] = loaded.source
        # A .npy tensor is used as it is (engine.io.images.load_input): no preprocessing to report.
        record["preprocess"] = "none: a preprocessed tensor, used unchanged" if item.is_tensor else loaded.preprocess.to_dict()
    record.update(context or {})
    write_text(files["json"], dumps(record), overwrite)
    return record


def _scalar_extras(extras: dict) -> dict:
    """The extras a JSON file can hold as they are: numbers, strings, booleans and lists of strings
    (a method's notes, the engine it ran, its passes); arrays stay in the .npy and the session."""
    kept = {}
    for name, value in (extras or {}).items():
        if isinstance(value, (bool, int, float, str)) or value is None:
            kept[name] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            kept[name] = list(value)
    return kept


def write_figure(path: str | Path, panels: list[dict], records: list[dict], dpi: int = 200, title: str = "", overwrite: bool = False) -> list[str]:
    """A figure of maps (engine.io.render.save_figure) and, beside it, a JSON of each map's parameters
    (``records``: method, parameters, model, input, ...; with the versions). Both files are written
    atomically and neither replaces a file Sensiscope did not write; returns their paths."""
    from engine.io.render import save_figure

    path = Path(path)
    sidecar = path.with_suffix(".json")
    for target in (path, sidecar):
        check_output(target, overwrite)
    with atomic_path(path, overwrite) as temporary:
        save_figure(temporary, panels, dpi=dpi, title=title)
    write_text(sidecar, dumps({"figure": path.name, "dpi": dpi, "title": title, "maps": records, "versions": versions()}), overwrite)
    return [str(path), str(sidecar)]


def _channel_values(text: str, channels: int, fallback: tuple[float, ...]) -> np.ndarray:
    values = [float(v) for v in str(text or "").replace(" ", "").split(",") if v] or list(fallback)
    values = values * channels if len(values) == 1 else values
    return np.asarray(values[:channels], dtype=np.float32).reshape(channels, 1, 1)


def write_optimised_images(result: Explanation, out_dir: str | Path, item: InputItem, overwrite: bool = False) -> list[str]:
    """Activation maximisation's optimised images beside its map: per target k,
    ``<stem>.actmax.optimised<k>.npy`` in model-input space (C x H x W, normalised with the run's mean and
    std, ready to feed the model) and ``.png`` as seen (display space, [0, 1]). Nothing for other methods."""
    images = result.extras.get("images")
    if images is None:
        return []
    images = np.asarray(images, dtype=np.float32)  # N x H x W x C in [0, 1]
    channels = images.shape[-1]
    gray = channels == 1
    mean = _channel_values(getattr(result.params, "mean", ""), channels, (0.449,) if gray else (0.485, 0.456, 0.406))
    std = _channel_values(getattr(result.params, "std", ""), channels, (0.226,) if gray else (0.229, 0.224, 0.225))
    targets = list(result.extras.get("targets") or range(len(images)))
    base = str(_base(Path(out_dir), item, result.method))
    files = []
    for index, image in enumerate(images):
        unit = targets[index] if index < len(targets) else index
        stem = f"{base}.optimised{unit}"
        model_input = (image.transpose(2, 0, 1) - mean) / std
        with atomic_path(f"{stem}.npy", overwrite) as temporary, temporary.open("wb") as handle:
            np.save(handle, model_input.astype(np.float32), allow_pickle=False)
        picture = (np.clip(image[..., 0] if gray else image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
        from PIL import Image

        with atomic_path(f"{stem}.png", overwrite) as temporary:
            Image.fromarray(picture).save(temporary, format="PNG")
        files += [f"{stem}.npy", f"{stem}.png"]
    return files
