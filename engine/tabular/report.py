"""Files for the tabular workflow: CSV tables and PNG charts of Sobol indices and input reduction.

Both writers read the results through their ``to_dict()``, the one serialisation each result type has."""

from __future__ import annotations

import csv
import functools
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from engine.core.csvsafe import safe_row
from engine.core.errors import UserError
from engine.core.files import atomic_path
from engine.stats.sobol import SobolResult
from engine.tabular.sensitivity import ReductionResult


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    return plt


# matplotlib's own font first; then fonts that cover other scripts, tried in this order when installed.
BASE_FONT = "DejaVu Sans"
WIDE_FONTS = (
    "Noto Sans", "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK TC", "Noto Sans CJK KR", "Source Han Sans",
    "WenQuanYi Zen Hei", "WenQuanYi Micro Hei", "Droid Sans Fallback", "Microsoft YaHei", "SimHei", "Yu Gothic",
    "MS Gothic", "Malgun Gothic", "Hiragino Sans", "PingFang SC", "Apple SD Gothic Neo", "Arial Unicode MS",
    "Noto Sans Arabic", "Noto Sans Hebrew", "Noto Sans Devanagari", "Noto Sans Thai", "FreeSans",
)


@functools.cache
def _covered(font_file: str) -> frozenset[int]:
    """The code points a font file has glyphs for (empty when it cannot be read)."""
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(font_file).get_charmap())
    except Exception:  # noqa: BLE001 - an unreadable font is one that covers nothing
        return frozenset()


@functools.lru_cache(maxsize=1)
def _installed_fonts() -> tuple[tuple[str, str], ...]:
    """(family, file) of every installed font, the wide-coverage ones first."""
    from matplotlib import font_manager

    files: dict[str, str] = {}
    for entry in font_manager.fontManager.ttflist:
        if not entry.name.startswith("Last Resort"):  # it covers every character with a placeholder box, not a glyph
            files.setdefault(entry.name, entry.fname)
    ranked = sorted(files.items(), key=lambda item: (item[0] not in WIDE_FONTS, WIDE_FONTS.index(item[0]) if item[0] in WIDE_FONTS else 0, item[0]))
    return tuple(ranked)


def chart_fonts(texts: list[str]) -> tuple[list[str], list[str]]:
    """The font families a chart of these texts needs (matplotlib falls back along the list, glyph
    by glyph) and the texts that keep glyphs no installed font has (to be named in a note)."""
    from matplotlib import font_manager

    needed = {ord(c) for text in texts for c in str(text) if not c.isspace()}
    needed -= _covered(font_manager.findfont(BASE_FONT))
    families = [BASE_FONT]
    for family, font_file in _installed_fonts() if needed else ():
        found = needed & _covered(font_file)
        if found:
            families.append(family)
            needed -= found
        if not needed:
            break
    return families, [str(text) for text in texts if any(ord(c) in needed for c in str(text))]


def _font_note(missing: list[str], chart: str) -> str:
    shown = ", ".join(f"'{name}'" for name in missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return f"{chart} cannot show every character of {shown}: no installed font has them (install one, e.g. Noto Sans CJK, to see them in the chart; the CSV files keep the names)"


def _cell(value: float | None) -> str:
    """Six decimals, or an empty cell for a missing or non-finite value (spreadsheets read "nan" as text)."""
    return "" if value is None or not math.isfinite(value) else f"{value:.6f}"


def _write_csv(path: str, header: list[str], rows: list[list[Any]]) -> None:
    """Column names come from the user's table: formula-like text is escaped (engine.core.csvsafe)."""
    with atomic_path(path) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(safe_row(header))
        writer.writerows(safe_row(row) for row in rows)


def save_figure(fig, path: str) -> None:
    """Save a matplotlib figure atomically (the temporary name keeps the suffix that picks the format)."""
    with atomic_path(path) as temporary:
        fig.savefig(temporary)


def _sobol_chart(record: dict[str, Any], order: np.ndarray, path: str, notes: list[str] | None = None) -> None:
    """S1 and ST bars with their confidence intervals, most influential input first; the column
    names are drawn with fonts that have their glyphs, and a note names those none has."""
    plt = _pyplot()
    families, missing = chart_fonts(list(record["names"]))
    if missing and notes is not None:
        notes.append(_font_note(missing, Path(path).name))
    with plt.rc_context({"font.family": families}), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Glyph .* missing from")  # said once, in the note
        _draw_sobol_chart(plt, record, order, path)


def _draw_sobol_chart(plt, record: dict[str, Any], order: np.ndarray, path: str) -> None:
    s1, s1_conf, st, st_conf = (np.asarray(record[key], dtype=np.float64)[order] for key in ("S1", "S1_conf", "ST", "ST_conf"))
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(order) + 2), 3.6), dpi=110)
    positions = np.arange(len(order))
    ax.bar(positions - 0.2, s1, 0.4, yerr=s1_conf, label="S1 (first order)", color="#4477aa", capsize=3)
    ax.bar(positions + 0.2, st, 0.4, yerr=st_conf, label="ST (total)", color="#ee6677", capsize=3)
    ax.set_xticks(positions, [record["names"][i] for i in order], rotation=30, ha="right")
    ax.set_ylabel("Sobol index")
    ax.set_title(f"Sobol indices, N = {record['n']} ({record['n_evaluations']} evaluations), {int(record['conf_level'] * 100)}% intervals")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def write_sobol_files(result: SobolResult, out_dir: str | Path, notes: list[str] | None = None) -> dict[str, str]:
    """indices.csv (sorted by ST), s2.csv when computed, convergence.csv and indices.png; a sentence
    for the user (a column name the chart cannot draw) is appended to ``notes``."""
    out = Path(out_dir)
    record = result.to_dict()
    names = record["names"]
    order = np.argsort(-np.asarray(record["ST"], dtype=np.float64), kind="stable")
    files = {"indices_csv": str(out / "sobol_indices.csv"), "convergence_csv": str(out / "sobol_convergence.csv"), "chart_png": str(out / "sobol_indices.png")}
    try:
        out.mkdir(parents=True, exist_ok=True)
        columns = ("S1", "S1_conf", "ST", "ST_conf")
        _write_csv(files["indices_csv"], ["feature", *columns], [[names[i], *(_cell(record[key][i]) for key in columns)] for i in order])
        if record["S2"] is not None:
            files["s2_csv"] = str(out / "sobol_s2.csv")
            _write_csv(files["s2_csv"], ["", *names], [[name, *map(_cell, row)] for name, row in zip(names, record["S2"], strict=True)])
        header = ["N", *(f"S1_{n}" for n in names), *(f"ST_{n}" for n in names)]
        _write_csv(files["convergence_csv"], header, [[step["n"], *map(_cell, step["S1"]), *map(_cell, step["ST"])] for step in record["convergence"]])
        _sobol_chart(record, order, files["chart_png"], notes)
    except OSError as exc:
        raise UserError(f"cannot write the Sobol results to {out}: {exc}") from None
    return files


def _reduction_chart(record: dict[str, Any], path: str) -> None:
    """The metric against k, ranked and random selections, with the tolerance line and the recommended k."""
    plt = _pyplot()
    metric = record["metric"]
    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    for selection, colour in (("ranked", "#4477aa"), ("random", "#bbbbbb")):
        chosen = [row for row in record["rows"] if row["selection"] == selection]
        if chosen:
            ks = [row["k"] for row in chosen]
            means = np.array([row[f"{metric}_mean"] for row in chosen], dtype=np.float64)
            spreads = np.array([row[f"{metric}_std"] for row in chosen], dtype=np.float64)
            ax.errorbar(ks, means, yerr=spreads, marker="o", capsize=3, color=colour, label=f"top-k by {record['rank_by']}" if selection == "ranked" else "random k inputs")
    ax.axhline(record["full_score"] - record["tolerance"], color="#ee6677", linestyle="--", linewidth=1, label=f"full model - {record['tolerance']:g}")
    ax.axvline(record["recommended_k"], color="#228833", linestyle=":", label=f"recommended k = {record['recommended_k']}")
    ax.set_xlabel("number of inputs k")
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
    plt.close(fig)


def write_reduction_files(result: ReductionResult, out_dir: str | Path) -> dict[str, str]:
    """reduction.csv (k, selection, metric means and spreads) and reduction.png (metric against k)."""
    out = Path(out_dir)
    record = result.to_dict()
    files = {"table_csv": str(out / "reduction.csv"), "chart_png": str(out / "reduction.png")}
    try:
        out.mkdir(parents=True, exist_ok=True)
        rows = record["rows"]
        columns = [c for c in rows[0] if c != "features"] + ["features"]
        _write_csv(files["table_csv"], columns, [[" | ".join(",".join(f) for f in row[c]) if c == "features" else row[c] for c in columns] for row in rows])
        _reduction_chart(record, files["chart_png"])
    except OSError as exc:
        raise UserError(f"cannot write the reduction results to {out}: {exc}") from None
    return files


def write_ensemble_files(ensemble, folder: str | Path, prefix: str = "") -> dict[str, str]:
    """ENSEMBLE.csv: per input (most influential first) the ensemble mean of the method's measure,
    the spread across networks, the bootstrap half-width, min, max and the rank in each network."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = str(folder / f"{prefix}{ensemble.method}_ensemble.csv")
    header = ["feature", f"{ensemble.measure}_mean", "spread_sd", "bootstrap_halfwidth", "min", "max", *[f"rank_seed_{s}" for s in ensemble.seeds]]
    rows = [[r["name"], _cell(r["mean"]), _cell(r["spread"]), _cell(r["conf"]), _cell(r["min"]), _cell(r["max"]), *r["ranks"]] for r in ensemble.summary()]
    _write_csv(path, header, rows)
    return {f"{ensemble.method}_ensemble_csv": path}


def write_comparison_files(comparison, folder: str | Path) -> dict[str, str]:
    """method_comparison.csv: the rank of each input under each method (1 = most influential)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = str(folder / "method_comparison.csv")
    table = comparison.rank_table()
    rows = [[name, *[table[m][i] for m in comparison.methods]] for i, name in enumerate(comparison.names)]
    _write_csv(path, ["feature", *[f"rank_{m}" for m in comparison.methods]], rows)
    return {"comparison_csv": path}
