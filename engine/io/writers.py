"""Writing an explanation to disk: the raw map (.npy), a picture (.png) and its record (.json)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from engine.core.errors import UserError
from engine.core.explanation import Explanation
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
    stem = item.relative.with_suffix("")
    return out_dir / stem.parent / f"{stem.name}.{name}"


def write_comparison(comparisons: list[dict], out_dir: str | Path, item: InputItem, context: dict | None = None) -> str:
    """Write DIR/<stem>.compare.json with the pairwise agreement of an input's maps; return its path."""
    path = Path(str(_base(Path(out_dir), item, "compare")) + ".json")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps({"pairs": comparisons, **(context or {})}), encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write results to {out_dir}: {exc}") from None
    return str(path)


def write_result(
    result: Explanation,
    display: np.ndarray,
    out_dir: str | Path,
    item: InputItem,
    loaded: DescribedModel | None = None,
    context: dict | None = None,
) -> dict:
    """Write DIR/<stem>.<method>.{npy,png,json}, mirroring sub-folders of a folder input; return the record."""
    base = _base(Path(out_dir), item, result.method)
    try:
        base.parent.mkdir(parents=True, exist_ok=True)
        files = {suffix: str(base) + "." + suffix for suffix in ("npy", "png", "json")}
        np.save(files["npy"], result.map.astype(np.float32))
        save_overlay(files["png"], display, result.map)
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
        Path(files["json"]).write_text(dumps(record), encoding="utf-8")
    except OSError as exc:
        raise UserError(f"cannot write results to {out_dir}: {exc}") from None
    return record
