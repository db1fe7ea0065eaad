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
from engine.io.preprocess import Preprocess, display_from_tensor

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
TENSOR_SUFFIXES = frozenset({".npy"})
INPUT_SUFFIXES = IMAGE_SUFFIXES | TENSOR_SUFFIXES
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


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file to float32 H x W x C in [0, 1]; raise UserError if it cannot be read.

    Pillow's decompression-bomb guard stays on, and its warning is treated as an error too.
    """
    path = regular_file(path, "image")
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

    @property
    def is_tensor(self) -> bool:
        return self.path.suffix.lower() in TENSOR_SUFFIXES

    @property
    def output_stem(self) -> Path:
        return self.stem if self.stem is not None else self.relative.with_suffix("")


@dataclass
class InputScan:
    root: Path
    layout: str  # "file", "folder" or "imagefolder"
    items: list[InputItem] = field(default_factory=list)
    classes: list[str] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _is_input(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in INPUT_SUFFIXES and not path.name.startswith(".")


def _is_mask(path: Path) -> bool:
    return path.stem.endswith(MASK_SUFFIX)


def _mask_for(path: Path) -> Path | None:
    candidate = path.with_name(f"{path.stem}{MASK_SUFFIX}.png")
    return candidate if candidate.is_file() else None


def scan_inputs(path: str | Path) -> InputScan:
    """Find the inputs under a path: one file, a flat folder, or an ImageFolder (class sub-folders).

    Files with other suffixes are listed in ``skipped`` with the reason; nothing is decoded here.
    """
    root = Path(path)
    if not root.exists():
        raise UserError(f"{root}: no such file or folder")
    if not root.is_dir():
        root = regular_file(root, "image")
        if root.suffix.lower() not in INPUT_SUFFIXES:
            supported = ", ".join(sorted(INPUT_SUFFIXES))
            raise UserError(f"{root}: unsupported file type '{root.suffix}'; supported: {supported}")
        return InputScan(root=root, layout="file", items=[InputItem(root, Path(root.name), None, _mask_for(root))])

    scan = InputScan(root=root, layout="folder")
    subfolders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    class_dirs = [d for d in subfolders if any(_is_input(f) and not _is_mask(f) for f in d.iterdir())]
    if class_dirs:
        scan.layout = "imagefolder"
        scan.classes = [d.name for d in class_dirs]
        folders = [(d, d.name) for d in class_dirs]
    else:
        folders = [(root, None)]
    for folder, label in folders:
        for file in sorted(folder.iterdir()):
            if file.is_dir() or file.name.startswith("."):
                continue
            if not file.is_file():
                scan.skipped.append((file, "not a regular file (a pipe, socket or device)"))
            elif file.suffix.lower() not in INPUT_SUFFIXES:
                scan.skipped.append((file, f"unsupported file type '{file.suffix or '(none)'}'"))
            elif not _is_mask(file):
                scan.items.append(InputItem(file, file.relative_to(root), label, _mask_for(file)))
    if scan.layout == "imagefolder":
        # Loose files next to the class folders are still inputs, just without a label.
        for file in sorted(root.iterdir()):
            if _is_input(file) and not _is_mask(file):
                scan.items.append(InputItem(file, file.relative_to(root), None, _mask_for(file)))
    if not scan.items:
        raise UserError(f"{root}: no images or .npy inputs found")
    scan.items = _unique_stems(scan.items)
    return scan


def _unique_stems(items: list[InputItem]) -> list[InputItem]:
    """Give inputs that share a stem (good.png, good.jpg) distinct result names (good_png, good_jpg)."""
    counts: dict[Path, int] = {}
    for item in items:
        key = item.relative.with_suffix("")
        counts[key] = counts.get(key, 0) + 1
    unique = []
    for item in items:
        key = item.relative.with_suffix("")
        if counts[key] > 1:
            item = dataclasses.replace(item, stem=key.with_name(f"{key.name}_{item.relative.suffix.lstrip('.').lower()}"))
        unique.append(item)
    return unique


def load_input(item: InputItem | str | Path, preprocess: Preprocess) -> tuple[torch.Tensor, np.ndarray]:
    """The model input tensor (C x H x W) and a display image (H x W x C in [0, 1]) for one item.

    A .npy input is taken as already preprocessed and used unchanged.
    """
    path = item.path if isinstance(item, InputItem) else Path(item)
    if path.suffix.lower() in TENSOR_SUFFIXES:
        tensor = read_tensor(path)
        if tensor.shape[0] != preprocess.channels:
            raise UserError(f"{path}: has {tensor.shape[0]} channel(s) but the model takes {preprocess.channels}")
        return tensor, display_from_tensor(tensor)
    try:
        return preprocess(read_image(path))
    except UserError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise UserError(f"{path}: {exc}") from None
