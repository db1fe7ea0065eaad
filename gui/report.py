"""An HTML report of the session: one self-contained file (figures embedded as PNG) that opens in a
browser: every map as a figure with its parameters, the Table tab's results (Sobol indices, each
method's ensemble table, the input reduction), the model and data, and the package versions.

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
table.results td { text-align: right; } table.results td:first-child { text-align: left; }
.note { color: #444; font-size: 0.9em; }
"""


def _figure_png(panel: dict, dpi: int) -> str:
    from engine.app.data import save_figure

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


def results_table(table: dict) -> str:
    """One table result (title, note, header, rows of text) as an HTML section."""
    head = "".join(f"<th>{escape(str(name))}</th>" for name in table["header"])
    body = "".join("<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in row) + "</tr>" for row in table["rows"])
    note = f"<p class='note'>{escape(table['note'])}</p>" if table.get("note") else ""
    return f"<h3>{escape(table['title'])}</h3>{note}<table class='results'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def report_html(title: str, panels: list[dict], records: list[dict], context: dict, versions: dict, dpi: int = 110, tables: list[dict] | None = None) -> str:
    """The report's HTML: a context table, then per map its figure and its parameters, then the
    table results (gui.tabular_results.report_tables), then the versions."""
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title><style>{STYLE}</style></head><body>"]
    parts.append(f"<h1>{escape(title)}</h1>{_rows(context)}")
    for index, (panel, record) in enumerate(zip(panels, records, strict=True), start=1):
        model = record.get("model") or {}
        mark = " <span class='untrained'>UNTRAINED (random weights)</span>" if model.get("untrained") else ""
        parts.append(f"<h2>{index}. {escape(panel.get('title', '').splitlines()[0])}{mark}</h2>")
        parts.append(f"<img alt='{escape(panel.get('title', ''))}' src='data:image/png;base64,{_figure_png(panel, dpi)}'>")
        parts.append(_rows(record))
    if tables:
        parts.append("<h2>Table results</h2>" + "".join(results_table(table) for table in tables))
    parts.append(f"<h2>Versions</h2>{_rows(versions)}</body></html>")
    return "\n".join(parts)
