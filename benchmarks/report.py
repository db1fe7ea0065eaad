"""Markdown rendering of a benchmark run's JSON."""

from __future__ import annotations

from typing import Any

from common import fmt


def _verdict(row: dict[str, Any]) -> str:
    if row["met"] is None:
        return "n/a"
    if row["met"]:
        return "met"
    return f"missed by {100 * row['miss_by']:.0f}%" if row.get("miss_by") is not None else "missed"


def _spread(row: dict[str, Any]) -> str:
    spread = row.get("spread") or row
    if spread.get("min") is None or spread.get("n", 1) < 2:
        return ""
    return f"{fmt(spread['min'])} - {fmt(spread['max'])} (n={spread['n']})"


def targets_table(benchmarks: list[dict[str, Any]]) -> list[str]:
    lines = ["| benchmark | check | value (median) | target | verdict | spread (min - max) | ratio of fastest runs |", "|---|---|---|---|---|---|---|"]
    for bench in benchmarks:
        if bench.get("skipped"):
            lines.append(f"| {bench['name']} | skipped: {bench['skipped']} | | | | | |")
            continue
        for row in bench["targets"]:
            lines.append(f"| {bench['name']} | {row['label']} | {fmt(row['value'])} | {row['op']} {fmt(row['limit'])} | {_verdict(row)} | {_spread(row)} | {fmt(row.get('best'))} |")
    return lines


def figures_table(bench: dict[str, Any]) -> list[str]:
    lines = ["| figure | median | min | max | IQR (q1 - q3) | n | unit |", "|---|---|---|---|---|---|---|"]
    for row in bench["figures"]:
        iqr = f"{fmt(row['q1'])} - {fmt(row['q3'])}" if row.get("q1") is not None and row.get("n", 1) > 1 else ""
        lines.append(f"| {row['label']} | {fmt(row.get('median'))} | {fmt(row.get('min'))} | {fmt(row.get('max'))} | {iqr} | {row.get('n', 1)} | {row.get('unit', '')} |")
    return lines


def render(run: dict[str, Any]) -> str:
    machine = run["machine"]
    lines = [
        f"# Sensiscope benchmarks: {machine['device_name']} ({machine['device']})",
        "",
        f"- mode: {run['mode']}; written {run['finished']}; benchmarks in this file took {fmt(run['elapsed_s'])} s in all",
        f"- cpu: {machine['cpu']} ({machine['cpu_count']} cores, torch threads {machine['torch_threads']}); torch {machine['torch']}; python {machine['python']}",
        "- every time is a median of interleaved rounds after a warm-up; ratios are taken per round in one process, then their median",
        "",
        "## Targets",
        "",
        *targets_table(run["benchmarks"]),
        "",
    ]
    for bench in run["benchmarks"]:
        lines += [f"## {bench['title']} (`{bench['name']}`)", ""]
        lines.append(f"run {bench.get('finished', '')}, {fmt(bench['elapsed_s'])} s, load average before/after: {bench.get('load_before')} / {bench.get('load_average')}")
        lines.append("")
        if bench.get("skipped"):
            lines += [f"Skipped: {bench['skipped']}", ""]
            continue
        lines += [*figures_table(bench), ""]
        lines += [f"- {note}" for note in bench["notes"]]
        lines.append("")
    return "\n".join(lines)
