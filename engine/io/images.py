"""Reading images, folders, ImageFolder layouts, preprocessed .npy tensors and CSV tables."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.core.errors import UserError
from engine.core.files import regular_file
from engine.io import dicom
from engine.io.dicom import DICOM_SUFFIXES, has_preamble
from engine.io.preprocess import Preprocess, display_from_tensor

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
TENSOR_SUFFIXES = frozenset({".npy"})
# DICOM files are also recognised without a suffix, by the DICM preamble (see engine.io.dicom).
INPUT_SUFFIXES = IMAGE_SUFFIXES | TENSOR_SUFFIXES | DICOM_SUFFIXES
# Masks sit beside their images as NAME_mask.png; they are ground truth, not inputs.
MASK_SUFFIX = "_mask"


def _composite_on_white(image: Image.Image) -> Image.Image:
    """Flatten transparency onto white, the way image viewers show it."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def _to_unit(array: np.ndarray, full_scale: float) -> np.ndarray:
    return (array.astype(np.float32) / np.float32(full_scale)).clip(0.0, 1.0)


def _min_max(array: np.ndarray) -> np.ndarray:
    array = array.astype(np.float32)
    finite = np.isfinite(array)
    if not finite.any():
        return np.zeros_like(array)
    low, high = float(array[finite].min()), float(array[finite].max())
    out = (array - low) / (high - low) if high > low else np.zeros_like(array)
    return np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0)


def image_to_array(image: Image.Image) -> np.ndarray:
    """A decoded Pillow image as float32 H x W x C in [0, 1], C being 1 (gray) or 3 (RGB)."""
    mode = image.mode
    if mode == "1":
        return np.asarray(image.convert("L"), dtype=np.float32)[:, :, None] / 255.0
    if mode == "L":
        return _to_unit(np.asarray(image), 255.0)[:, :, None]
    if mode in ("LA", "La"):
        return _to_unit(np.asarray(_composite_on_white(image).convert("L")), 255.0)[:, :, None]
    if mode.startswith("I;16"):
        return _to_unit(np.asarray(image).astype(np.uint16), 65535.0)[:, :, None]
    if mode == "I":
        array = np.asarray(image)
        # 16-bit files often decode to mode I; anything outside 0..65535 is scaled by its range.
        if array.size and array.min() >= 0 and array.max() <= 65535:
            return _to_unit(array, 65535.0)[:, :, None]
        return _min_max(array)[:, :, None]
    if mode == "F":
        array = np.asarray(image, dtype=np.float32)
        finite = array[np.isfinite(array)]
        if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
            return np.nan_to_num(array, nan=0.0)[:, :, None]
        return _min_max(array)[:, :, None]
    if mode == "RGB":
        return _to_unit(np.asarray(image), 255.0)
    if mode in ("RGBA", "RGBa", "PA") or (mode == "P" and "transparency" in image.info):
        return _to_unit(np.asarray(_composite_on_white(image)), 255.0)
    return _to_unit(np.asarray(image.convert("RGB")), 255.0)


def _is_dicom_file(path: Path) -> bool:
    """A regular file with a DICOM suffix, or with the DICM preamble and no image or tensor suffix."""
    suffix = path.suffix.lower()
    return suffix in DICOM_SUFFIXES or (suffix not in IMAGE_SUFFIXES and suffix not in TENSOR_SUFFIXES and has_preamble(path))


def read_image(path: str | Path, frame: int | None = None) -> np.ndarray:
    """Decode an image file to float32 H x W x C in [0, 1]; raise UserError if it cannot be read.

    Pillow's decompression-bomb guard stays on, and its warning is treated as an error too. A DICOM
    file gives its frame ``frame`` (the first by default) through engine.io.dicom.read_frame.
    """
    path = regular_file(path, "image")
    if frame is not None or _is_dicom_file(path):
        return dicom.read_frame(path, frame or 0)[0]
    try:
        with warnings.catch_warnings():
            # Damaged metadata (a corrupt EXIF block) is Pillow's warning, not the user's problem: the
            # pixels decode or they do not, and that is what is reported.
            warnings.simplefilter("ignore", UserWarning)
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.seek(0)
                image.load()
                # A camera's portrait photo is stored sideways with an orientation tag: honour it.
                return image_to_array(ImageOps.exif_transpose(image))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not an image") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UserError(f"{path}: refused, the image is too large to decode safely ({exc})") from None
    except UnidentifiedImageError:
        raise UserError(f"{path}: not an image Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise UserError(f"{path}: cannot be read ({exc})") from None


def read_tensor(path: str | Path) -> torch.Tensor:
    """A preprocessed C x H x W float tensor from a .npy file (never unpickled)."""
    path = regular_file(path, ".npy file")
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(array, np.ndarray):  # np.load opens .npz archives whatever the suffix
        array.close()
        raise UserError(f"{path}: holds an .npz archive, not a single .npy array")
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise UserError(f"{path}: a preprocessed input must be C x H x W, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise UserError(f"{path}: holds {array.dtype} values; expected real numbers")
    if array.size == 0:
        raise UserError(f"{path}: holds an empty array of shape {array.shape}")
    with np.errstate(over="ignore"):
        array = np.ascontiguousarray(array, dtype=np.float32)
    # Checked after the cast: float64 values beyond float32's range become infinite in it.
    if not np.isfinite(array).all():
        raise UserError(f"{path}: holds NaN or infinite values (or values too large for float32)")
    return torch.from_numpy(array)


@dataclass(frozen=True)
class InputItem:
    """One input found on disk: its path, its class label (ImageFolder) and where to write results."""

    path: Path
    relative: Path
    label: str | None = None
    mask: Path | None = None
    # Where results are named: the relative path without its suffix, unless another input of the
    # same scan has that stem too (good.png and good.jpg), then the suffix joins the name.
    stem: Path | None = None
    # The frame of a multi-frame file (a DICOM cine loop), counted from 0; None for a single image.
    frame: int | None = None
    # What the file says about the image (DICOM: pixel spacing, series, window, photometric
    # interpretation, frame and number of frames; see engine.io.dicom.frame_meta), or None.
    meta: dict | None = field(default=None, compare=False)

    @property
    def is_tensor(self) -> bool:
        return self.path.suffix.lower() in TENSOR_SUFFIXES

    @property
    def _frame_tag(self) -> str:
        frames = (self.meta or {}).get("frames") or 0
        return f"{self.frame:0{max(3, len(str(frames - 1)))}d}"

    @property
    def name(self) -> str:
        """The input's name: its relative path, or ``stem#NNN`` for frame NNN of a multi-frame file."""
        if self.frame is None:
            return str(self.relative)
        return f"{_base_stem(self.relative)}#{self._frame_tag}"

    @property
    def source(self) -> str:
        """The file, with ``#NNN`` for a frame of a multi-frame file (for messages and records)."""
        return str(self.path) if self.frame is None else f"{self.path}#{self._frame_tag}"

    @property
    def output_stem(self) -> Path:
        """Results are named after this; a frame's is ``stem_fNNN`` (no ``#``, which URLs and shells treat specially)."""
        if self.stem is not None:
            return self.stem
        base = _base_stem(self.relative)
        return base if self.frame is None else base.with_name(f"{base.name}_f{self._frame_tag}")


def _base_stem(relative: Path) -> Path:
    """The relative path without a known suffix (a DICOM named 1.2.840.5 keeps its whole name)."""
    return relative.with_suffix("") if relative.suffix.lower() in INPUT_SUFFIXES else relative


@dataclass
class InputScan:
    root: Path
    layout: str  # "file", "folder" or "imagefolder"
    items: list[InputItem] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    # Sentences for the user about what was found (a DICOM declaring more frames than it holds).
    notes: list[str] = field(default_factory=list)


def _input_kind(path: Path) -> str | None:
    """The kind of a regular file: "image", "tensor", "dicom" or None (a file without a known suffix is a
    DICOM input when its first 132 bytes hold the DICM preamble)."""
    suffix = path.suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return "image"
    if suffix in TENSOR_SUFFIXES:
        return "tensor"
    return "dicom" if suffix in DICOM_SUFFIXES or has_preamble(path) else None


def _is_input(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and _input_kind(path) is not None


def _is_mask(path: Path) -> bool:
    return path.stem.endswith(MASK_SUFFIX)


def _mask_for(path: Path) -> Path | None:
    candidate = path.with_name(f"{path.stem}{MASK_SUFFIX}.png")
    return candidate if candidate.is_file() else None


def _dicom_items(file: Path, relative: Path, label: str | None, notes: list[str]) -> tuple[list[InputItem], tuple]:
    """One item per frame of a DICOM file (a single-frame file is one plain item), and its sort key;
    a header declaring more frames than the pixel data hold adds a sentence to ``notes``."""
    ds, metas, key = dicom.describe(file)
    note = dicom.frames_note(file, ds)
    if note:
        notes.append(note)
    if len(metas) == 1:
        return [InputItem(file, relative, label, _mask_for(file), meta=metas[0])], key
    return [InputItem(file, relative, label, None, frame=meta["frame"], meta=meta) for meta in metas], key


def _scan_folder(scan: InputScan, folder: Path, label: str | None, *, report: bool = True) -> None:
    """Add a folder's inputs to the scan; DICOM files take their places in series order
    (Series Number, Instance Number, then file name), other files stay in file-name order."""
    entries: list[tuple[tuple | None, list[InputItem]]] = []
    for file in sorted(folder.iterdir()):
        if file.is_dir() or file.name.startswith("."):
            continue
        if not file.is_file():
            if report:
                scan.skipped.append((file, "not a regular file (a pipe, socket or device)"))
            continue
        kind = _input_kind(file)
        if kind is None:
            if report:
                scan.skipped.append((file, f"unsupported file type '{file.suffix or '(none)'}'"))
        elif _is_mask(file):
            continue
        elif kind == "dicom":
            try:
                items, key = _dicom_items(file, file.relative_to(scan.root), label, scan.notes)
                entries.append((key, items))
            except UserError as exc:
                scan.skipped.append((file, str(exc).removeprefix(f"{file}: ")))
        else:
            entries.append((None, [InputItem(file, file.relative_to(scan.root), label, _mask_for(file))]))
    slots = [i for i, (key, _) in enumerate(entries) if key is not None]
    for slot, entry in zip(slots, sorted((entries[i] for i in slots), key=lambda e: e[0]), strict=True):
        entries[slot] = entry
    scan.items += [item for _, items in entries for item in items]


def scan_inputs(path: str | Path) -> InputScan:
    """Find the inputs under a path: one file, a flat folder, or an ImageFolder (class sub-folders).

    Files with other suffixes are listed in ``skipped`` with the reason; nothing is decoded here.
    DICOM files are read up to their pixel data (not decoded): each frame of a multi-frame file is
    one input, and a folder of DICOM files (a series) is ordered by Instance Number.
    """
    root = Path(path)
    if not root.exists():
        framed = _one_frame(root)
        if framed is not None:
            return framed
        raise UserError(f"{root}: no such file or folder")
    if not root.is_dir():
        root = regular_file(root, "image")
        kind = _input_kind(root)
        if kind is None:
            supported = ", ".join(sorted(INPUT_SUFFIXES))
            raise UserError(f"{root}: unsupported file type '{root.suffix}'; supported: {supported} (and DICOM files of any name)")
        if kind == "dicom":
            scan = InputScan(root=root, layout="file")
            scan.items = _dicom_items(root, Path(root.name), None, scan.notes)[0]
            return scan
        return InputScan(root=root, layout="file", items=[InputItem(root, Path(root.name), None, _mask_for(root))])

    scan = InputScan(root=root, layout="folder")
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    class_dirs = [d for d in subfolders if any(_is_input(f) and not _is_mask(f) for f in d.iterdir())]
    if class_dirs:
        scan.layout = "imagefolder"
        scan.classes = [d.name for d in class_dirs]
        for folder in class_dirs:
            _scan_folder(scan, folder, folder.name)
        # Loose files next to the class folders are still inputs, just without a label.
        _scan_folder(scan, root, None, report=False)
    else:
        _scan_folder(scan, root, None)
    if not scan.items:
        raise UserError(f"{root}: no images, DICOM files or .npy inputs found")
    scan.items = _unique_stems(scan.items)
    return scan


def _one_frame(path: Path) -> InputScan | None:
    """``FILE#NNN``, the name results and messages give frame NNN of a multi-frame DICOM file
    (``STEM#NNN`` too, the file's DICOM suffix left out): a scan of that one frame. None when the
    path has no ``#NNN`` ending or no file before it."""
    base, hash_sign, tag = str(path).rpartition("#")
    if not hash_sign or not tag.isascii() or not tag.isdigit():
        return None
    candidates = [Path(base)] + [Path(base + suffix) for suffix in sorted(DICOM_SUFFIXES)]
    file = next((c for c in candidates if c.is_file()), None)
    if file is None:
        return None
    if _input_kind(file) != "dicom":
        raise UserError(f"{path}: '#{tag}' picks a frame of a multi-frame DICOM file, and {file.name} is not a DICOM file")
    scan = InputScan(root=file, layout="file")
    items = _dicom_items(file, Path(file.name), None, scan.notes)[0]
    frame, frames = int(tag), len(items)
    if frame >= frames and frames == 1:
        raise UserError(f"{file}: holds a single image, so frame {frame} does not exist; give the file without '#{tag}'")
    if frame >= frames:
        raise UserError(f"{file}: has {frames} frames; frame {frame} does not exist (give #000 to #{frames - 1:03d})")
    scan.items = [items[frame]] if frames > 1 else items
    return scan


def _unique_stems(items: list[InputItem]) -> list[InputItem]:
    """Give inputs that share a stem (good.png, good.jpg) distinct result names (good_png, good_jpg)."""
    counts: dict[Path, int] = {}
    for item in items:
        counts[item.output_stem] = counts.get(item.output_stem, 0) + 1
    unique, used = [], set()
    for item in items:
        key = item.output_stem
        if counts[key] > 1:
            key = key.with_name(f"{key.name}_{item.relative.suffix.lstrip('.').lower() or 'file'}")
        base, number = key, 1
        while key in used:  # the same stem and suffix twice (a frame and a file named like it)
            number += 1
            key = base.with_name(f"{base.name}_{number}")
        if key != item.output_stem:
            item = dataclasses.replace(item, stem=key)
        used.add(key)
        unique.append(item)
    return unique


def load_input(item: InputItem | str | Path, preprocess: Preprocess) -> tuple[torch.Tensor, np.ndarray]:
    """The model input tensor (C x H x W) and a display image (H x W x C in [0, 1]) for one item.

    A .npy input is taken as already preprocessed and used unchanged; a DICOM item gives its frame.
    """
    path = item.path if isinstance(item, InputItem) else Path(item)
    if path.suffix.lower() in TENSOR_SUFFIXES:
        tensor = read_tensor(path)
        if tensor.shape[0] != preprocess.channels:
            raise UserError(f"{path}: has {tensor.shape[0]} channel(s) but the model takes {preprocess.channels}")
        return tensor, display_from_tensor(tensor)
    try:
        return preprocess(read_image(path, item.frame if isinstance(item, InputItem) else None))
    except UserError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise UserError(f"{path}: {exc}") from None


def pick_in_turn(items: list, n: int) -> list:
    """Up to ``n`` items taken in turn from each class, so every class is represented (``--n`` of
    ``batch`` and ``evaluate``, and the GUI's batch run)."""
    by_label: dict = {}
    for item in items:
        by_label.setdefault(item.label, []).append(item)
    picked, queues = [], [list(v) for v in by_label.values()]
    while len(picked) < n and any(queues):
        for queue in queues:
            if queue and len(picked) < n:
                picked.append(queue.pop(0))
    return picked


def channel_note(items: list, channels: int) -> str | None:
    """A note when colour images meet a one-channel model (they are converted to grey by ITU-R
    BT.601 luma, which loses their colour), read from the first few files' headers."""
    colours = set()
    for item in items[:8]:
        path = item.path if isinstance(item, InputItem) else Path(item)
        if path.suffix.lower() in TENSOR_SUFFIXES or path.suffix.lower() in (".dcm", ".dicom"):
            continue
        try:
            with Image.open(path) as image:
                colours.add(3 if image.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LAB", "HSV") else 1)
        except (OSError, UnidentifiedImageError, ValueError):
            continue
    if channels == 1 and 3 in colours:
        return "colour images are converted to grey (luma) for this 1-channel model; if the model takes RGB, pass --channels 3"
    return None  # grey images repeated for an RGB model lose nothing: said in --help, not on every run
