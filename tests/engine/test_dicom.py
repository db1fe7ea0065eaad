"""DICOM reading (engine.io.dicom and its place in engine.io.images): files made here with pydicom,
known answers for the Modality LUT, the window, MONOCHROME1, colour, frames and series order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import convert_color_space, get_decoder
from pydicom.uid import JPEGBaseline8Bit, JPEGLosslessSV1, RLELossless, SecondaryCaptureImageStorage, generate_uid

from engine.core.errors import UserError
from engine.io import dicom
from engine.io.images import load_input, read_image, scan_inputs
from engine.io.preprocess import Preprocess

NO_RESIZE = {"resize": None, "crop": None}


def dicom_dataset(pixels: np.ndarray, photometric: str = "MONOCHROME2", *, frames: int | None = None, bits_stored: int | None = None, **attrs) -> Dataset:
    """An Explicit VR Little Endian image: ``pixels`` is (H, W), (F, H, W), (H, W, 3) or (F, H, W, 3)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.1"  # Explicit VR Little Endian
    ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID, ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID
    colour = pixels.shape[-1] == 3 and photometric != "MONOCHROME2" and photometric != "MONOCHROME1"
    ds.SamplesPerPixel = 3 if colour else 1
    if colour:
        ds.PlanarConfiguration = 0
    shape = pixels.shape[:-1] if colour else pixels.shape
    ds.Rows, ds.Columns = shape[-2:]
    if frames is not None:
        ds.NumberOfFrames = frames
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = pixels.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    ds.Modality = "OT"
    for name, value in attrs.items():
        setattr(ds, name, value)
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    return ds


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", **kwargs) -> Path:
    dicom_dataset(pixels, photometric, **kwargs).save_as(path, enforce_file_format=True)
    return path


# ------------------------------------------------------------------ known answers


def test_rescale_then_window_gives_the_exact_values_of_the_standard(tmp_path):
    stored = np.array([[0, 100, 200, 300], [400, 500, 600, 2000]], dtype=np.uint16)
    path = write_dicom(tmp_path / "ct.dcm", stored, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=-400, WindowWidth=801)
    image = read_image(path)
    hu = stored * 2.0 - 1024  # the Modality LUT
    expected = np.clip((hu - (-400 - 0.5)) / (801 - 1) + 0.5, 0, 1)  # PS3.3 C.11.2.1.2.1, LINEAR
    assert image.shape == (2, 4, 1) and image.dtype == np.float32
    np.testing.assert_allclose(image[:, :, 0], expected, atol=1e-6)
    assert image[0, 0, 0] == 0.0 and image[1, 3, 0] == 1.0 and 0 < image[0, 2, 0] < 1


def test_window_functions_linear_exact_and_sigmoid_and_the_first_of_several_windows(tmp_path):
    stored = np.array([[0, 50, 100, 150]], dtype=np.uint8)
    exact = read_image(write_dicom(tmp_path / "e.dcm", stored, WindowCenter=[100, 10], WindowWidth=[100, 5], VOILUTFunction="LINEAR_EXACT"))
    np.testing.assert_allclose(exact[0, :, 0], np.clip((stored[0].astype(float) - 100) / 100 + 0.5, 0, 1), atol=1e-6)
    sigmoid = read_image(write_dicom(tmp_path / "s.dcm", stored, WindowCenter=100, WindowWidth=100, VOILUTFunction="SIGMOID"))
    np.testing.assert_allclose(sigmoid[0, :, 0], 1 / (1 + np.exp(-4 * (stored[0].astype(float) - 100) / 100)), atol=1e-6)


def test_without_a_window_an_8_bit_file_equals_the_png_reader(tmp_path):
    stored = np.random.default_rng(0).integers(0, 256, (6, 7), dtype=np.uint8)
    Image.fromarray(stored).save(tmp_path / "same.png")
    from_dicom = read_image(write_dicom(tmp_path / "same.dcm", stored))
    np.testing.assert_array_equal(from_dicom, read_image(tmp_path / "same.png"))


def test_16_bit_and_12_bit_files_use_their_full_stored_range(tmp_path):
    full = np.array([[0, 32768, 65535]], dtype=np.uint16)
    np.testing.assert_allclose(read_image(write_dicom(tmp_path / "16.dcm", full))[0, :, 0], full[0] / 65535, atol=1e-6)
    twelve = np.array([[0, 2048, 4095]], dtype=np.uint16)
    np.testing.assert_allclose(read_image(write_dicom(tmp_path / "12.dcm", twelve, bits_stored=12))[0, :, 0], twelve[0] / 4095, atol=1e-6)
    signed = np.array([[-32768, 0, 32767]], dtype=np.int16)
    np.testing.assert_allclose(read_image(write_dicom(tmp_path / "s.dcm", signed))[0, :, 0], (signed[0].astype(float) + 32768) / 65535, atol=1e-6)


def test_monochrome1_is_inverted(tmp_path):
    stored = np.array([[0, 64, 255]], dtype=np.uint8)
    mono1 = read_image(write_dicom(tmp_path / "m1.dcm", stored, "MONOCHROME1"))
    mono2 = read_image(write_dicom(tmp_path / "m2.dcm", stored, "MONOCHROME2"))
    np.testing.assert_allclose(mono1, 1 - mono2, atol=1e-7)
    assert mono1[0, 0, 0] == 1.0 and mono1[0, 2, 0] == 0.0


def test_rgb_and_ybr_full_give_the_same_rgb_image(tmp_path):
    rgb = np.random.default_rng(1).integers(0, 256, (5, 6, 3), dtype=np.uint8)
    from_rgb = read_image(write_dicom(tmp_path / "rgb.dcm", rgb, "RGB"))
    np.testing.assert_allclose(from_rgb, rgb / 255.0, atol=1e-6)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(from_rgb, read_image(tmp_path / "rgb.png"))
    ybr = convert_color_space(rgb, "RGB", "YBR_FULL")
    from_ybr = read_image(write_dicom(tmp_path / "ybr.dcm", ybr, "YBR_FULL"))
    assert from_ybr.shape == (5, 6, 3)
    assert np.abs(from_ybr - from_rgb).max() <= 2 / 255  # the colour transform rounds to integers twice


def test_a_multi_frame_file_is_one_input_per_frame_named_stem_hash_nnn(tmp_path):
    frames = np.stack([np.full((4, 5), 20 * k, np.uint8) for k in range(3)])
    path = write_dicom(tmp_path / "cine.dcm", frames, frames=3, FrameTime=33.3, SeriesDescription="cine loop")
    scan = scan_inputs(path)
    assert scan.layout == "file" and [item.name for item in scan.items] == ["cine#000", "cine#001", "cine#002"]
    assert [item.frame for item in scan.items] == [0, 1, 2]
    assert [str(item.output_stem) for item in scan.items] == ["cine_f000", "cine_f001", "cine_f002"]  # no '#' in file names
    assert scan.items[2].source == f"{path}#002"
    for k, item in enumerate(scan.items):
        tensor, display = load_input(item, Preprocess(channels=1, mean=(0.0,), std=(1.0,), **NO_RESIZE))
        np.testing.assert_allclose(tensor.numpy(), np.full((1, 4, 5), 20 * k / 255), atol=1e-6)
        assert item.meta["frame"] == k and item.meta["frames"] == 3 and item.meta["frame_time_ms"] == pytest.approx(33.3)
    assert read_image(path, frame=1)[0, 0, 0] == pytest.approx(20 / 255)
    with pytest.raises(UserError, match="frame 3 does not exist"):
        read_image(path, frame=3)


def test_a_colour_cine_loop_gives_rgb_frames(tmp_path):
    frames = np.random.default_rng(2).integers(0, 256, (2, 3, 4, 3), dtype=np.uint8)
    path = write_dicom(tmp_path / "us.dcm", frames, "RGB", frames=2)
    items = scan_inputs(path).items
    for k, item in enumerate(items):
        np.testing.assert_allclose(load_input(item, Preprocess(**NO_RESIZE))[1], frames[k] / 255.0, atol=1e-6)


def test_metadata_is_kept_in_the_inputs_record(tmp_path):
    stored = np.zeros((4, 4), np.uint16)
    path = write_dicom(tmp_path / "mr.dcm", stored, bits_stored=12, PixelSpacing=[0.5, 0.25], SeriesDescription="T2 axial", WindowCenter=40, WindowWidth=400, RescaleSlope=1, RescaleIntercept=-1024)
    (item,) = scan_inputs(path).items
    meta = item.meta
    assert item.frame is None and item.name == "mr.dcm" and str(item.output_stem) == "mr"
    assert meta["pixel_spacing_mm"] == [0.5, 0.25] and meta["series_description"] == "T2 axial"
    assert meta["window"] == {"center": 40.0, "width": 400.0, "function": "LINEAR"} and meta["voi"] == "window"
    assert meta["photometric_interpretation"] == "MONOCHROME2" and meta["frame"] == 0 and meta["frames"] == 1
    assert meta["rescale"] == {"slope": 1.0, "intercept": -1024.0} and meta["bits_stored"] == 12
    _, read_meta = dicom.read_frame(path, window=(0, 100))
    assert read_meta["window"]["center"] == 0.0 and read_meta["voi"] == "window (chosen)"


def test_enhanced_multi_frame_reads_rescale_window_and_spacing_per_frame(tmp_path):
    frames = np.stack([np.full((2, 2), 100, np.uint16), np.full((2, 2), 100, np.uint16)])
    ds = dicom_dataset(frames, frames=2)
    per_frame = []
    for centre in (100, 50):
        group = Dataset()
        voi = Dataset()
        voi.WindowCenter, voi.WindowWidth = centre, 101
        group.FrameVOILUTSequence = [voi]
        per_frame.append(group)
    shared = Dataset()
    measures, transform = Dataset(), Dataset()
    measures.PixelSpacing = [0.1, 0.2]
    transform.RescaleSlope, transform.RescaleIntercept = 1, 0
    shared.PixelMeasuresSequence, shared.PixelValueTransformationSequence = [measures], [transform]
    ds.PerFrameFunctionalGroupsSequence, ds.SharedFunctionalGroupsSequence = per_frame, [shared]
    ds.save_as(tmp_path / "enhanced.dcm", enforce_file_format=True)
    first, second = scan_inputs(tmp_path / "enhanced.dcm").items
    assert first.meta["pixel_spacing_mm"] == [0.1, 0.2] and second.meta["window"]["center"] == 50.0
    assert read_image(first.path, 0)[0, 0, 0] == pytest.approx(0.5 + 0.5 / 100)  # at the centre of its window
    assert read_image(second.path, 1)[0, 0, 0] == 1.0  # above the top of its window


def test_a_voi_lut_sequence_is_applied_and_divided_by_its_full_scale(tmp_path):
    stored = np.array([[9, 10, 11, 12, 13, 14]], dtype=np.uint16)
    ds = dicom_dataset(stored, WindowCenter=0, WindowWidth=1)  # the LUT takes precedence over a window
    lut = Dataset()
    lut.LUTDescriptor = [4, 10, 8]  # 4 entries, the first for value 10, 8 bits out
    lut.LUTData = np.array([0, 85, 170, 255], np.uint16).tobytes()
    ds.VOILUTSequence = [lut]
    ds.save_as(tmp_path / "lut.dcm", enforce_file_format=True)
    np.testing.assert_allclose(read_image(tmp_path / "lut.dcm")[0, :, 0], np.array([0, 0, 85, 170, 255, 255]) / 255, atol=1e-6)
    assert scan_inputs(tmp_path / "lut.dcm").items[0].meta["voi"] == "VOI LUT"


def test_palette_colour_becomes_rgb(tmp_path):
    ds = dicom_dataset(np.array([[0, 1], [2, 1]], dtype=np.uint8), "PALETTE COLOR")
    for colour, values in (("Red", [0, 65535, 0]), ("Green", [0, 0, 65535]), ("Blue", [65535, 0, 0])):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [3, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", np.array(values, np.uint16).tobytes())
    ds.save_as(tmp_path / "palette.dcm", enforce_file_format=True)
    image = read_image(tmp_path / "palette.dcm")
    np.testing.assert_allclose(image[0, 0], [0, 0, 1])
    np.testing.assert_allclose(image[0, 1], [1, 0, 0])
    np.testing.assert_allclose(image[1, 0], [0, 1, 0])


# ------------------------------------------------------------------ folders and names


def test_a_series_folder_is_ordered_by_instance_number_and_skips_what_is_not_an_image(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    for name, instance in (("a.dcm", 3), ("b.dcm", 1), ("c.dcm", 2)):
        write_dicom(series / name, np.full((3, 3), 10 * instance, np.uint8), InstanceNumber=instance, SeriesDescription="axial")
    write_dicom(series / "IM000009", np.full((3, 3), 90, np.uint8), InstanceNumber=9)  # no suffix: found by its preamble
    (series / "notes.txt").write_text("not an image")
    no_pixels = dicom_dataset(np.zeros((2, 2), np.uint8))
    del no_pixels.PixelData
    no_pixels.save_as(series / "report.dcm", enforce_file_format=True)
    scan = scan_inputs(series)
    assert [item.path.name for item in scan.items] == ["b.dcm", "c.dcm", "a.dcm", "IM000009"]
    assert [round(float(read_image(item.path)[0, 0, 0]) * 255) for item in scan.items] == [10, 20, 30, 90]
    reasons = dict((path.name, reason) for path, reason in scan.skipped)
    assert "without pixel data" in reasons["report.dcm"] and "notes.txt" in reasons


def test_without_instance_numbers_the_file_name_orders_and_frames_expand(tmp_path):
    write_dicom(tmp_path / "2.dcm", np.zeros((2, 2), np.uint8))
    write_dicom(tmp_path / "1.dcm", np.zeros((2, 2, 2), np.uint8), frames=2)
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(tmp_path / "1.png")
    names = [item.name for item in scan_inputs(tmp_path).items]
    assert names == ["1#000", "1#001", "1.png", "2.dcm"]


def test_a_file_without_a_suffix_given_directly_is_recognised_by_its_preamble(tmp_path):
    path = write_dicom(tmp_path / "1.2.840.5", np.full((2, 2), 255, np.uint8))
    (item,) = scan_inputs(path).items
    assert str(item.output_stem) == "1.2.840.5"  # a UID-named file keeps its whole name
    assert read_image(path)[0, 0, 0] == 1.0


# ------------------------------------------------------------------ compressed syntaxes


def _encapsulated(tmp_path: Path, syntax: str, fragment: bytes, pixels=np.zeros((8, 8), np.uint8)) -> Path:
    ds = dicom_dataset(pixels)
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([fragment])
    ds["PixelData"].VR = "OB"
    path = tmp_path / "compressed.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.skipif(get_decoder(JPEGLosslessSV1).is_available, reason="a JPEG Lossless decoder is installed")
def test_a_compressed_syntax_without_a_decoder_names_the_syntax_and_the_packages(tmp_path):
    path = _encapsulated(tmp_path, JPEGLosslessSV1, b"\xff\xd8\xff\xd9")
    with pytest.raises(UserError) as error:
        scan_inputs(path)
    message = str(error.value)
    assert "JPEG Lossless" in message and "1.2.840.10008.1.2.4.70" in message
    assert "pip install pylibjpeg pylibjpeg-libjpeg" in message and "python-gdcm" in message
    with pytest.raises(UserError, match="no installed decoder"):
        read_image(path)


def test_rle_is_decoded_by_pydicom_itself(tmp_path):
    stored = np.arange(24, dtype=np.uint16).reshape(4, 6) * 1000
    ds = dicom_dataset(stored)
    ds.compress(RLELossless)
    ds.save_as(tmp_path / "rle.dcm", enforce_file_format=True)
    np.testing.assert_allclose(read_image(tmp_path / "rle.dcm")[:, :, 0], stored / 65535, atol=1e-6)


@pytest.mark.skipif(not get_decoder(JPEGBaseline8Bit).is_available, reason="no JPEG baseline decoder")
def test_jpeg_baseline_is_decoded_by_an_installed_plugin(tmp_path):
    import io

    gray = np.tile(np.linspace(0, 255, 16, dtype=np.uint8), (16, 1))
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, format="JPEG", quality=95)
    image = read_image(_encapsulated(tmp_path, JPEGBaseline8Bit, buffer.getvalue(), gray))
    assert np.abs(image[:, :, 0] - gray / 255.0).max() < 0.05  # lossy, but the same picture


# ------------------------------------------------------------------ bad files


def test_no_pixel_data_truncated_and_corrupt_files_give_one_clear_error(tmp_path):
    ds = dicom_dataset(np.zeros((2, 2), np.uint8))
    del ds.PixelData
    ds.save_as(tmp_path / "sr.dcm", enforce_file_format=True)
    with pytest.raises(UserError, match="without pixel data"):
        scan_inputs(tmp_path / "sr.dcm")
    good = write_dicom(tmp_path / "good.dcm", np.arange(10000, dtype=np.uint16).reshape(100, 100)).read_bytes()
    (tmp_path / "cut.dcm").write_bytes(good[: len(good) - 5000])
    with pytest.raises(UserError, match=r"cut\.dcm: "):
        read_image(tmp_path / "cut.dcm")
    (tmp_path / "junk.dcm").write_bytes(b"\x00" * 10 + b"not dicom at all")
    with pytest.raises(UserError, match="not a DICOM file"):
        scan_inputs(tmp_path / "junk.dcm")
    (tmp_path / "fake.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\xff" * 50)
    with pytest.raises(UserError, match=r"fake\.dcm: "):
        read_image(tmp_path / "fake.dcm")


def test_a_forged_frame_count_is_refused(tmp_path):
    path = write_dicom(tmp_path / "many.dcm", np.zeros((2, 2), np.uint8), frames=dicom.MAX_FRAMES + 1)
    with pytest.raises(UserError, match="frames, more than"):
        scan_inputs(path)


def test_the_install_hint_reads_pydicoms_list_of_missing_plugins():
    hint = dicom.install_hint(["gdcm - requires gdcm>=3.0.10", "pylibjpeg - requires pylibjpeg>=2.0 and pylibjpeg-libjpeg>=2.1", "pyjpegls - requires numpy and pyjpegls>=1.2"])
    assert hint == "pip install python-gdcm, or pip install pylibjpeg pylibjpeg-libjpeg, or pip install pyjpegls"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(flips=st.lists(st.tuples(st.integers(0, 2000), st.integers(1, 255)), max_size=6), cut=st.integers(0, 600))
def test_damaged_dicom_bytes_give_images_or_one_user_error(tmp_path_factory, flips, cut):
    folder = tmp_path_factory.mktemp("dicom")
    ds = dicom_dataset(np.arange(2 * 6 * 5, dtype=np.uint16).reshape(2, 6, 5), frames=2, RescaleSlope=2, RescaleIntercept=-5, WindowCenter=30, WindowWidth=40, PixelSpacing=[1, 1])
    ds.save_as(folder / "a.dcm", enforce_file_format=True)
    data = bytearray((folder / "a.dcm").read_bytes())
    for position, value in flips:
        if position < len(data):
            data[position] ^= value
    (folder / "a.dcm").write_bytes(bytes(data[: max(0, len(data) - cut)]))
    try:
        for item in scan_inputs(folder / "a.dcm").items:
            tensor, display = load_input(item, Preprocess(channels=1, mean=(0.0,), std=(1.0,), resize=8, crop=8))
            assert tuple(tensor.shape) == (1, 8, 8) and np.isfinite(display).all() and 0 <= display.min() <= display.max() <= 1
    except UserError as exc:
        assert str(exc).startswith(str(folder / "a.dcm")), exc
