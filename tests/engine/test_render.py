"""engine/io/render.py: maps drawn over images with matplotlib's colour maps, by name."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from engine.core.errors import UserError
from engine.core.vocab import COLORMAPS, DIVERGING_COLORMAP, SEQUENTIAL_COLORMAP
from engine.io.render import colormap, colormap_name, overlay, save_overlay

BLACK = np.zeros((2, 2, 3), np.float32)


def test_a_one_signed_map_has_inferno_colours():
    # Known answers: matplotlib's inferno at 0, 0.25, 0.5 and 1 (#000004 ... #fcffa4).
    saliency = np.array([[0.0, 0.25], [0.5, 1.0]], np.float32)
    assert overlay(BLACK, saliency, alpha=1.0).tolist() == [[[0, 0, 4], [87, 16, 110]], [[188, 55, 84], [252, 255, 164]]]


def test_a_signed_map_is_diverging_and_white_at_zero():
    # Known answers: RdBu_r at its ends (#053061, #67001f) and in its near-white middle.
    saliency = np.array([[-2.0, 0.0, 2.0]], np.float32)
    assert overlay(np.zeros((1, 3, 3)), saliency, alpha=1.0).tolist() == [[[5, 48, 97], [247, 246, 246], [103, 0, 31]]]


def test_a_named_map_replaces_the_default():
    # Known answers: viridis's ends (#440154, #fde725).
    assert overlay(np.zeros((1, 2, 3)), np.array([[0.0, 1.0]]), alpha=1.0, colormap="viridis").tolist() == [[[68, 1, 84], [253, 231, 37]]]


@pytest.mark.parametrize("name", [name for name in COLORMAPS if name != "auto"])
def test_every_offered_name_draws_matplotlibs_colours(name):
    values = np.random.default_rng(0).random((5, 7))
    expected = colormaps[name](values)[..., :3]
    assert np.array_equal(colormap(values, diverging=False, name=name), expected)
    drawn = overlay(np.zeros((5, 7, 3)), values, alpha=1.0, colormap=name).astype(int)
    scaled = (values - values.min()) / (values.max() - values.min())
    assert np.array_equal(drawn, (colormaps[name](scaled)[..., :3] * 255 + 0.5).astype(int))


def test_defaults_follow_the_sign_and_nan_shows_as_zero_would():
    assert colormap_name(None, diverging=False) == colormap_name("auto", diverging=False) == SEQUENTIAL_COLORMAP
    assert colormap_name(None, diverging=True) == DIVERGING_COLORMAP and colormap_name("gray", diverging=True) == "gray"
    colours = colormap(np.array([np.nan, 0.0, 0.5]), diverging=True)
    assert np.array_equal(colours[0], colours[2])  # a missing value of a signed map is drawn as zero
    assert np.array_equal(colormap(np.array([np.nan]), diverging=False)[0], colormaps[SEQUENTIAL_COLORMAP](0.0)[:3])


def test_blending_over_the_image_and_saving(tmp_path):
    white = np.ones((1, 2, 3), np.float32)
    drawn = overlay(white, np.array([[0.0, 1.0]]), alpha=0.5)
    expected = (np.clip(0.5 + 0.5 * colormaps["inferno"](np.array([0.0, 1.0]))[:, :3], 0, 1) * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(drawn[0], expected)
    save_overlay(tmp_path / "map.png", white, np.array([[0.0, 1.0]]), alpha=1.0, colormap="gray")
    with Image.open(tmp_path / "map.png") as png:
        assert np.asarray(png).tolist() == [[[0, 0, 0], [255, 255, 255]]]


def test_an_unknown_name_is_a_user_error():
    with pytest.raises(UserError, match="unknown colour map 'rainbowish'"):
        overlay(BLACK, np.ones((2, 2)), colormap="rainbowish")
