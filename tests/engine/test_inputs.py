"""Preprocessed .npy inputs, scanning folders and ImageFolders, and preprocessing."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from engine.core.errors import UserError
from engine.io.images import InputItem, load_input, read_tensor, scan_inputs
from engine.io.preprocess import IMAGENET_MEAN, IMAGENET_STD, LUMA, Preprocess, display_from_tensor
from tests.engine.imaging import COLOURS, EXACT, NO_PREPROCESS, blocks


def test_read_tensor_uses_a_chw_float_array_as_is(tmp_path):
    array = np.random.default_rng(2).normal(size=(3, 5, 7)).astype(np.float32) * 10
    np.save(tmp_path / "x.npy", array)
    tensor = read_tensor(tmp_path / "x.npy")
    assert tensor.dtype == torch.float32
    assert torch.equal(tensor, torch.from_numpy(array))


def test_read_tensor_accepts_a_batch_of_one_and_other_real_dtypes(tmp_path):
    array = np.arange(2 * 4 * 4, dtype=np.float64).reshape(1, 2, 4, 4) / 7
    np.save(tmp_path / "batch.npy", array)
    assert torch.equal(read_tensor(tmp_path / "batch.npy"), torch.from_numpy(array[0].astype(np.float32)))
    np.save(tmp_path / "int.npy", np.arange(12, dtype=np.int16).reshape(3, 2, 2))
    assert read_tensor(tmp_path / "int.npy").flatten().tolist() == [float(v) for v in range(12)]
    np.save(tmp_path / "bigendian.npy", np.full((1, 2, 2), 0.5, dtype=">f4"))
    assert read_tensor(tmp_path / "bigendian.npy").flatten().tolist() == [0.5] * 4


@pytest.mark.parametrize("shape", [(4, 4), (2, 3, 4, 4), (1, 1, 3, 4, 4), (12,)])
def test_read_tensor_refuses_wrong_ndim(tmp_path, shape):
    np.save(tmp_path / "x.npy", np.zeros(shape, dtype=np.float32))
    with pytest.raises(UserError, match="C x H x W"):
        read_tensor(tmp_path / "x.npy")


@pytest.mark.parametrize(
    "array",
    [
        np.full((3, 2, 2), "a"),
        np.zeros((3, 2, 2), dtype=np.complex64),
        np.zeros((3, 2, 2), dtype=[("x", "f4")]),
        np.ones((3, 2, 2), dtype=bool),
    ],
    ids=["str", "complex", "structured", "bool"],
)
def test_read_tensor_refuses_non_numeric_values(tmp_path, array):
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(UserError, match="expected real numbers"):
        read_tensor(tmp_path / "x.npy")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e300])
def test_read_tensor_refuses_nan_infinite_and_float32_overflow(tmp_path, bad):
    array = np.zeros((3, 2, 2), dtype=np.float64)
    array[1, 1, 0] = bad
    np.save(tmp_path / "x.npy", array)
    with pytest.raises(UserError, match="NaN or infinite"):
        read_tensor(tmp_path / "x.npy")


def test_read_tensor_refuses_an_empty_array(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 0, 4), dtype=np.float32))
    with pytest.raises(UserError, match="empty"):
        read_tensor(tmp_path / "x.npy")


class _Tripwire:
    """Unpickling this creates a folder: proof that a file was unpickled."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_pickled_object_arrays_are_refused_never_unpickled(tmp_path):
    marker = tmp_path / "unpickled"
    array = np.empty((1, 1, 1), dtype=object)
    array[0, 0, 0] = _Tripwire(marker)
    np.save(tmp_path / "object.npy", array, allow_pickle=True)
    with open(tmp_path / "plain_pickle.npy", "wb") as handle:
        pickle.dump(_Tripwire(marker), handle)
    for name in ("object.npy", "plain_pickle.npy"):
        with pytest.raises(UserError, match="not a readable .npy"):
            read_tensor(tmp_path / name)
        assert not marker.exists()
    # The tripwire itself works: unpickling on purpose does create the folder.
    np.load(tmp_path / "object.npy", allow_pickle=True)
    assert marker.is_dir()


def test_npz_archive_named_npy_is_refused(tmp_path):
    with open(tmp_path / "archive.npy", "wb") as handle:
        np.savez(handle, x=np.zeros((3, 2, 2), dtype=np.float32))
    with pytest.raises(UserError, match="npz"):
        read_tensor(tmp_path / "archive.npy")


def test_unreadable_npy_files_raise_user_error(tmp_path):
    np.save(tmp_path / "good.npy", np.zeros((3, 8, 8), dtype=np.float32))
    data = (tmp_path / "good.npy").read_bytes()
    (tmp_path / "truncated.npy").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.npy").write_bytes(b"")
    (tmp_path / "text.npy").write_text("1 2 3\n")
    (tmp_path / "folder.npy").mkdir()
    for name in ("truncated.npy", "empty.npy", "text.npy", "folder.npy", "missing.npy"):
        with pytest.raises(UserError) as info:
            read_tensor(tmp_path / name)
        assert name in str(info.value)


# ------------------------------------------------------------------ scanning inputs


def write_png(path: Path, value: int = 128, size: tuple[int, int] = (8, 8)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("L", size, value).save(path, "PNG")
    return path


def test_scan_single_file(tmp_path):
    image = write_png(tmp_path / "one.png")
    scan = scan_inputs(image)
    assert scan.layout == "file" and scan.root == image
    assert [(i.path, i.relative, i.label, i.mask) for i in scan.items] == [(image, Path("one.png"), None, None)]
    assert scan.classes == [] and scan.skipped == []


def test_scan_single_file_with_mask_and_tensor(tmp_path):
    image = write_png(tmp_path / "one.png")
    mask = write_png(tmp_path / "one_mask.png", 255)
    assert scan_inputs(image).items[0].mask == mask
    np.save(tmp_path / "t.npy", np.zeros((3, 2, 2), dtype=np.float32))
    item = scan_inputs(tmp_path / "t.npy").items[0]
    assert item.is_tensor and not scan_inputs(image).items[0].is_tensor


def test_scan_single_file_with_unsupported_suffix(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(UserError, match="unsupported file type '.txt'"):
        scan_inputs(tmp_path / "notes.txt")


def test_scan_flat_folder_sorted_with_skips_and_hidden_files_ignored(tmp_path):
    write_png(tmp_path / "c.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    np.save(tmp_path / "b.npy", np.zeros((3, 2, 2), dtype=np.float32))
    write_png(tmp_path / "d.PNG")
    write_png(tmp_path / ".hidden.png")
    (tmp_path / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "notes.txt").write_text("hi")
    (tmp_path / "README").write_text("hi")
    (tmp_path / "empty_sub").mkdir()
    scan = scan_inputs(tmp_path)
    assert scan.layout == "folder" and scan.classes == []
    assert [i.relative for i in scan.items] == [Path("a.jpg"), Path("b.npy"), Path("c.png"), Path("d.PNG")]
    assert all(i.label is None and i.mask is None for i in scan.items)
    assert [i.path.name for i in scan.items if i.is_tensor] == ["b.npy"]
    assert [(p.name, reason) for p, reason in scan.skipped] == [
        ("README", "unsupported file type '(none)'"),
        ("notes.txt", "unsupported file type '.txt'"),
    ]


def test_scan_masks_are_attached_and_not_inputs(tmp_path):
    write_png(tmp_path / "a.png")
    write_png(tmp_path / "a_mask.png", 255)
    write_png(tmp_path / "b.png")
    np.save(tmp_path / "c.npy", np.zeros((3, 2, 2), dtype=np.float32))
    write_png(tmp_path / "c_mask.png", 255)
    scan = scan_inputs(tmp_path)
    assert {i.path.name: (i.mask.name if i.mask else None) for i in scan.items} == {"a.png": "a_mask.png", "b.png": None, "c.npy": "c_mask.png"}


def test_scan_imagefolder(tmp_path):
    write_png(tmp_path / "dog" / "3.png")
    write_png(tmp_path / "cat" / "2.png")
    write_png(tmp_path / "cat" / "1.png")
    write_png(tmp_path / "cat" / "1_mask.png", 255)
    (tmp_path / "cat" / "labels.csv").write_text("x")
    write_png(tmp_path / ".cache" / "x.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "only_masks").mkdir()
    write_png(tmp_path / "only_masks" / "z_mask.png")
    write_png(tmp_path / "loose.png")
    scan = scan_inputs(tmp_path)
    assert scan.layout == "imagefolder"
    assert scan.classes == ["cat", "dog"]
    assert [(i.relative.as_posix(), i.label) for i in scan.items] == [("cat/1.png", "cat"), ("cat/2.png", "cat"), ("dog/3.png", "dog"), ("loose.png", None)]
    assert scan.items[0].mask == tmp_path / "cat" / "1_mask.png"
    assert scan.items[1].mask is None
    assert [(p.relative_to(tmp_path).as_posix(), reason) for p, reason in scan.skipped] == [("cat/labels.csv", "unsupported file type '.csv'")]


def test_scan_refuses_empty_folder_folder_without_inputs_and_missing_path(tmp_path):
    with pytest.raises(UserError, match="no images"):
        scan_inputs(tmp_path)
    (tmp_path / "notes.txt").write_text("hi")
    write_png(tmp_path / ".hidden.png")
    with pytest.raises(UserError, match="no images"):
        scan_inputs(tmp_path)
    with pytest.raises(UserError, match="no such file"):
        scan_inputs(tmp_path / "missing")


# ------------------------------------------------------------------ load_input and Preprocess


def test_load_input_resizes_shorter_side_and_centre_crops(tmp_path):
    path = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(path)
    tensor, display = load_input(path, Preprocess(resize=32, crop=24))
    assert tuple(tensor.shape) == (3, 24, 24) and display.shape == (24, 24, 3)
    tensor, display = load_input(InputItem(path, Path("wide.png")), Preprocess(resize=20, crop=None))
    assert tuple(tensor.shape) == (3, 20, 30) and display.shape == (20, 30, 3)
    tall = tmp_path / "tall.png"
    Image.new("RGB", (30, 50)).save(tall)
    assert tuple(load_input(tall, Preprocess(resize=15, crop=None))[0].shape) == (3, 25, 15)


def test_load_input_display_is_the_unnormalised_image(tmp_path):
    pixels = np.random.default_rng(4).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(pixels).save(path)
    tensor, display = load_input(path, Preprocess(resize=None, crop=None))
    np.testing.assert_allclose(display, pixels / 255.0, atol=EXACT)
    mean, std = np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)
    np.testing.assert_allclose(tensor.permute(1, 2, 0).numpy(), (pixels / 255.0 - mean) / std, atol=1e-5)


def test_gray_to_three_channels_repeats(tmp_path):
    pixels = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    path = tmp_path / "gray.png"
    Image.fromarray(pixels).save(path)
    tensor, display = load_input(path, Preprocess(channels=3, **NO_PREPROCESS))
    assert tuple(tensor.shape) == (3, 8, 8) and display.shape == (8, 8, 3)
    for channel in range(3):
        np.testing.assert_allclose(tensor[channel].numpy(), pixels / 255.0, atol=EXACT)


def test_rgb_to_one_channel_uses_luma_weights(tmp_path):
    assert LUMA == (0.299, 0.587, 0.114)
    pixels = blocks(COLOURS).astype(np.uint8)
    path = tmp_path / "rgb.png"
    Image.fromarray(pixels).save(path)
    tensor, display = load_input(path, Preprocess(channels=1, **NO_PREPROCESS))
    assert tuple(tensor.shape) == (1, 16, 16) and display.shape == (16, 16, 1)
    expected = (pixels / 255.0) @ np.array([0.299, 0.587, 0.114])
    np.testing.assert_allclose(tensor[0].numpy(), expected, atol=EXACT)
    assert tensor[0, 0, 0].item() == pytest.approx(0.299, abs=EXACT)  # pure red


def test_gray_with_one_channel_model_passes_through(tmp_path):
    path = write_png(tmp_path / "g.png", 51)
    tensor, _ = load_input(path, Preprocess(channels=1, resize=None, crop=None, mean=(0.5,), std=(0.25,)))
    assert tuple(tensor.shape) == (1, 8, 8)
    assert torch.allclose(tensor, torch.full((1, 8, 8), (0.2 - 0.5) / 0.25), atol=1e-6)


def test_normalisation_is_exact_for_a_constant_image(tmp_path):
    colour = (51, 102, 204)
    path = tmp_path / "flat.png"
    Image.new("RGB", (20, 16), colour).save(path)
    expected = (np.array(colour) / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    for preprocess, size in ((Preprocess(resize=None, crop=None), (16, 20)), (Preprocess(), (224, 224))):
        tensor, display = load_input(path, preprocess)
        assert tuple(tensor.shape) == (3, *size)
        for channel in range(3):
            assert torch.allclose(tensor[channel], torch.full(size, float(expected[channel])), atol=1e-5), channel
        np.testing.assert_allclose(display, np.broadcast_to(np.array(colour) / 255.0, (*size, 3)), atol=1e-6)


def test_npy_inputs_bypass_preprocessing(tmp_path):
    array = np.random.default_rng(5).normal(size=(3, 5, 7)).astype(np.float32) * 4
    np.save(tmp_path / "x.npy", array)
    tensor, display = load_input(InputItem(tmp_path / "x.npy", Path("x.npy")), Preprocess())  # would resize to 224 otherwise
    assert torch.equal(tensor, torch.from_numpy(array))
    assert display.shape == (5, 7, 3) and display.dtype == np.float32
    assert display.min() == 0.0 and display.max() == 1.0
    expected = (np.moveaxis(array, 0, -1) - array.min()) / (array.max() - array.min())
    np.testing.assert_allclose(display, expected, atol=1e-6)


def test_npy_channel_mismatch_raises_user_error(tmp_path):
    np.save(tmp_path / "one.npy", np.zeros((1, 4, 4), dtype=np.float32))
    np.save(tmp_path / "three.npy", np.zeros((3, 4, 4), dtype=np.float32))
    with pytest.raises(UserError, match="1 channel"):
        load_input(tmp_path / "one.npy", Preprocess(channels=3))
    with pytest.raises(UserError, match="3 channel"):
        load_input(tmp_path / "three.npy", Preprocess(channels=1, mean=(0.5,), std=(0.5,)))
    assert tuple(load_input(tmp_path / "one.npy", Preprocess(channels=1, mean=(0.5,), std=(0.5,)))[0].shape) == (1, 4, 4)


def test_load_input_of_unreadable_files_raises_user_error(tmp_path):
    (tmp_path / "bad.png").write_text("nope")
    for path in (tmp_path / "bad.png", tmp_path / "missing.jpg", tmp_path / "missing.npy"):
        with pytest.raises(UserError):
            load_input(path, Preprocess())


@pytest.mark.parametrize(
    "settings_, message",
    [
        (dict(std=(0.0, 1.0, 1.0)), "std"),
        (dict(std=(-1.0,)), "std"),
        (dict(std=(float("nan"),)), "std"),
        (dict(std=(float("inf"),)), "std"),
        (dict(mean=(float("nan"),)), "mean"),
        (dict(mean=(0.5, 0.5)), "mean has 2 values"),
        (dict(std=(1.0, 1.0, 1.0, 1.0)), "std has 4 values"),
        (dict(channels=1), "mean has 3 values"),
        (dict(channels=2), "1 or 3 input channels"),
        (dict(channels=0), "1 or 3 input channels"),
        (dict(resize=0), "resize"),
        (dict(crop=-5), "crop"),
        (dict(interpolation="lanczos"), "interpolation"),
    ],
)
def test_invalid_preprocess_settings_raise_user_error(settings_, message):
    with pytest.raises(UserError, match=message):
        Preprocess(**settings_)


def test_single_value_mean_and_std_broadcast():
    preprocess = Preprocess(resize=None, crop=None, mean=(0.5,), std=(0.5,), channels=3)
    tensor, _ = preprocess(np.ones((2, 2, 3), dtype=np.float32))
    assert torch.equal(tensor, torch.ones(3, 2, 2))


def test_preprocess_dict_round_trip():
    preprocess = Preprocess(resize=100, crop=90, mean=(0.1,), std=(0.2,), channels=1, interpolation="nearest")
    assert Preprocess.from_dict({**preprocess.to_dict(), "unknown": 1}) == preprocess
    assert Preprocess.from_dict({}) == Preprocess()


def test_from_torchvision_resnet18_preset():
    import torchvision

    preprocess = Preprocess.from_torchvision(torchvision.models.ResNet18_Weights.DEFAULT.transforms())
    assert (preprocess.resize, preprocess.crop, preprocess.channels, preprocess.interpolation) == (256, 224, 3, "bilinear")
    assert preprocess.mean == pytest.approx(IMAGENET_MEAN) and preprocess.std == pytest.approx(IMAGENET_STD)
    assert preprocess.mean == (0.485, 0.456, 0.406) and preprocess.std == (0.229, 0.224, 0.225)


def test_display_from_tensor_min_max_scales():
    tensor = torch.tensor([[[-2.0, 0.0], [2.0, 6.0]]])
    assert display_from_tensor(tensor)[:, :, 0].tolist() == [[0.0, 0.25], [0.5, 1.0]]
    assert display_from_tensor(torch.full((3, 2, 2), 7.0)).tolist() == np.zeros((2, 2, 3)).tolist()


@settings(max_examples=40, deadline=None)
@given(
    height=st.integers(1, 48),
    width=st.integers(1, 48),
    gray=st.booleans(),
    channels=st.sampled_from([1, 3]),
    resize=st.one_of(st.none(), st.integers(1, 40)),
    crop=st.one_of(st.none(), st.integers(1, 32)),
)
def test_preprocess_output_shape_for_random_sizes(height, width, gray, channels, resize, crop):
    image = np.random.default_rng(height * 100 + width).random((height, width, 1 if gray else 3), dtype=np.float32)
    preprocess = Preprocess(resize=resize, crop=crop, mean=(0.5,), std=(0.25,), channels=channels)
    tensor, display = preprocess(image)
    if crop is not None:
        expected = (crop, crop)
    elif resize is not None:
        short, long = min(height, width), max(height, width)
        other = int(resize * long / short)
        expected = (resize, other) if height <= width else (other, resize)
    else:
        expected = (height, width)
    assert tuple(tensor.shape) == (channels, *expected)
    assert display.shape == (*expected, channels)
    assert display.dtype == np.float32 and display.min() >= 0.0 and display.max() <= 1.0
    assert torch.allclose(tensor, (torch.from_numpy(np.ascontiguousarray(display)).permute(2, 0, 1) - 0.5) / 0.25)
