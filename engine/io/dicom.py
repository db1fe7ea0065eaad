"""DICOM images through pydicom: single- and multi-frame files, turned into the same float32
H x W x C image in [0, 1] that :func:`engine.io.images.read_image` gives for a PNG.

The grayscale pipeline is the one of DICOM PS3.4 N.2 (the "grayscale standard display pipeline"):

1. the **Modality LUT** (PS3.3 C.11.1): ``value = stored * RescaleSlope + RescaleIntercept``, or the
   Modality LUT Sequence when the file has one (applied by ``pydicom.pixels.apply_modality_lut``);
2. the **VOI LUT** (PS3.3 C.11.2): the VOI LUT Sequence when present (``pydicom.pixels.apply_voi_lut``,
   its output divided by the LUT's full scale ``2**bits - 1``), otherwise the first window centre
   ``c`` and width ``w``, with the function of PS3.3 C.11.2.1.2, written here to give [0, 1] directly:
   LINEAR ``y = ((x - (c - 0.5)) / (w - 1) + 0.5)`` clipped to [0, 1]; LINEAR_EXACT
   ``y = (x - c) / w + 0.5`` clipped; SIGMOID ``y = 1 / (1 + exp(-4 (x - c) / w))``. Without either,
   the full range the stored bits can hold (after the Modality LUT) maps linearly onto [0, 1], so
   an 8-bit file gives ``stored / 255`` exactly as the PNG reader does, and every frame of a cine
   loop is scaled the same way (no per-frame auto-contrast);
3. **MONOCHROME1** (higher values darker) is inverted: ``1 - y``.

Colour images (RGB, YBR_FULL, YBR_FULL_422, YBR_ICT/RCT and PALETTE COLOR) are converted to RGB by
pydicom and divided by their full scale ``2**BitsStored - 1`` (the palette's bit depth for PALETTE
COLOR); no window applies to them. Enhanced multi-frame files keep rescale, window and pixel spacing
in their per-frame or shared functional groups; those are read first.

Compressed transfer syntaxes are decoded by whatever pydicom decoder plugin is installed (pydicom
itself for RLE, Pillow for JPEG baseline and JPEG 2000, pylibjpeg or gdcm for the others); without
one the error names the syntax and the packages to install. Video syntaxes (MPEG, HEVC) are refused.
"""

from __future__ import annotations

import math
import re
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from engine.core.errors import UserError

DICOM_SUFFIXES = frozenset({".dcm", ".dicom", ".dic"})
# A file holding more frames than this is refused: each frame becomes an input with three result
# files, and a count beyond it is a damaged header rather than an examination.
MAX_FRAMES = 10_000
# The most pixels (rows x columns x samples) one frame may have, twice Pillow's decompression-bomb
# limit, so a forged header cannot make Sensiscope allocate gigabytes.
MAX_FRAME_VALUES = 2 * 89_478_485 * 3
PIXEL_ELEMENTS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT", "YBR_PARTIAL_420", "PALETTE COLOR")
# pydicom names its plugins' needs "gdcm>=3.0.10"; the package one installs is called python-gdcm.
PIP_NAMES = {"gdcm": "python-gdcm"}


@contextmanager
def _damaged(path: Path, what: str = "damaged DICOM attributes"):
    """pydicom converts elements when they are first read, so a damaged value (an unknown VR, a LUT
    descriptor with two values, text where a number belongs) raises anything, anywhere: one UserError."""
    try:
        with _quiet():
            yield
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001 - untrusted bytes through a third-party parser
        raise UserError(f"{path}: {what} ({type(exc).__name__}: {exc})") from None


@contextmanager
def _quiet():
    """pydicom warns about each oddity of a damaged file; the user gets one clear error or an image instead."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def has_preamble(path: str | Path) -> bool:
    """True when the file has the DICOM File Format's 128-byte preamble followed by ``DICM``."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def is_dicom(path: str | Path) -> bool:
    """A DICOM suffix, or the DICM preamble whatever the name (``IM000001`` from a scanner)."""
    path = Path(path)
    return path.suffix.lower() in DICOM_SUFFIXES or (path.is_file() and has_preamble(path))


def read_header(path: str | Path):
    """The data set without its pixel values (they are deferred: only their presence is read)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    try:
        try:
            with _quiet():
                ds = pydicom.dcmread(path, defer_size=4096)
        except InvalidDicomError:
            # Some writers omit the preamble; accept such a file only if it parses as an image.
            with _quiet():
                ds = pydicom.dcmread(path, defer_size=4096, force=True)
            if "Rows" not in ds or not any(name in ds for name in PIXEL_ELEMENTS):
                raise UserError(f"{path}: not a DICOM file (no DICM preamble and no image in it)") from None
    except UserError:
        raise
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - untrusted bytes through a third-party parser: any failure is "corrupt"
        raise UserError(f"{path}: not a readable DICOM file, it may be damaged ({type(exc).__name__}: {exc})") from None
    with _damaged(path):
        _check_image(path, ds)
    return ds


def _check_image(path: Path, ds) -> None:
    if not any(name in ds for name in PIXEL_ELEMENTS):
        if transfer_syntax(ds) is None and "SOPClassUID" not in ds:
            raise UserError(f"{path}: not a readable DICOM file, its header is damaged (no transfer syntax, no SOP class, no pixel data)")
        kind = getattr(ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID"), "name", None) if hasattr(ds, "file_meta") else None
        what = f" ({kind})" if kind else ""
        raise UserError(f"{path}: a DICOM file without pixel data{what}; there is no image to open")
    try:
        rows, columns, samples = int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise UserError(f"{path}: a damaged DICOM image: Rows or Columns missing") from None
    if rows < 1 or columns < 1 or samples not in (1, 3):
        raise UserError(f"{path}: a damaged DICOM image: {rows} x {columns} pixels with {samples} samples per pixel")
    if rows * columns * samples > MAX_FRAME_VALUES:
        raise UserError(f"{path}: refused, a frame of {rows} x {columns} x {samples} values is too large to decode safely")
    frames = declared_frames(path, ds)
    if frames > MAX_FRAMES:
        raise UserError(f"{path}: holds {frames} frames, more than the {MAX_FRAMES} Sensiscope opens from one file")
    _check_decoder(path, ds)


def declared_frames(path: Path, ds) -> int:
    """Number of Frames as the header states it (1 when absent)."""
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        raise UserError(f"{path}: a damaged DICOM image: Number of Frames is {ds.get('NumberOfFrames')!r}") from None
    if frames < 1:
        raise UserError(f"{path}: a damaged DICOM image: Number of Frames is {frames}")
    return frames


def _frame_bits(ds, element: str) -> int:
    """Bits one frame of native (uncompressed) pixel data takes."""
    rows, columns = int(ds.Rows), int(ds.Columns)
    if element != "PixelData":
        return rows * columns * (32 if element == "FloatPixelData" else 64)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "YBR_FULL_422":
        samples = 2  # two luma values share one pair of chroma values
    return rows * columns * samples * int(ds.get("BitsAllocated", 8) or 8)


def frames_present(path: Path, ds) -> int | None:
    """How many whole frames the pixel data hold, from their length (and the file's size, for a
    file cut short); None when that cannot be told without decoding (compressed pixel data)."""
    element = next((name for name in PIXEL_ELEMENTS if name in ds), None)
    syntax = transfer_syntax(ds)
    if element is None or (element == "PixelData" and syntax is not None and syntax.is_transfer_syntax and syntax.is_compressed):
        return None
    try:
        raw = ds.get_item(element)
        length = getattr(raw, "length", None)
        if length is None:  # already decoded into a data element
            length = len(raw.value or b"")
        if length == 0xFFFFFFFF:  # undefined length: encapsulated, counted only by decoding
            return None
        offset = getattr(raw, "value_tell", None)
        if offset is not None and path.is_file():
            length = min(length, max(path.stat().st_size - offset, 0))
        bits = _frame_bits(ds, element)
    except Exception:  # noqa: BLE001 - a damaged header: the decoder reports it, with the frame
        return None
    return length * 8 // bits if bits > 0 else None


def number_of_frames(path: Path, ds) -> int:
    """The frames that can be read: as declared, or fewer when the pixel data hold fewer whole
    frames (a header declaring 1,000 frames with data for 2 gives 2; see :func:`frames_note`)."""
    declared = declared_frames(path, ds)
    present = frames_present(path, ds)
    return present if present is not None and 0 < present < declared else declared


def frames_note(path: Path, ds) -> str | None:
    """A sentence when the header declares more frames than the pixel data hold, else None."""
    with _damaged(path):
        declared, present = declared_frames(path, ds), number_of_frames(path, ds)
    if present == declared:
        return None
    return f"{path}: declares {declared} frames but its pixel data hold {present}; only those {present} are read"


def transfer_syntax(ds):
    meta = getattr(ds, "file_meta", None)
    return meta.get("TransferSyntaxUID") if meta is not None else None


def _check_decoder(path: Path, ds) -> None:
    """Refuse a compressed image no installed plugin decodes, naming the syntax and the packages."""
    from pydicom.pixels import get_decoder

    syntax = transfer_syntax(ds)
    if syntax is None or "PixelData" not in ds or not syntax.is_transfer_syntax or not syntax.is_compressed:
        return
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise UserError(f"{path}: its pixel data is compressed as {syntax.name} ({syntax}), which no pydicom decoder reads (video is not supported); export the frames uncompressed") from None
    if decoder.is_available:
        return
    raise UserError(f"{path}: its pixel data is compressed as {syntax.name} ({syntax}) and no installed decoder reads it; install one: {install_hint(decoder.missing_dependencies)}")


def install_hint(missing: list[str]) -> str:
    """'pip install pylibjpeg pylibjpeg-libjpeg, or pip install python-gdcm' from pydicom's list of what each plugin needs."""
    options = []
    for entry in missing:  # e.g. "pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1"
        needs = entry.split("requires", 1)[-1]
        names = [re.split(r"[<>=!~ ]", part.strip(), maxsplit=1)[0] for part in needs.split(" and ")]
        names = [PIP_NAMES.get(name, name) for name in names if name and name != "numpy"]
        if names:
            options.append("pip install " + " ".join(names))
    return ", or ".join(options) or "a pydicom decoder plugin (pylibjpeg or python-gdcm)"


def _grouped(ds, index: int, sequence: str, name: str):
    """An attribute from the frame's functional group, else the shared one, else the top level."""
    for groups, position in (("PerFrameFunctionalGroupsSequence", index), ("SharedFunctionalGroupsSequence", 0)):
        items = ds.get(groups)
        if items is not None and len(items) > position:
            inner = items[position].get(sequence)
            if inner is not None and len(inner) and name in inner[0]:
                return inner[0].get(name)
    return ds.get(name)


def _first(value) -> float | None:
    """The first value of a possibly multi-valued number (Window Center may hold several)."""
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _text(value) -> str | None:
    return None if value is None or str(value).strip() == "" else str(value).strip()


def frame_window(ds, index: int) -> dict | None:
    """The window of one frame from the file: centre, width and function, or None."""
    centre = _first(_grouped(ds, index, "FrameVOILUTSequence", "WindowCenter"))
    width = _first(_grouped(ds, index, "FrameVOILUTSequence", "WindowWidth"))
    if centre is None or width is None or width <= 0:
        return None
    function = _text(_grouped(ds, index, "FrameVOILUTSequence", "VOILUTFunction")) or "LINEAR"
    return {"center": centre, "width": width, "function": function.upper()}


def _rescale(ds, index: int, name: str, default: float) -> float:
    value = _first(_grouped(ds, index, "PixelValueTransformationSequence", name))
    return default if value is None else value


def frame_meta(path: Path, ds, index: int) -> dict:
    """The record kept with one frame: where it is, its geometry and how its grey levels are shown."""
    photometric = _text(ds.get("PhotometricInterpretation")) or "MONOCHROME2"
    spacing = _grouped(ds, index, "PixelMeasuresSequence", "PixelSpacing")
    if spacing is None:
        spacing = ds.get("ImagerPixelSpacing")
    try:
        spacing = [float(v) for v in spacing] if spacing is not None else None
    except (TypeError, ValueError):
        spacing = None
    syntax = transfer_syntax(ds)
    grayscale = photometric.startswith("MONOCHROME")
    if not grayscale:
        voi = "none (colour)"
    elif "VOILUTSequence" in ds:
        voi = "VOI LUT"
    else:
        voi = "window" if frame_window(ds, index) else "full range"
    meta = {
        "format": "DICOM",
        "frame": index,
        "frames": number_of_frames(path, ds),
        "photometric_interpretation": photometric,
        "bits_stored": int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8),
        "rescale": {"slope": _rescale(ds, index, "RescaleSlope", 1.0), "intercept": _rescale(ds, index, "RescaleIntercept", 0.0)},
        "voi": voi,
        "window": frame_window(ds, index) if grayscale else None,
        "pixel_spacing_mm": spacing,
        "series_description": _text(ds.get("SeriesDescription")),
        "modality": _text(ds.get("Modality")),
        "instance_number": _first(ds.get("InstanceNumber")),
        "frame_time_ms": _first(ds.get("FrameTime")),
        "transfer_syntax": syntax.name if syntax is not None else None,
    }
    if meta["frames"] != declared_frames(path, ds):  # a header promising frames the file lacks
        meta["frames_declared"] = declared_frames(path, ds)
    return meta


def series_key(path: Path, ds) -> tuple:
    """How the files of a folder are ordered: series, then Instance Number, then file name."""
    number = _first(ds.get("SeriesNumber"))
    instance = _first(ds.get("InstanceNumber"))
    return (number is None, number or 0.0, str(ds.get("SeriesInstanceUID", "")), instance is None, instance or 0.0, path.name)


def _decode(path: Path, ds, index: int) -> np.ndarray:
    from pydicom.pixels import pixel_array

    try:
        with _quiet():
            if has_preamble(path):  # reads and decodes only this frame
                return pixel_array(path, index=index, as_rgb=True)
            return pixel_array(ds, index=index, as_rgb=True)
    except MemoryError:
        raise UserError(f"{path}: not enough memory to decode frame {index}") from None
    except Exception as exc:  # noqa: BLE001 - untrusted bytes through third-party decoders: any failure is "damaged"
        raise UserError(f"{path}: cannot decode the pixel data of frame {index}, the file may be damaged ({type(exc).__name__}: {exc})") from None


def window_unit(values: np.ndarray, centre: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """The VOI window of PS3.3 C.11.2.1.2 (LINEAR, LINEAR_EXACT, SIGMOID) with output range [0, 1]."""
    x = values.astype(np.float64)
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(np.clip(-4.0 * (x - centre) / width, -700, 700)))
    if function == "LINEAR_EXACT":
        return np.clip((x - centre) / width + 0.5, 0.0, 1.0)
    if width <= 1.0:  # the LINEAR formula divides by w - 1: a width of 1 is a threshold
        return (x > centre - 0.5).astype(np.float64)
    return np.clip((x - (centre - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def _modality(stored: np.ndarray, ds, index: int) -> np.ndarray:
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        return np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
    return stored.astype(np.float64) * _rescale(ds, index, "RescaleSlope", 1.0) + _rescale(ds, index, "RescaleIntercept", 0.0)


def _stored_range(ds) -> tuple[float, float]:
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8)
    if int(ds.get("PixelRepresentation", 0) or 0) == 1:
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0**bits - 1


def _full_range(stored: np.ndarray, values: np.ndarray, ds, index: int) -> np.ndarray:
    """No window in the file: the range the stored bits can hold, through the Modality LUT, onto [0, 1]."""
    if stored.dtype.kind == "f":  # Float Pixel Data has no nominal range: its own minimum and maximum
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    else:
        ends = _modality(np.array(_stored_range(ds)), ds, index)
        low, high = float(ends.min()), float(ends.max())
    if high <= low:
        return np.zeros_like(values)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def _grayscale(stored: np.ndarray, ds, index: int, window: tuple[float, float] | None) -> np.ndarray:
    values = _modality(stored, ds, index)
    if window is not None:
        unit = window_unit(values, float(window[0]), float(window[1]))
    elif "VOILUTSequence" in ds:
        from pydicom.pixels import apply_voi_lut

        bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
        with _quiet():  # the LUT is indexed by integer values: the modality output is rounded first
            unit = np.asarray(apply_voi_lut(np.rint(values).astype(np.int64), ds, index=0, prefer_lut=True), dtype=np.float64) / (2.0**bits - 1)
    elif (file_window := frame_window(ds, index)) is not None:
        unit = window_unit(values, file_window["center"], file_window["width"], file_window["function"])
    else:
        unit = _full_range(stored, values, ds, index)
    if str(ds.get("PhotometricInterpretation", "")).strip() == "MONOCHROME1":
        unit = 1.0 - unit
    return unit


def _colour(pixels: np.ndarray, ds, path: Path) -> np.ndarray:
    photometric = str(ds.get("PhotometricInterpretation", "")).strip()
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            rgb = apply_color_lut(pixels, ds)
            bits = int(ds.RedPaletteColorLookupTableDescriptor[2])
        except Exception as exc:  # noqa: BLE001 - a damaged palette in an untrusted file
            raise UserError(f"{path}: cannot apply its colour palette ({exc})") from None
        return rgb.astype(np.float64) / (2.0**bits - 1)
    bits = int(ds.get("BitsStored", ds.get("BitsAllocated", 8)) or 8)
    return pixels.astype(np.float32) / np.float32(2.0**bits - 1)  # as the PNG reader divides


def read_frame(path: str | Path, index: int = 0, *, window: tuple[float, float] | None = None, ds=None) -> tuple[np.ndarray, dict]:
    """One frame as float32 H x W x C in [0, 1] (C is 1 or 3) and its record (see :func:`frame_meta`).

    ``window`` (centre, width) replaces the file's VOI for grayscale images, e.g. a window/level
    the user chose; the record says which window was used.
    """
    path = Path(path)
    if ds is None:
        ds = read_header(path)
    with _damaged(path):
        frames = number_of_frames(path, ds)
    if not 0 <= index < frames:
        raise UserError(f"{path}: has {frames} frame(s); frame {index} does not exist")
    pixels = _decode(path, ds, index)
    with _damaged(path, "damaged DICOM attributes, the image cannot be shown"):
        return _to_image(path, ds, index, pixels, window)


def _to_image(path: Path, ds, index: int, pixels: np.ndarray, window: tuple[float, float] | None) -> tuple[np.ndarray, dict]:
    meta = frame_meta(path, ds, index)
    photometric = meta["photometric_interpretation"]
    if photometric.startswith("MONOCHROME") or (pixels.ndim == 2 and photometric not in COLOUR):
        if pixels.ndim != 2:
            raise UserError(f"{path}: a {photometric} image decoded to an array of shape {pixels.shape}")
        image = _grayscale(pixels, ds, index, window)
        if window is not None:
            meta.update(voi="window (chosen)", window={"center": float(window[0]), "width": float(window[1]), "function": "LINEAR"})
    else:
        image = _colour(pixels, ds, path)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise UserError(f"{path}: decoded to an array of shape {pixels.shape}, not an image")
    image = np.ascontiguousarray(image, dtype=np.float32)
    if pixels.dtype.kind == "f":  # only Float Pixel Data can bring NaN or infinities
        image = np.nan_to_num(image, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(image, 0.0, 1.0, out=image), meta


def describe(path: str | Path) -> tuple[object, list[dict], tuple]:
    """What a scan needs of a file without decoding it: the header, each frame's record and its sort key."""
    path = Path(path)
    ds = read_header(path)
    with _damaged(path):
        return ds, [frame_meta(path, ds, i) for i in range(number_of_frames(path, ds))], series_key(path, ds)
