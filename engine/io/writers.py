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


def _base(out_dir: Path, item: InputItem, name: str) -> Path:
    stem = item.output_stem
    return out_dir / stem.parent / f"{stem.name}.{name}"


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
        }
    )
    if loaded is not None:
        record["model_source"] = loaded.source
        record["preprocess"] = loaded.preprocess.to_dict()
    record.update(context or {})
    write_text(files["json"], dumps(record), overwrite)
    return record
