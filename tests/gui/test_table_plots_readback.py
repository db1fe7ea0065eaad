"""Every plot of the Table tab, read back: what is drawn (bar heights, heat-map cells, curve points,
tick names, hover texts) equals the result object it was drawn from.

The results are real: Sobol and Morris on analytic functions whose interactions are known, so that
a drawing that drops, moves or mislabels a value fails here.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
import pytest

from engine.stats.screening import morris
from engine.stats.sobol import sobol_indices
from engine.tabular.ensemble import EnsembleResult
from engine.tabular.sensitivity import ReductionResult, ReductionRow
from gui.plotting import configure_pyqtgraph
from gui.widgets.tabular_plots import LossPlot, MethodsView, ReductionView, SobolView

NAMES = ["a", "b", "c", "d"]


def interacting(x: np.ndarray) -> np.ndarray:
    """ST order d > c > b > a (the reverse of the input order) with the pairs (a, d) and (b, c)
    interacting, so sorting by ST moves every interacting pair across the diagonal."""
    return 0.8 * x[:, 0] * x[:, 3] + 4.0 * x[:, 3] + 2.0 * x[:, 2] + 1.5 * x[:, 1] * x[:, 2] + 0.3 * x[:, 1]


@pytest.fixture(scope="module")
def sobol_result():
    problem = {"num_vars": 4, "names": NAMES, "bounds": [[-1.0, 1.0]] * 4}
    return sobol_indices(interacting, problem, n=1024, second_order=True, seed=3)


def items_of(plot, kind) -> list:
    return [item for item in plot.getPlotItem().items if isinstance(item, kind)]


def tick_names(plot, axis: str = "bottom") -> dict[float, str]:
    levels = plot.getAxis(axis)._tickLevels
    return {float(x): name for x, name in levels[0]} if levels else {}


def hover(view: SobolView, row: int, column: int) -> str:
    """Move the pointer over the centre of heat-map cell (row, column) as a user would, and read
    the text the view shows for it."""
    vb = view.s2_plot.getPlotItem().vb
    scene_point = vb.mapViewToScene(pg.Point(column, row))
    view._s2_hover(scene_point)
    return view.s2_value.text()


def test_sobol_bars_heatmap_hover_and_convergence_equal_the_result(qtbot, sobol_result):
    configure_pyqtgraph()
    view = SobolView()
    qtbot.addWidget(view)
    view.resize(900, 700)
    view.show()
    qtbot.waitExposed(view)
    view.show_result(sobol_result)
    result = sobol_result
    order = [int(i) for i in np.argsort(-np.asarray(result.ST), kind="stable")]
    assert order != sorted(order), "the analytic model must reorder the inputs, or the test proves nothing"

    # Bars: S1 left of each tick, ST right of it, both at the tick of their own input.
    names_at = tick_names(view.bars)
    bars = items_of(view.bars, pg.BarGraphItem)
    assert len(bars) == 2
    for bar, key, offset in ((bars[0], "S1", -0.18), (bars[1], "ST", 0.18)):
        xs, heights = np.asarray(bar.opts["x"], dtype=float), np.asarray(bar.opts["height"], dtype=float)
        for x, height in zip(xs, heights, strict=True):
            name = names_at[round(x - offset)]
            assert height == pytest.approx(float(getattr(result, key)[NAMES.index(name)]), abs=1e-12)
    errors = items_of(view.bars, pg.ErrorBarItem)
    for error, key, offset in ((errors[0], "S1_conf", -0.18), (errors[1], "ST_conf", 0.18)):
        for x, top in zip(np.asarray(error.opts["x"]), np.asarray(error.opts["top"]), strict=True):
            assert top == pytest.approx(float(getattr(result, key)[NAMES.index(names_at[round(x - offset)])]), abs=1e-12)

    # Heat map: every cell drawn equals the S2 of the pair its row and column ticks name, on both
    # sides of the diagonal; the largest pair is among them (it was lost before the fix).
    drawn = np.asarray(view.s2_image.image, dtype=float)
    rows_named = tick_names(view.s2_plot, "left")
    columns_named = tick_names(view.s2_plot, "bottom")
    s2 = np.asarray(result.S2, dtype=float)
    expected_pairs = {}
    for i in range(4):
        for j in range(i + 1, 4):
            expected_pairs[frozenset((NAMES[i], NAMES[j]))] = s2[i, j]
    assert drawn.shape == (4, 4)
    for row in range(4):
        for column in range(4):
            a, b = rows_named[float(row)], columns_named[float(column)]
            if a == b:
                assert drawn[row, column] == 0.0
                assert hover(view, row, column) == f"{a}: the diagonal has no S2"
                continue
            value = expected_pairs[frozenset((a, b))]
            assert drawn[row, column] == pytest.approx(value, abs=1e-6)
            assert hover(view, row, column) == f"S2({a}, {b}) = {value:.4f}"
    # The two interactions of the model are the two largest cells drawn.
    largest = sorted(expected_pairs, key=lambda pair: -expected_pairs[pair])[:2]
    assert set(largest) == {frozenset(("a", "d")), frozenset(("b", "c"))}
    assert min(expected_pairs[p] for p in largest) > 0.005
    assert drawn.max() == pytest.approx(max(expected_pairs.values()), abs=1e-6)

    # Convergence: one curve per input, its points the ST at each N, its legend colour its own.
    curves = items_of(view.convergence, pg.PlotDataItem)
    assert len(curves) == 4 and result.convergence
    sizes = [step["n"] for step in result.convergence]
    for rank, curve in enumerate(curves):
        x, y = curve.getData()
        index = order[rank]
        assert [int(round(2**v)) for v in x] == sizes
        assert list(y) == pytest.approx([step["ST"][index] for step in result.convergence], abs=1e-12)
        colour = curve.opts["pen"].color().name()
        assert f"<span style='color:{colour}'>&#9632;</span>&nbsp;{NAMES[index]}" in view.convergence_legend.text()


def test_methods_view_bars_and_ranking_table_equal_the_ensemble(qtbot):
    configure_pyqtgraph()

    def network(scale):
        return lambda x: scale * (3.0 * x[:, 0] + x[:, 1] ** 2 + 0.2 * x[:, 2] + 2.0 * x[:, 0] * x[:, 3])

    runs = [morris(network(s), NAMES, trajectories=16, seed=s) for s in (1, 2, 3)]
    ensemble = EnsembleResult("morris", runs, [1, 2, 3])
    view = MethodsView()
    qtbot.addWidget(view)
    view.show_results({"morris": ensemble})
    names_at = tick_names(view.bars)
    bar = items_of(view.bars, pg.BarGraphItem)[0]
    drawn = {names_at[float(x)]: float(h) for x, h in zip(bar.opts["x"], bar.opts["height"], strict=True)}
    assert drawn == pytest.approx({name: float(ensemble.mean[i]) for i, name in enumerate(NAMES)}, abs=1e-12)
    assert list(drawn) == ensemble.ranking()
    spread = [item for item in items_of(view.bars, pg.ErrorBarItem) if item.opts["pen"].width() == 3][0]
    drawn_spread = {names_at[round(float(x) - 0.07)]: float(t) for x, t in zip(spread.opts["x"], spread.opts["top"], strict=True)}
    assert drawn_spread == pytest.approx({name: float(ensemble.spread[i]) for i, name in enumerate(NAMES)}, abs=1e-12)
    ranks = view.rank_texts()
    for i, name in enumerate(NAMES):
        assert float(ranks[name][0]) == float(np.argsort(np.argsort(-ensemble.mean))[i] + 1)
    row = [view.table.verticalHeaderItem(r).text() for r in range(view.table.rowCount())].index("a")
    assert view.table.item(row, 0).toolTip().startswith(f"mu_star {ensemble.mean[0]:.4f} +- {ensemble.spread[0]:.4f}")
    assert ranks["networks W"] == [f"{ensemble.kendall_w:.2f}"]


def test_reduction_curves_and_table_equal_the_result(qtbot):
    configure_pyqtgraph()
    rows = [ReductionRow(k, "ranked", [NAMES[:k]], {"accuracy": (0.5 + 0.1 * k, 0.01 * k)}) for k in range(1, 5)]
    rows += [ReductionRow(k, "random", [NAMES[-k:]], {"accuracy": (0.45 + 0.05 * k, 0.02)}) for k in range(1, 5)]
    result = ReductionResult(NAMES, "ST", "accuracy", 0.9, 0.02, 4, rows, 1.0)
    view = ReductionView()
    qtbot.addWidget(view)
    view.show_result(result)
    curves = items_of(view.plot, pg.PlotDataItem)
    assert len(curves) == 2
    for curve, selection in zip(curves, ("ranked", "random"), strict=True):
        x, y = curve.getData()
        expected = sorted((r for r in rows if r.selection == selection), key=lambda r: r.k)
        assert list(x) == [r.k for r in expected]
        assert list(y) == pytest.approx([r.metrics["accuracy"][0] for r in expected])
    lines = items_of(view.plot, pg.InfiniteLine)
    assert sorted(round(line.value(), 6) for line in lines) == [0.88, 4.0]
    texts = [view.table.row_texts(r) for r in range(view.table.rowCount())]
    assert texts[view.table.recommended_row][:4] == ["4", "ranked", "0.9000", "0.0400"]


def test_loss_curve_points_equal_the_history(qtbot):
    configure_pyqtgraph()
    plot = LossPlot()
    qtbot.addWidget(plot)
    train, val = [0.9, 0.7, 0.6, 0.55], [1.0, 0.8, 0.75]
    plot.set_history(train, val, best_epoch=3)
    assert list(plot.train_curve.getData()[1]) == train and list(plot.train_curve.getData()[0]) == [1, 2, 3, 4]
    assert list(plot.val_curve.getData()[1]) == val and plot.best_line.value() == 3
