"""Issue 13, figure export: the HTML report of a session holds its table results (the Sobol indices
with S2, each method's ensemble table, the input reduction) beside maps, parameters and versions.
Before, a session with table results and no map gave "Nothing to report", and a report never
showed a table result."""

from __future__ import annotations

from html.parser import HTMLParser

import numpy as np
import pytest

from engine.stats.screening import MethodResult
from engine.stats.sobol import sobol_indices
from engine.tabular.ensemble import EnsembleResult
from engine.tabular.sensitivity import ReductionResult, ReductionRow

NAMES = ["x1", "x2", "x3"]


class Tables(HTMLParser):
    """Every <h3> title and the rows of the table that follows it, as text."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.headings: list[str] = []
        self._title = None
        self._cell: list[str] | None = None
        self._in_h = ""

    def handle_starttag(self, tag, attrs):
        if tag in ("h2", "h3"):
            self._in_h, self._text = tag, ""
        elif tag == "tr" and self._title is not None:
            self.tables[self._title].append([])
        elif tag in ("td", "th") and self._title is not None:
            self._cell = []

    def handle_endtag(self, tag):
        if tag == self._in_h:
            self.headings.append(self._text)
            self._title = self._text if tag == "h3" else None
            if self._title is not None:
                self.tables[self._title] = []
            self._in_h = ""
        elif tag in ("td", "th") and self._cell is not None:
            self.tables[self._title][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._in_h:
            self._text += data
        elif self._cell is not None:
            self._cell.append(data)


def linear(x: np.ndarray) -> np.ndarray:
    """x1 + 2 x2 (x3 unused) on the unit cube: Var = 1/12 + 4/12, so S1 = ST = (0.2, 0.8, 0)."""
    return x[:, 0] + 2.0 * x[:, 1]


def test_a_session_with_table_results_reports_them(make_window, tmp_path):
    window = make_window()
    panel = window.tabular_panel
    assert not window.session.export_report(tmp_path / "empty.html")  # nothing at all: still nothing to report
    assert [title for title, _ in window.errors] == ["Nothing to report"]
    panel.sobol = sobol_indices(linear, {"num_vars": 3, "names": NAMES, "bounds": [[0, 1]] * 3}, n=1024, second_order=True, convergence=False)
    runs = [MethodResult("morris", NAMES, {"mu_star": np.array(v), "mu_star_conf": np.array([0.1, 0.1, 0.1])}) for v in ([3.0, 1.0, 2.0], [2.5, 1.5, 2.0])]
    panel.ensembles = {"morris": EnsembleResult("morris", runs, [0, 1])}
    panel.reduction = ReductionResult(["x2", "x1", "x3"], "ST", "accuracy", 0.9, 0.01, 2, rows=[
        ReductionRow(2, "ranked", [["x2", "x1"]], {"accuracy": (0.895, 0.004)}),
        ReductionRow(1, "ranked", [["x2"]], {"accuracy": (0.7, 0.02)}),
    ])
    path = tmp_path / "report.html"
    assert window.session.export_report(path) and len(window.errors) == 1
    parser = Tables()
    parser.feed(path.read_text())
    assert "Table results" in parser.headings and "Versions" in parser.headings
    sobol = parser.tables["Sobol indices"]
    assert sobol[0] == ["input", "S1", "S1 ±", "ST", "ST ±"]
    assert [row[0] for row in sobol[1:]] == ["x2", "x1", "x3"]  # by ST, the known answer's order
    st = {row[0]: float(row[3]) for row in sobol[1:]}
    assert st == pytest.approx({"x2": 0.8, "x1": 0.2, "x3": 0.0}, abs=0.05)
    s2 = parser.tables["Second-order indices S2"]
    assert len(s2) == 1 + 3 and all(abs(float(row[2])) < 0.05 for row in s2[1:])  # additive: no interaction
    morris = next(rows for title, rows in parser.tables.items() if title.startswith("Morris"))
    assert [row[:3] for row in morris[1:]] == [["x1", "2.7500", "0.3536"], ["x3", "2.0000", "0.0000"], ["x2", "1.2500", "0.3536"]]
    assert morris[1][-1] == "1, 1"  # x1 ranks first in both networks
    reduction = parser.tables["Input reduction"]
    assert reduction[0] == ["k", "inputs", "accuracy", "inputs kept (first seed)"]
    assert reduction[1] == ["2", "ranked", "0.895 ± 0.004", "x2, x1"]
    assert "recommended k = 2" in path.read_text()
