"""Decoding images and .npy tensors, scanning input folders and preprocessing (engine/data.py, engine/preprocess.py)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from engine.core.errors import UserError
from engine.io.images import image_to_array, read_image
from tests.engine.imaging import COLOURS, EXACT, EXT, JPEG_TOL, blocks, check, palette_image, save, unit

GRAY = [[0, 128], [255, 64]]


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "JPEG"])
def test_8bit_gray_decodes_to_one_channel_k_over_255(tmp_path, fmt):
    pixels = blocks(GRAY).astype(np.uint8)
    path = save(Image.fromarray(pixels), tmp_path, "gray", fmt)
    decoded = read_image(path)
    check(decoded, unit(pixels)[:, :, None], JPEG_TOL if fmt == "JPEG" else EXACT)
    if fmt != "JPEG":
        assert decoded[0, 8, 0] == pytest.approx(128 / 255, abs=EXACT)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "JPEG"])
def test_8bit_rgb_decodes_to_three_channels(tmp_path, fmt):
    pixels = blocks(COLOURS).astype(np.uint8)
    path = save(Image.fromarray(pixels, mode="RGB"), tmp_path, "rgb", fmt)
    check(read_image(path), unit(pixels), JPEG_TOL if fmt == "JPEG" else EXACT)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "JPEG"])
def test_bilevel_mode_1_decodes_to_black_and_white(tmp_path, fmt):
    bits = blocks([[0, 1], [1, 0]]).astype(bool)
    image = Image.new("1", bits.shape[::-1])
    image.putdata([255 if b else 0 for b in bits.ravel()])
    path = save(image, tmp_path, "bilevel", fmt)
    check(read_image(path), bits.astype(np.float64)[:, :, None], JPEG_TOL if fmt == "JPEG" else 0.0)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_gray_with_alpha_is_composited_on_white(tmp_path, fmt):
    # (gray, alpha): opaque black, fully transparent black, opaque 128, half-transparent 100.
    pixels = np.array([[[0, 255], [0, 0]], [[128, 255], [100, 128]]], dtype=np.uint8)
    path = save(Image.fromarray(pixels, mode="LA"), tmp_path, "la", fmt)
    half = 100 * 128 / 255 + 255 * (1 - 128 / 255)
    check(read_image(path), unit([[[0], [255]], [[128], [half]]]), 1.01 / 255)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_rgba_transparent_pixels_become_white(tmp_path, fmt):
    pixels = np.array([[[255, 0, 0, 255], [0, 0, 0, 0]], [[0, 0, 255, 128], [10, 20, 30, 255]]], dtype=np.uint8)
    path = save(Image.fromarray(pixels, mode="RGBA"), tmp_path, "rgba", fmt)
    over_white = 255 * (1 - 128 / 255)
    expected = unit([[[255, 0, 0], [255, 255, 255]], [[over_white, over_white, 255], [10, 20, 30]]])
    decoded = read_image(path)
    check(decoded, expected, 1.01 / 255)
    assert decoded[0, 1].tolist() == [1.0, 1.0, 1.0]


def test_rgba_bmp_decodes_to_rgb(tmp_path):
    pixels = np.zeros((8, 8, 4), dtype=np.uint8)
    pixels[..., :3] = (10, 200, 30)
    pixels[..., 3] = 255
    path = save(Image.fromarray(pixels, mode="RGBA"), tmp_path, "rgba", "BMP")
    check(read_image(path), np.broadcast_to(unit([10, 200, 30]), (8, 8, 3)), EXACT)


PALETTE = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (10, 20, 30)]


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_palette_colours_decode_to_the_palettes_rgb(tmp_path, fmt):
    indices = np.array([[0, 1, 2, 3], [3, 2, 1, 0]])
    path = save(palette_image(indices, PALETTE), tmp_path, "palette", fmt)
    with Image.open(path) as reopened:
        assert reopened.mode == "P"
    expected = unit([[PALETTE[i] for i in row] for row in indices])
    check(read_image(path), expected, EXACT)


def test_palette_with_transparent_index_composites_on_white(tmp_path):
    indices = np.array([[0, 1], [2, 3]])
    path = save(palette_image(indices, PALETTE), tmp_path, "palette_t", "PNG", transparency=1)
    with Image.open(path) as reopened:
        assert reopened.mode == "P" and reopened.info.get("transparency") == 1
    check(read_image(path), unit([[PALETTE[0], (255, 255, 255)], [PALETTE[2], PALETTE[3]]]), EXACT)


def test_palette_with_per_entry_alpha_composites_on_white(tmp_path):
    indices = np.array([[0, 1], [2, 3]])
    # Entry 0 opaque, entry 1 fully transparent, entry 2 half transparent, entry 3 opaque.
    path = save(palette_image(indices, PALETTE), tmp_path, "palette_a", "PNG", transparency=bytes([255, 0, 128, 255]))
    over_white = 255 * (1 - 128 / 255)
    expected = unit([[PALETTE[0], (255, 255, 255)], [(over_white, over_white, 255), PALETTE[3]]])
    check(read_image(path), expected, 1.01 / 255)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_gray_maps_full_scale_to_one(tmp_path, fmt):
    values = np.array([[0, 65535], [32768, 1000]], dtype=np.uint16)
    path = save(Image.fromarray(values), tmp_path, "gray16", fmt)
    with Image.open(path) as reopened:
        assert reopened.mode.startswith("I")
    decoded = read_image(path)
    check(decoded, values.astype(np.float64)[:, :, None] / 65535.0, EXACT)
    assert decoded[0, 1, 0] == 1.0
    assert decoded[1, 0, 0] == pytest.approx(0.5, abs=1e-4)


def test_32bit_int_tiff_within_16bit_range_is_scaled_by_65535(tmp_path):
    values = np.array([[0, 65535], [32768, 255]], dtype=np.int32)
    path = save(Image.fromarray(values), tmp_path, "int32", "TIFF")
    with Image.open(path) as reopened:
        assert reopened.mode == "I"
    check(read_image(path), values.astype(np.float64)[:, :, None] / 65535.0, EXACT)


def test_32bit_int_tiff_outside_16bit_range_is_min_max_scaled(tmp_path):
    values = np.array([[-100, 0], [100, 199_900]], dtype=np.int32)
    path = save(Image.fromarray(values), tmp_path, "int32", "TIFF")
    expected = (values.astype(np.float64) + 100) / 200_000
    check(read_image(path), expected[:, :, None], EXACT)


def test_float_tiff_in_unit_range_is_used_as_is(tmp_path):
    values = np.array([[0.0, 0.25], [0.5, 1.0]], dtype=np.float32)
    path = save(Image.fromarray(values), tmp_path, "float", "TIFF")
    with Image.open(path) as reopened:
        assert reopened.mode == "F"
    check(read_image(path), values[:, :, None].astype(np.float64), 0.0)


def test_float_tiff_outside_unit_range_is_min_max_scaled(tmp_path):
    values = np.array([[-1.0, 0.0], [1.0, 3.0]], dtype=np.float32)
    path = save(Image.fromarray(values), tmp_path, "float", "TIFF")
    check(read_image(path), np.array([[0.0, 0.25], [0.5, 1.0]])[:, :, None], EXACT)


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_decodes_to_rgb(tmp_path, fmt):
    rgb = blocks([[(255, 0, 0), (0, 255, 0)], [(0, 0, 255), (255, 255, 255)]]).astype(np.uint8)
    path = save(Image.fromarray(rgb, mode="RGB").convert("CMYK"), tmp_path, "cmyk", fmt)
    with Image.open(path) as reopened:
        assert reopened.mode == "CMYK"
    check(read_image(path), unit(rgb), JPEG_TOL if fmt == "JPEG" else EXACT)


def test_multi_frame_tiff_uses_the_first_frame(tmp_path):
    frames = [Image.fromarray(np.full((8, 8), value, dtype=np.uint8)) for value in (10, 200, 90)]
    path = tmp_path / "stack.tif"
    frames[0].save(path, "TIFF", save_all=True, append_images=frames[1:])
    with Image.open(path) as reopened:
        assert reopened.n_frames == 3
    check(read_image(path), np.full((8, 8, 1), 10 / 255), EXACT)


def test_content_not_suffix_decides_the_format(tmp_path):
    pixels = blocks(COLOURS).astype(np.uint8)
    path = tmp_path / "actually_a_png.jpg"
    Image.fromarray(pixels).save(path, "PNG")
    check(read_image(path), unit(pixels), EXACT)


def test_image_to_array_of_an_unusual_mode_gives_rgb():
    # HSV (and any other mode) goes through Pillow's RGB conversion.
    rgb = Image.fromarray(np.array([[[255, 0, 0], [0, 0, 255]]], dtype=np.uint8))
    decoded = image_to_array(rgb.convert("HSV"))
    check(decoded, unit(np.asarray(rgb.convert("HSV").convert("RGB"))), EXACT)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pixels=arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12), st.just(3))))
def test_any_uint8_rgb_png_round_trips_to_k_over_255(tmp_path, pixels):
    path = tmp_path / "random.png"
    Image.fromarray(pixels, mode="RGB").save(path)
    decoded = read_image(path)
    assert decoded.dtype == np.float32 and decoded.shape == pixels.shape
    assert np.array_equal(decoded, pixels.astype(np.float32) / np.float32(255))


# ------------------------------------------------------------------ refusing bad files


def test_decompression_bomb_guard_stays_on(tmp_path, monkeypatch):
    small = save(Image.new("RGB", (8, 8)), tmp_path, "small", "PNG")  # 64 pixels
    warned = save(Image.new("RGB", (12, 12)), tmp_path, "warned", "PNG")  # 144 > limit: Pillow warns
    refused = save(Image.new("RGB", (16, 16)), tmp_path, "refused", "PNG")  # 256 > 2 x limit: Pillow raises
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert read_image(small).shape == (8, 8, 3)
    for path in (warned, refused):
        with pytest.raises(UserError, match="too large") as info:
            read_image(path)
        assert path.name in str(info.value)


def _valid_bytes(fmt: str) -> bytes:
    buffer = io.BytesIO()
    pixels = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name, content",
    [
        ("truncated.png", _valid_bytes("PNG")[: len(_valid_bytes("PNG")) // 2]),
        ("truncated.jpg", _valid_bytes("JPEG")[: len(_valid_bytes("JPEG")) // 2]),
        ("truncated.tif", _valid_bytes("TIFF")[: len(_valid_bytes("TIFF")) // 2]),
        ("truncated.bmp", _valid_bytes("BMP")[: len(_valid_bytes("BMP")) // 2]),
        ("text.png", b"this is not an image\n"),
        ("empty.png", b""),
        ("header_only.png", b"\x89PNG\r\n\x1a\n"),
    ],
)
def test_unreadable_files_raise_user_error(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(UserError) as info:
        read_image(path)
    assert name in str(info.value)


def test_missing_path_and_folder_raise_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_image(tmp_path / "nope.png")
    folder = tmp_path / "folder.png"
    folder.mkdir()
    with pytest.raises(UserError, match="folder"):
        read_image(folder)


@pytest.mark.filterwarnings("ignore::UserWarning:PIL.TiffImagePlugin")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fmt=st.sampled_from(sorted(EXT)), cut=st.floats(0.0, 1.0, exclude_max=True))
def test_any_prefix_of_a_valid_file_decodes_or_raises_user_error(tmp_path, fmt, cut):
    data = _valid_bytes(fmt)
    path = tmp_path / f"prefix{EXT[fmt]}"
    path.write_bytes(data[: int(len(data) * cut)])
    try:
        decoded = read_image(path)
    except UserError:
        return
    assert decoded.dtype == np.float32 and decoded.min() >= 0.0 and decoded.max() <= 1.0


# ------------------------------------------------------------------ .npy tensors
