"""What the Results dock reads from a result store and what its batch runs do, without Qt.

The functions here run inside jobs (gui/jobs.py), off the main thread: :func:`open_store` reads a
store's manifest and records (engine.runs.store), :func:`read_image` one image's stored maps and
its display image, and :func:`batch_fn` is the job of *Run batch on folder*: the same
``engine.runs.run.run_batch`` that ``main.py batch`` calls, with the settings the CLI would use, so
a run started here resumes from the command line and the other way round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.app.runs import METRIC_COLUMNS

# The table's columns: the record's fields, in the order shown (a metric column with no value in
# any record, such as ROAD without --road, is left out).
TEXT_COLUMNS = ("image", "label", "method", "predicted")
COLUMN_TITLES = {
    "image": "Image", "label": "Class", "method": "Method", "predicted": "Predicted", "pointing": "Pointing",
    "energy": "Energy", "iou": "IoU", "deletion_auc": "Deletion AUC", "insertion_auc": "Insertion AUC",
    "road_morf": "ROAD MoRF", "road_lerf": "ROAD LeRF", "stability": "Stability", "time_s": "Time (s)",
}


def _value(value: Any) -> Any:
    """A record's value as plain Python: NaN and pandas' missing values become None."""
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
        return None if isinstance(value, float) and math.isnan(value) else value
    return value


@dataclass
class StoreData:
    """An open store as the GUI shows it: its settings, runs and records (no maps: those are read
    when an image is selected)."""

    folder: str
    settings: dict
    runs: list
    rows: list[dict]  # one per finished (image, method) pair, without the curves
    items: dict = field(default_factory=dict)  # image name -> engine InputItem, when the data folder is still there
    data_note: str = ""  # why images are missing, if they are
    preprocess: Any = None  # how the store's model prepares images (for the display image), found on first use

    @property
    def name(self) -> str:
        return Path(self.folder).name

    @property
    def methods(self) -> list[str]:
        return list(self.settings["methods"])

    @property
    def total(self) -> int:
        return len(self.settings["images"]) * len(self.settings["methods"])

    def columns(self) -> list[str]:
        shown = [c for c in METRIC_COLUMNS if c in ("pointing", "deletion_auc", "insertion_auc", "time_s") or any(r.get(c) is not None for r in self.rows)]
        return [*TEXT_COLUMNS, *shown]

    def model_text(self) -> str:
        settings = self.settings
        return str(settings["model"]) + (f" + {Path(settings['weights']).name}" if settings.get("weights") else "")

    def summary(self) -> str:
        done, total = len(self.rows), self.total
        state = f"{done} pairs, complete" if done == total else f"{done} of {total} pairs, incomplete (Run batch with resume continues it)"
        images, methods = len(self.settings["images"]), len(self.settings["methods"])
        text = f"{self.name}: model {self.model_text()} · {images} image(s) x {methods} method(s) · {state}"
        return text + (f" · {self.data_note}" if self.data_note else "")


def open_store(folder: str | Path, known: StoreData | None = None) -> StoreData:
    """Read a store (job function body). Anything unreadable, a manifest written by a newer or an
    unknown version included, is one UserError naming the folder. ``known``: the same store read
    before (a refresh), whose images in the data folder are not looked for again."""
    from engine.app.runs import Store
    from engine.core.errors import UserError

    store = Store.open(folder)  # UserError: no manifest, not JSON, not a store, a newer format
    try:
        manifest = store.manifest()
        settings = manifest.get("settings")
        if not isinstance(settings, dict) or not isinstance(settings.get("images"), list) or not isinstance(settings.get("methods"), dict) or "model" not in settings:
            raise UserError(f"{store.folder}: its manifest lacks the run's settings (written by an incompatible version?)")
        table = store.table()
    except UserError:
        raise
    except Exception as exc:  # a corrupt part file, an older or foreign layout: a message, never a crash
        raise UserError(f"{store.folder}: cannot read this result store ({type(exc).__name__}: {exc})") from None
    records = table.drop(columns=["deletion_curve", "insertion_curve"], errors="ignore").to_dict("records")
    rows = [{key: _value(value) for key, value in record.items()} for record in records]
    data = StoreData(str(store.folder), settings, list(manifest.get("runs", [])), rows)
    if known is not None and known.folder == data.folder and known.settings.get("data") == settings.get("data"):
        data.items, data.data_note = known.items, known.data_note
    else:
        _find_items(data)
    return data


def _find_items(data: StoreData) -> None:
    """The store's images in its data folder (for the display image and the mask under a map)."""
    from engine.app.data import scan_inputs
    from engine.app.runs import image_name

    folder = Path(str(data.settings.get("data") or ""))
    if not str(data.settings.get("data") or "") or not folder.exists():
        data.data_note = f"its data folder {folder} is not here: maps show without their images"
        return
    try:
        scan = scan_inputs(folder)
    except Exception as exc:  # the maps still show
        data.data_note = f"its data folder cannot be read ({exc}): maps show without their images"
        return
    data.items = {image_name(item): item for item in scan.items}


@dataclass
class StoredPair:
    method: str
    record: dict
    map: Any  # H x W float32


@dataclass
class StoredImage:
    """One image's stored maps with the display image and mask to draw them over."""

    index: int
    name: str
    pairs: list[StoredPair]
    image: Any = None  # H x W x C in [0, 1], or None when the data folder is gone
    mask: Any = None
    preprocess: Any = None
    note: str = ""


def _preprocess_for(data: StoreData, shape: tuple[int, int]):
    """The store's model's preprocessing (loaded once: the model itself is not kept), or, when the
    model cannot be loaded here, a resize to the maps' size."""
    from engine.app.data import Preprocess

    settings = data.settings
    from .model_names import class_spec_parts

    if class_spec_parts(str(settings.get("model") or "")) is not None:
        # A store may come from anyone: the Python file its model class names is never run to show maps.
        side = shape[0]
        return Preprocess(resize=side, crop=side if shape[0] == shape[1] else None), f"image resized to the maps (the store's model {settings['model']} is Python code, not run to show stored maps)"
    try:
        from engine.app.models import load as load_spec
        from engine.core.requests import ModelSpec

        return load_spec(ModelSpec.from_dict(settings), check_size=False).preprocess, ""
    except Exception as exc:  # a model that cannot load here: the maps still show, over a resized image
        side = shape[0]
        return Preprocess(resize=side, crop=side if shape[0] == shape[1] else None), f"image resized to the maps ({exc})"


def read_image(data: StoreData, index: int, preprocess=None) -> StoredImage:
    """Every stored map of image ``index`` (in the run's method order), and its display image and
    mask prepared as the store's model prepared them (``preprocess``: that preprocessing when the
    caller knows it). Nothing is recomputed."""
    from engine.app.runs import Store
    from engine.core.errors import UserError

    store = Store(data.folder)
    rows = {r["method"]: r for r in data.rows if r["image_index"] == index}
    if not rows:
        raise UserError(f"{data.folder}: holds no finished maps of image {index}")
    try:
        pairs = [StoredPair(m, rows[m], store.read_map(index, m)) for m in data.methods if m in rows]
    except UserError:
        raise
    except Exception as exc:
        raise UserError(f"{data.folder}: cannot read the maps of image {index} ({type(exc).__name__}: {exc})") from None
    name = str(data.settings["images"][index])
    stored = StoredImage(index, name, pairs, preprocess=preprocess or data.preprocess)
    item = data.items.get(name)
    if item is None:
        stored.note = data.data_note or f"{name} is no longer in the data folder"
        return stored
    _display(stored, data, item)
    return stored


def _display(stored: StoredImage, data: StoreData, item) -> None:
    from engine.app.data import load_input, mask_for

    shape = stored.pairs[0].map.shape
    if stored.preprocess is None:
        stored.preprocess, stored.note = _preprocess_for(data, shape)
    try:
        _tensor, image = load_input(item, stored.preprocess)
        mask = mask_for(item, stored.preprocess)
    except Exception as exc:  # the maps still show, without the image
        stored.note = f"{item.name}: cannot be read ({exc})"
        return
    if image.shape[:2] != shape:
        stored.note = f"the image ({image.shape[0]} x {image.shape[1]}) does not match the stored maps ({shape[0]} x {shape[1]})"
        return
    stored.image = image
    stored.mask = mask if mask is not None and mask.shape == shape and mask.any() else None


def explanation_of(data: StoreData, pair: StoredPair):
    """An engine Explanation of a stored pair, for the map cells (its time is the time it took when
    it was computed)."""
    from engine.core.explanation import Explanation

    record = pair.record
    target = int(record["target"]) if record.get("target") is not None else -1
    extras = {"stored": {"store": data.folder, "image": record.get("image"), **{k: record.get(k) for k in METRIC_COLUMNS}}}
    params = dict(data.settings["methods"].get(pair.method, {}))
    elapsed = float(record.get("time_s") or 0.0)
    return Explanation(pair.map, pair.method, params, target, target, math.nan, "the stored run", elapsed, seed=data.settings.get("seed"), extras=extras)


def metric_text(record: dict) -> str:
    parts = []
    for key in METRIC_COLUMNS:
        value = None if key == "time_s" else record.get(key)
        if value is not None:
            parts.append(f"{COLUMN_TITLES[key].lower()} {value:.3g}")
    return ", ".join(parts)


# ---------------------------------------------------------------------------- batch runs
@dataclass(frozen=True)
class BatchRequest:
    """What *Run batch on folder* asks: the loaded model, the open folder, methods and a store."""

    model: str
    weights: str | None
    labels: str | None
    trust: bool
    data: str
    methods: tuple[str, ...]
    store: str
    resume: bool = False
    steps: int = 50
    max_images: int = 0  # 0: every image
    device: str = "auto"
    seed: int = 0
    batch: int = 16  # images explained and scored together (main.py batch --batch; 1: one by one)
    model_args: dict = field(default_factory=dict, hash=False)  # constructor arguments of a class model (net.py:Net)
    retry_failed: bool = False  # with resume: compute again the pairs that failed before (main.py batch --retry-failed)


def batch_job(request: BatchRequest):
    """The engine's Job and the images of a batch request, as ``main.py batch`` would make them
    (the evaluate defaults of each method, the default metric settings)."""
    from engine.app.data import pick_in_turn, scan_inputs
    from engine.app.explain import get_method
    from engine.app.runs import EVALUATE_DEFAULTS, Job, MetricSettings
    from engine.core.errors import UserError
    from engine.core.params import build_params
    from engine.core.requests import ModelSpec

    if not request.methods:
        raise UserError("choose at least one method to run")
    params = {m: build_params(get_method(m).params_cls, {k: str(v) for k, v in EVALUATE_DEFAULTS.get(m, {}).items()}) for m in request.methods}
    model = ModelSpec(request.model, request.weights, request.labels, request.trust, dict(request.model_args))
    job = Job(model, params, MetricSettings(steps=request.steps), request.seed, request.device, batch=max(1, request.batch))
    items = [i for i in scan_inputs(request.data).items if not i.is_tensor]
    if not items:
        raise UserError(f"{request.data}: holds no images")
    return job, (pick_in_turn(items, request.max_images) if request.max_images else items)


def batch_fn(request: BatchRequest):
    """The job function of a batch run: returns engine.runs.run.RunSummary; progress payloads are
    engine.runs.run.RunCount; a cancel stops between images (finished pairs stay in the store)."""

    def run(progress, cancel):
        from engine.app.runs import run_batch

        job, items = batch_job(request)
        return run_batch(
            job, request.store, items, data=str(Path(request.data).resolve()), resume=request.resume, retry_failed=request.retry_failed and request.resume,
            progress=progress, cancel=cancel,
        )

    return run
