"""An HTML report of the session: one self-contained file (figures embedded as PNG) that opens in a
browser: every map as a figure with its parameters, the model and data, and the package versions.

Qt-free: it takes the figure panels and parameter records the export uses (gui/session.py).
"""

from __future__ import annotations

import base64
import tempfile
from html import escape
from pathlib import Path

STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 1100px; color: #1d1d1d; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
img { max-width: 100%; } table { border-collapse: collapse; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: left; vertical-align: top; }
.untrained { color: #b02a00; font-weight: bold; }
"""


def _figure_png(panel: dict, dpi: int) -> str:
    from engine.io.render import save_figure

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "map.png"
        save_figure(path, [panel], dpi=dpi)
        return base64.b64encode(path.read_bytes()).decode("ascii")


def _rows(record: dict) -> str:
    rows = []
    for key, value in record.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items() if v not in ("", None))
        rows.append(f"<tr><th>{escape(str(key))}</th><td>{escape(str(value))}</td></tr>")
    return "<table>" + "".join(rows) + "</table>"


def report_html(title: str, panels: list[dict], records: list[dict], context: dict, versions: dict, dpi: int = 110) -> str:
    """The report's HTML: a context table, then per map its figure and its parameters, then the versions."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{STYLE}</style></head><body>"]
    parts.append(f"<h1>{escape(title)}</h1>{_rows(context)}")
    for index, (panel, record) in enumerate(zip(panels, records, strict=True), start=1):
        model = record.get("model") or {}
        mark = " <span class='untrained'>UNTRAINED (random weights)</span>" if model.get("untrained") else ""
        parts.append(f"<h2>{index}. {escape(panel.get('title', '').splitlines()[0])}{mark}</h2>")
        parts.append(f"<img alt='{escape(panel.get('title', ''))}' src='data:image/png;base64,{_figure_png(panel, dpi)}'>")
        parts.append(_rows(record))
    parts.append(f"<h2>Versions</h2>{_rows(versions)}</body></html>")
    return "\n".join(parts)
