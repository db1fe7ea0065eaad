"""Files for the tabular workflow: CSV tables and PNG charts of Sobol indices and input reduction."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from engine.core.errors import UserError
from engine.stats.sobol import SobolResult
from engine.tabular.sensitivity import ReductionResult


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    return plt


def write_sobol_files(result: SobolResult, out_dir: str | Path) -> dict[str, str]:
    """indices.csv (sorted by ST), s2.csv when computed, convergence.csv and indices.png."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        order = np.argsort(-result.ST, kind="stable")
        files = {"indices_csv": str(out / "sobol_indices.csv"), "convergence_csv": str(out / "sobol_convergence.csv"), "chart_png": str(out / "sobol_indices.png")}
        with open(files["indices_csv"], "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["feature", "S1", "S1_conf", "ST", "ST_conf"])
            for i in order:
                writer.writerow([result.names[i], f"{result.S1[i]:.6f}", f"{result.S1_conf[i]:.6f}", f"{result.ST[i]:.6f}", f"{result.ST_conf[i]:.6f}"])
        if result.S2 is not None:
            files["s2_csv"] = str(out / "sobol_s2.csv")
            with open(files["s2_csv"], "w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(["", *result.names])
                for name, row in zip(result.names, result.S2, strict=True):
                    writer.writerow([name, *("" if not np.isfinite(v) else f"{v:.6f}" for v in row)])
        with open(files["convergence_csv"], "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["N", *(f"S1_{n}" for n in result.names), *(f"ST_{n}" for n in result.names)])
            for step in result.convergence:
                writer.writerow([step["n"], *(f"{v:.6f}" for v in step["S1"]), *(f"{v:.6f}" for v in step["ST"])])
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(order) + 2), 3.6), dpi=110)
        positions = np.arange(len(order))
        ax.bar(positions - 0.2, result.S1[order], 0.4, yerr=result.S1_conf[order], label="S1 (first order)", color="#4477aa", capsize=3)
        ax.bar(positions + 0.2, result.ST[order], 0.4, yerr=result.ST_conf[order], label="ST (total)", color="#ee6677", capsize=3)
        ax.set_xticks(positions, [result.names[i] for i in order], rotation=30, ha="right")
        ax.set_ylabel("Sobol index")
        ax.set_title(f"Sobol indices, N = {result.n} ({result.n_evaluations} evaluations), {int(result.conf_level * 100)}% intervals")
        ax.axhline(0, color="black", linewidth=0.6)
        ax.legend()
        fig.tight_layout()
        fig.savefig(files["chart_png"])
        plt.close(fig)
    except OSError as exc:
        raise UserError(f"cannot write the Sobol results to {out}: {exc}") from None
    return files


def write_reduction_files(result: ReductionResult, out_dir: str | Path) -> dict[str, str]:
    """reduction.csv (k, selection, metric means and spreads) and reduction.png (metric against k)."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        files = {"table_csv": str(out / "reduction.csv"), "chart_png": str(out / "reduction.png")}
        rows = [r.to_dict() for r in result.rows]
        columns = [c for c in rows[0] if c != "features"] + ["features"]
        with open(files["table_csv"], "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([" | ".join(",".join(f) for f in row[c]) if c == "features" else row[c] for c in columns])
        plt = _pyplot()
        fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
        for selection, colour in (("ranked", "#4477aa"), ("random", "#bbbbbb")):
            chosen = [r for r in result.rows if r.selection == selection]
            if chosen:
                ks = [r.k for r in chosen]
                means = np.array([r.metrics[result.metric][0] for r in chosen])
                spreads = np.array([r.metrics[result.metric][1] for r in chosen])
                ax.errorbar(ks, means, yerr=spreads, marker="o", capsize=3, color=colour, label=f"top-k by {result.rank_by}" if selection == "ranked" else "random k inputs")
        ax.axhline(result.full_score - result.tolerance, color="#ee6677", linestyle="--", linewidth=1, label=f"full model - {result.tolerance:g}")
        ax.axvline(result.recommended_k, color="#228833", linestyle=":", label=f"recommended k = {result.recommended_k}")
        ax.set_xlabel("number of inputs k")
        ax.set_ylabel(result.metric)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(files["chart_png"])
        plt.close(fig)
    except OSError as exc:
        raise UserError(f"cannot write the reduction results to {out}: {exc}") from None
    return files
