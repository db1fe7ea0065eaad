"""Property tests: whatever bytes a user's image or table file holds, the loaders either return a
sane result or raise UserError (one clear line), never another exception. Bounded in time."""

from __future__ import annotations

import io

import numpy as np
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from engine.core.errors import UserError
from engine.io.images import load_input, read_image
from engine.io.preprocess import Preprocess
from engine.io.tables import load_table
from engine.tabular import prepare

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
HEADERS = [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"BM", b"II*\x00", b"MM\x00*", b"GIF89a"]


def _valid_png(width: int, height: int, mode: str) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, format="PNG")
    return buffer.getvalue()


@FUZZ
@given(header=st.sampled_from(HEADERS), body=st.binary(max_size=2048))
def test_any_bytes_as_an_image_give_an_image_or_a_user_error(tmp_path_factory, header, body):
    path = tmp_path_factory.mktemp("img") / "input.png"
    path.write_bytes(header + body)
    try:
        image = read_image(path)
    except UserError as exc:
        assert str(exc).startswith(str(path))
        return
    assert image.ndim == 3 and image.shape[2] in (1, 3) and np.isfinite(image).all()
    assert image.min() >= 0 and image.max() <= 1


@FUZZ
@given(width=st.integers(1, 40), height=st.integers(1, 40), mode=st.sampled_from(["L", "RGB", "RGBA", "I;16", "1", "P"]), cut=st.integers(0, 400), flip=st.integers(0, 400))
def test_truncated_or_damaged_real_images_give_an_image_or_a_user_error(tmp_path_factory, width, height, mode, cut, flip):
    data = bytearray(_valid_png(width, height, mode))
    if flip < len(data):
        data[flip] ^= 0xFF
    data = bytes(data[: max(0, len(data) - cut)])
    path = tmp_path_factory.mktemp("img") / "damaged.png"
    path.write_bytes(data)
    try:
        tensor, display = load_input(path, Preprocess(resize=16, crop=16, channels=3))
    except UserError:
        return
    assert tuple(tensor.shape) == (3, 16, 16) and np.isfinite(display).all()


CELL = st.one_of(st.integers(-10**6, 10**6).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr), st.text(alphabet="ab,;\t\"'\n x1.-", max_size=6), st.just(""))


@FUZZ
@given(
    header=st.lists(st.text(alphabet="abcxyz_ ,;\"", min_size=0, max_size=5), min_size=1, max_size=5),
    rows=st.lists(st.lists(CELL, min_size=1, max_size=6), max_size=12),
    sep=st.sampled_from([",", ";", "\t"]),
)
def test_any_csv_gives_a_table_or_a_user_error_and_prepare_too(tmp_path_factory, header, rows, sep):
    text = "\n".join(sep.join(row) for row in [header, *rows]) + "\n"
    path = tmp_path_factory.mktemp("tab") / "table.csv"
    path.write_text(text, encoding="utf-8")
    try:
        table = load_table(path)
    except UserError:
        return
    assert table.n_rows >= 1 and len(table.columns) >= 2
    target = table.columns[-1].name
    try:
        data = prepare(table, target, missing="drop")
    except UserError:
        return
    assert np.isfinite(data.x).all() and len(data.x) == len(data.y)


@FUZZ
@given(body=st.binary(max_size=1024))
@example(body=b"\r\x00")  # a lone carriage return before a NUL: the csv module's header read raised
def test_any_bytes_as_a_table_give_a_table_or_a_user_error(tmp_path_factory, body):
    path = tmp_path_factory.mktemp("tab") / "table.csv"
    path.write_bytes(body)
    try:
        load_table(path)
    except UserError:
        pass
