"""Light and dark themes are both readable: every text colour against its background passes WCAG 2's
4.5:1 contrast ratio (https://www.w3.org/TR/WCAG21/#contrast-minimum), the untrained mark included."""

from __future__ import annotations

import pytest
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

ROLE = QPalette.ColorRole
PAIRS = (
    (ROLE.WindowText, ROLE.Window),  # labels, hints, cell footers (the style sheet uses window-text)
    (ROLE.Text, ROLE.Base),  # lists, trees, fields
    (ROLE.ButtonText, ROLE.Button),
    (ROLE.HighlightedText, ROLE.Highlight),
    (ROLE.BrightText, ROLE.Window),  # the UNTRAINED mark
    (ROLE.BrightText, ROLE.Base),
)


def luminance(colour: QColor) -> float:
    """WCAG relative luminance of an sRGB colour."""

    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    return 0.2126 * linear(colour.redF()) + 0.7152 * linear(colour.greenF()) + 0.0722 * linear(colour.blueF())


def contrast(a: QColor, b: QColor) -> float:
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_the_contrast_formula_matches_known_values():
    assert contrast(QColor("#000000"), QColor("#ffffff")) == pytest.approx(21.0)
    assert contrast(QColor("#777777"), QColor("#ffffff")) == pytest.approx(4.48, abs=0.01)


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_every_text_colour_is_readable_in_both_themes(make_window, theme):
    window = make_window()
    try:
        window.habits.set_theme(theme, save=False)
        palette = QApplication.palette()
        for text, background in PAIRS:
            ratio = contrast(palette.color(text), palette.color(background))
            assert ratio >= 4.5, f"{theme}: {text.name} on {background.name} has contrast {ratio:.2f}"
        style = window.styleSheet()
        assert "#555" not in style and "color: gray" not in style  # fixed greys vanish on the dark theme
    finally:
        window.habits.set_theme("light", save=False)
