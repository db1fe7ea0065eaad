"""Opening a session file someone else made: no code runs, no memory bomb goes off, and a bad file
changes nothing on screen. Driven through the window's own File > Open session path."""

from __future__ import annotations

import copy
import io
import json
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gui.session_file as session_file
from gui.session_file import SessionError, parse_session, read_session, write_session
from tests.gui.conftest import ENGINE_TIMEOUT_MS

METHODS = {"saliency", "gradcam", "local"}


class Payload:
    """Unpickling this creates a marker file: proof that a session made code run."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _state(map_shape=(4, 4)) -> tuple[dict, dict[str, np.ndarray]]:
    """A small valid session: one saliency map with its image and mask."""
    state = {
        "model": None,
        "data": None,
        "device": "cpu",
        "display": {"colormap": "viridis", "opacity": 40, "scale": 0, "mask": True, "follow": True},
        "table": None,
        "tabular_results": None,
        "cells": [
            {
                "method": "saliency",
                "params": {"reduce": "maxabs", "output": "logit"},
                "defaults": {"reduce": "maxabs", "output": "logit"},
                "target": None,
                "target_label": "",
                "input_name": "scan.png",
                "input_path": "",
                "explanation": {
                    **{"method": "saliency", "params": {"reduce": "maxabs"}, "target": 1, "predicted": 1},
                    **{"probability": 0.7, "target_probability": 0.7, "device": "cpu", "seed": 0, "elapsed_s": 0.01},
                },
                "extras": {},
                "array_extras": [],
                "folder": "cells/0",
            }
        ],
    }
    rng = np.random.default_rng(0)
    arrays = {
        "cells/0/map.npy": rng.random(map_shape).astype(np.float32),
        "cells/0/image.npy": rng.random((*map_shape, 3)).astype(np.float32),
        "cells/0/mask.npy": np.zeros(map_shape, bool),
    }
    return state, arrays


def _write(path, state, arrays):
    write_session(path, state, arrays)
    return path


@pytest.fixture
def window(make_window, qtbot, tmp_path):
    """A window showing one restored map, so that a refused session can be seen to change nothing."""
    window = make_window()
    qtbot.waitUntil(lambda: window.workspace.info is not None, timeout=ENGINE_TIMEOUT_MS)
    good = _write(tmp_path / "good.zip", *_state())
    with qtbot.waitSignal(window.session_restored, timeout=ENGINE_TIMEOUT_MS):
        window.session.open(good)
    assert len(window.grid.cells) == 1
    return window


def _open_refused(qtbot, window, path) -> str:
    before = [cell.explanation for cell in window.grid.cells]
    colormap, opacity = window.grid.colormap_box.currentText(), window.grid.opacity_slider.value()
    count = len(window.errors)
    window.session.open(path)
    qtbot.waitUntil(lambda: len(window.errors) > count, timeout=20000)
    title, message = window.errors[-1]
    assert title == "Cannot open the session"
    assert [cell.explanation for cell in window.grid.cells] == before  # the user's maps are still there
    assert (window.grid.colormap_box.currentText(), window.grid.opacity_slider.value()) == (colormap, opacity)
    return str(message)


@pytest.mark.parametrize("trust", [True, "false", 1])
def test_a_session_never_grants_trust_to_a_pickled_model(window, qtbot, tmp_path, monkeypatch, trust):
    marker = tmp_path / "payload-ran"
    evil = tmp_path / "evil.pt"
    torch.save(Payload(str(marker)), evil)
    asked = []
    monkeypatch.setattr(window.model_panel, "confirm_trust", lambda spec: asked.append(spec) or False)
    state, arrays = _state()
    state["model"] = {"spec": str(evil), "weights": "", "labels": "", "trust": trust}
    path = _write(tmp_path / "evil-session.zip", state, arrays)
    with qtbot.waitSignal(window.session_restored, timeout=ENGINE_TIMEOUT_MS):
        window.session.open(path)
    qtbot.waitUntil(lambda: bool(asked), timeout=ENGINE_TIMEOUT_MS)  # the user is asked, naming the file
    assert asked == [str(evil)]
    qtbot.wait(200)
    assert not marker.exists()  # refused: nothing was unpickled
    assert window.workspace.model is None or window.workspace.model.ref["spec"] != str(evil)


def test_a_saved_session_carries_no_trust(window, tmp_path):
    state, _ = window.session.state()
    path = tmp_path / "saved.zip"
    assert window.session.save(path)
    with zipfile.ZipFile(path) as archive:
        text = archive.read("session.json").decode()
    assert '"trust"' not in text and state["cells"]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (lambda s, a: s.update(display="x"), "'display' must be an object"),
        (lambda s, a: s.update(model="resnet18"), "'model' must be an object"),
        (lambda s, a: s["cells"][0].update(params="abc"), "'cells[].params' must be an object"),
        (lambda s, a: s["display"].update(opacity=1e30), "display.opacity"),
        (lambda s, a: s["display"].update(mask="false"), "display.mask"),
        (lambda s, a: s["cells"][0].update(method="dream"), "unknown method 'dream'"),
        (lambda s, a: a.update({"cells/0/map.npy": np.zeros((0, 0), np.float32)}), "at least 1 x 1"),
        (lambda s, a: a.update({"cells/0/map.npy": np.full((4, 4), np.nan, np.float32)}), "NaN"),
        (lambda s, a: a.update({"cells/0/image.npy": np.zeros((5, 4, 3), np.float32)}), "does not fit"),
        (lambda s, a: s["cells"][0]["explanation"].update(probability=float("inf")), "probability"),
        (lambda s, a: s["cells"][0].update(folder="../../etc"), "cells[].folder"),
        (lambda s, a: s.update(device="cuda; rm -rf /"), "'device'"),
    ],
)
def test_malformed_fields_are_refused_and_change_nothing(window, qtbot, tmp_path, change, words):
    state, arrays = _state()
    change(state, arrays)
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as archive:  # written by hand: write_session would refuse NaN in JSON
        archive.writestr("session.json", json.dumps({"format": "sensiscope-session", "version": 1, **state}))
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.save(buffer, array)
            archive.writestr(name, buffer.getvalue())
    assert words in _open_refused(qtbot, window, path)


def test_a_json_bomb_is_refused_before_it_is_decompressed(window, qtbot, tmp_path):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("session.json", '{"format": "sensiscope-session", "version": 1, "pad": "' + " " * (20 * 2**20) + '"}')
    assert path.stat().st_size < 200_000
    message = _open_refused(qtbot, window, path)
    assert "session.json" in message and "MiB" in message


def test_the_total_uncompressed_size_is_capped(window, qtbot, tmp_path, monkeypatch):
    monkeypatch.setattr(session_file, "MAX_SESSION_BYTES", 2 * 2**20)
    state, arrays = _state()
    for index in range(4):
        arrays[f"cells/0/extra_pad{index}.npy"] = np.zeros(2**18, np.float32)  # 1 MiB each
    message = _open_refused(qtbot, window, _write(tmp_path / "big.zip", state, arrays))
    assert "uncompressed" in message


def test_an_array_header_that_lies_about_its_size_is_refused(tmp_path):
    state, arrays = _state()
    path = _write(tmp_path / "s.zip", state, arrays)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (100000, 100000)})
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("cells/0/extra_huge.npy", header.getvalue() + b"\0" * 64)
    with pytest.raises(SessionError, match="declares"):
        read_session(path, METHODS)


def test_object_arrays_are_refused_without_unpickling(tmp_path):
    state, arrays = _state()
    path = _write(tmp_path / "s.zip", state, arrays)
    buffer = io.BytesIO()
    np.save(buffer, np.array([Payload(str(tmp_path / "ran"))], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr("cells/0/extra_obj.npy", buffer.getvalue())
    with pytest.raises(SessionError, match="Python objects"):
        read_session(path, METHODS)
    assert not (tmp_path / "ran").exists()


def test_a_good_session_round_trips(tmp_path):
    state, arrays = _state()
    session = read_session(_write(tmp_path / "s.zip", state, arrays), METHODS)
    assert session.display.colormap == "viridis" and session.display.opacity == 40
    assert np.array_equal(session.cells[0].explanation.map, arrays["cells/0/map.npy"])


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
FIELDS = ["model", "data", "device", "display", "table", "tabular_results", "cells", "version"]
CELL_FIELDS = ["method", "params", "defaults", "target", "target_label", "input_name", "input_path", "explanation", "extras", "array_extras", "folder"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(FIELDS + CELL_FIELDS), value=JSON)
def test_fuzzed_fields_give_a_session_or_a_session_error(field, value):
    state, arrays = _state()
    state = copy.deepcopy(state)
    target = state if field in FIELDS else state["cells"][0]
    target[field] = value
    state = json.loads(json.dumps({"format": "sensiscope-session", "version": 1, **state} if field != "version" else {"format": "sensiscope-session", **state}))
    try:
        session = parse_session(state, arrays, METHODS)
    except SessionError:
        return
    assert all(np.isfinite(cell.explanation.map).all() for cell in session.cells)
    assert isinstance(session.display.opacity, int) and 0 <= session.display.opacity <= 100


def test_exporting_maps_asks_before_replacing_a_users_file(window, qtbot, tmp_path, monkeypatch):
    folder = tmp_path / "export"
    folder.mkdir()
    cell = window.grid.cells[0]
    stem = f"cell{cell.cell_id}_saliency_scan"
    mine = folder / f"{stem}.png"
    mine.write_bytes(b"my figure")
    asked = []
    monkeypatch.setattr(window.session, "confirm_replace", lambda paths, where: asked.append(paths) or False)
    assert window.session.export_maps(folder) is None  # refused: nothing written
    assert asked == [[mine]] and mine.read_bytes() == b"my figure" and not (folder / f"{stem}.npy").exists()
    monkeypatch.setattr(window.session, "confirm_replace", lambda paths, where: True)
    job = window.session.export_maps(folder)
    with qtbot.waitSignal(job.signals.finished, timeout=20000):
        pass
    assert mine.read_bytes().startswith(b"\x89PNG")
    job = window.session.export_maps(folder)  # its own files now: replaced without asking
    with qtbot.waitSignal(job.signals.finished, timeout=20000):
        pass
