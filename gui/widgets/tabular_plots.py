"""Plots of the tabular workflow: the training loss, Sobol indices (bars, S2 heat map, convergence) and input reduction."""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView, QLabel, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget

S1_COLOUR = "#4477aa"
ST_COLOUR = "#ee6677"
RANDOM_COLOUR = "#999999"
SPREAD_COLOUR = "#ee7733"
RECOMMENDED_BACKGROUND = "#d9f0d9"
FEATURE_COLOURS = ["#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb", "#332288", "#117733", "#882255"]


def plain_axes(plot) -> None:
    """Values as they are: no 'x0.001' SI-prefix rescaling of the axes (indices and accuracies are small numbers)."""
    for name in ("left", "bottom"):
        plot.getAxis(name).enableAutoSIPrefix(False)


def small_ticks(plot) -> None:
    font = QFont()
    font.setPointSize(8)
    for name in ("left", "bottom"):
        plot.getAxis(name).setStyle(tickFont=font)


def legend(plot, offset=(-10, 10)):
    return plot.addLegend(offset=offset, brush=pg.mkBrush(255, 255, 255, 210), pen=pg.mkPen("#cccccc"), labelTextSize="8pt")


def styled_plot(title: str, left: str = "", bottom: str = "") -> pg.PlotWidget:
    plot = pg.PlotWidget()
    plain_axes(plot)
    plot.setTitle(title, size="10pt")
    plot.showGrid(x=False, y=True, alpha=0.25)
    plot.setMenuEnabled(False)
    plot.hideButtons()
    if left:
        plot.setLabel("left", left)
    if bottom:
        plot.setLabel("bottom", bottom)
    return plot


def add_intervals(plot, x: np.ndarray, values: np.ndarray, bootstrap: np.ndarray | None, spread: np.ndarray | None) -> None:
    """The ensemble's second interval beside the bootstrap one: +-1 sd across the networks, drawn
    thick and orange just right of each bar, with legend entries for both."""
    if spread is None:
        return
    plot.addItem(pg.ErrorBarItem(x=x + 0.07, y=values, top=spread, bottom=spread, beam=0.0, pen=pg.mkPen(SPREAD_COLOUR, width=3)))
    plot.plot([], [], pen=pg.mkPen(SPREAD_COLOUR, width=3), name="spread across networks (+-1 sd)")
    if bootstrap is not None:
        plot.plot([], [], pen=pg.mkPen("#333333", width=1), name="bootstrap interval")


class LossPlot(pg.PlotWidget):
    """Training and validation loss by epoch, redrawn as epochs arrive."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setTitle("Loss by epoch", size="10pt")
        self.setLabel("left", "loss")
        self.setLabel("bottom", "epoch")
        self.showGrid(x=True, y=True, alpha=0.25)
        self.setMenuEnabled(False)
        self.hideButtons()
        plain_axes(self)
        legend(self)
        self.train_curve = self.plot([], [], pen=pg.mkPen(S1_COLOUR, width=2), name="training")
        self.val_curve = self.plot([], [], pen=pg.mkPen(ST_COLOUR, width=2), name="validation")
        self.best_line = pg.InfiniteLine(angle=90, pen=pg.mkPen("#228833", style=Qt.PenStyle.DashLine))
        self.best_line.hide()
        self.addItem(self.best_line)

    def set_history(self, train: list[float], val: list[float], best_epoch: int | None = None) -> None:
        epochs = np.arange(1, len(train) + 1, dtype=float)
        self.train_curve.setData(epochs, np.asarray(train, dtype=float))
        self.val_curve.setData(epochs[: len(val)], np.asarray(val, dtype=float))
        self.best_line.setVisible(best_epoch is not None)
        if best_epoch is not None:
            self.best_line.setValue(best_epoch)

    def reset(self) -> None:
        self.set_history([], [])


class SobolView(QWidget):
    """S1 and ST bars with confidence intervals (sorted by ST), the S2 heat map and the convergence of ST with N."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.order: list[int] = []
        self.names: list[str] = []
        self.bars = styled_plot("Sobol indices (95% intervals)", "index")
        legend(self.bars)
        self.s2_plot = styled_plot("Second-order indices S2")
        self.s2_plot.showGrid(x=False, y=False)
        self.s2_plot.invertY(True)  # no locked aspect: the cells fill the plot instead of leaving margins
        self.s2_plot.scene().sigMouseMoved.connect(self._s2_hover)
        self.s2_matrix: np.ndarray | None = None
        self.s2_conf: np.ndarray | None = None
        self.s2_value = QLabel("Point at a cell for its S2 value.")
        self.s2_value.setObjectName("hint")
        small_ticks(self.s2_plot)
        self.s2_image = pg.ImageItem()
        self.s2_plot.addItem(self.s2_image)
        self.s2_bar = pg.ColorBarItem(values=(0.0, 1.0), colorMap=pg.colormap.get("viridis"), interactive=False, width=12)
        self.s2_bar.setImageItem(self.s2_image, insert_in=self.s2_plot.getPlotItem())
        self.s2_note = QLabel("Tick 'second order' and run again to see the pairwise interactions.")
        self.s2_note.setObjectName("hint")
        self.s2_note.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.convergence = styled_plot("Convergence of ST", "ST", "base sample size N")
        self.convergence.showGrid(x=True, y=True, alpha=0.25)
        # The legend sits under the plot, never over its points.
        self.convergence_legend = QLabel()
        self.convergence_legend.setWordWrap(True)
        self.convergence_legend.setTextFormat(Qt.TextFormat.RichText)
        self.summary = QLabel()
        self.summary.setObjectName("hint")
        self.summary.setWordWrap(True)

        s2_host = QWidget()
        s2_layout = QVBoxLayout(s2_host)
        s2_layout.setContentsMargins(0, 0, 0, 0)
        s2_layout.addWidget(self.s2_plot, 1)
        s2_layout.addWidget(self.s2_value)
        s2_layout.addWidget(self.s2_note, 1)
        convergence_host = QWidget()
        convergence_layout = QVBoxLayout(convergence_host)
        convergence_layout.setContentsMargins(0, 0, 0, 0)
        convergence_layout.addWidget(self.convergence, 1)
        convergence_layout.addWidget(self.convergence_legend)
        lower = QSplitter(Qt.Orientation.Horizontal)
        lower.addWidget(s2_host)
        lower.addWidget(convergence_host)
        lower.setSizes([480, 420])
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.bars)
        split.addWidget(lower)
        split.setSizes([360, 300])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.summary)
        layout.addWidget(split, 1)
        self.show_s2(None)

    def tick_names(self) -> list[str]:
        """The feature names on the bar chart's x axis, left to right."""
        ticks = self.bars.getAxis("bottom")._tickLevels
        return [name for _, name in ticks[0]] if ticks else []

    def show_result(self, result, spread=None) -> None:
        """``result``: a SobolResult (an ensemble's mean); ``spread``: the ST spread across its networks."""
        self.names = list(result.names)
        self.order = [int(i) for i in np.argsort(-np.asarray(result.ST), kind="stable")]
        x = np.arange(len(self.order), dtype=float)
        s1 = np.asarray(result.S1)[self.order]
        st = np.asarray(result.ST)[self.order]
        s1c = np.nan_to_num(np.asarray(result.S1_conf)[self.order])
        stc = np.nan_to_num(np.asarray(result.ST_conf)[self.order])
        self.bars.clear()
        self.bars.addItem(pg.BarGraphItem(x=x - 0.18, height=s1, width=0.34, brush=S1_COLOUR, pen=pg.mkPen(None), name="S1 (first order)"))
        self.bars.addItem(pg.BarGraphItem(x=x + 0.18, height=st, width=0.34, brush=ST_COLOUR, pen=pg.mkPen(None), name="ST (total)"))
        for offset, values, conf in ((-0.18, s1, s1c), (0.18, st, stc)):
            self.bars.addItem(pg.ErrorBarItem(x=x + offset, y=values, top=conf, bottom=conf, beam=0.12, pen=pg.mkPen("#333333", width=1)))
        self.spread = None if spread is None else np.nan_to_num(np.asarray(spread, dtype=float)[self.order])
        add_intervals(self.bars, x + 0.18, st, stc, self.spread)
        self.bars.getAxis("bottom").setTicks([[(float(i), self.names[j]) for i, j in enumerate(self.order)]])
        self.bars.addItem(pg.InfiniteLine(pos=0, angle=0, pen=pg.mkPen("#666666", width=1)))
        output = getattr(result, "output_name", "the output")
        networks = "" if spread is None else " (ensemble mean)"
        self.bars.setTitle(f"Sobol indices of {output}{networks}: N = {result.n}, {result.n_evaluations} evaluations, {int(result.conf_level * 100)}% intervals", size="10pt")
        self.bars.autoRange()
        self.show_s2(result.S2)
        self.show_convergence(result.convergence)
        self.summary.setText(f"Ranking by ST: {', '.join(self.names[j] for j in self.order)}   ·   time {result.total_s:.2f} s" + (f"   ·   {'; '.join(result.notes)}" if result.notes else ""))

    def show_s2(self, s2) -> None:
        has = s2 is not None
        self.s2_plot.setVisible(has)
        self.s2_note.setVisible(not has)
        self.s2_value.setVisible(has)
        if not has:
            self.s2_image.clear()
            self.s2_matrix = None
            return
        # SALib fills the upper triangle (i < j, in the result's own input order) only: mirror it
        # there, then reorder by ST. Reordering first would move half the pairs below the diagonal
        # and lose them.
        matrix = np.asarray(s2, dtype=float)
        matrix = np.where(np.isfinite(matrix), matrix, 0.0)
        symmetric = np.triu(matrix, 1) + np.triu(matrix, 1).T
        full = symmetric[np.ix_(self.order, self.order)]
        self.s2_matrix = full
        self.s2_image.setImage(full.astype(np.float32))
        n = len(self.order)
        self.s2_image.setRect(-0.5, -0.5, n, n)
        high = max(float(np.abs(full).max()), 1e-6)
        self.s2_bar.setLevels((min(0.0, float(full.min())), high))
        ticks = [[(float(i), self.names[j]) for i, j in enumerate(self.order)]]
        self.s2_plot.getAxis("bottom").setTicks(ticks)
        self.s2_plot.getAxis("left").setTicks(ticks)
        # Room for the longest name at 8 pt, so no label is clipped.
        self.s2_plot.getAxis("left").setWidth(int(12 + 7 * max(len(name) for name in self.names)))
        self.s2_plot.getAxis("bottom").setHeight(28)
        self.s2_plot.setRange(xRange=(-0.5, n - 0.5), yRange=(-0.5, n - 0.5), padding=0)

    def s2_text(self, row: int, column: int) -> str:
        """What pointing at heat-map cell (row, column) shows: the pair and its S2."""
        if self.s2_matrix is None or not (0 <= row < len(self.order) and 0 <= column < len(self.order)):
            return ""
        a, b = self.names[self.order[row]], self.names[self.order[column]]
        if row == column:
            return f"{a}: the diagonal has no S2"
        return f"S2({a}, {b}) = {self.s2_matrix[row, column]:.4f}"

    def _s2_hover(self, position) -> None:
        if self.s2_matrix is None:
            return
        point = self.s2_plot.getPlotItem().vb.mapSceneToView(position)
        text = self.s2_text(int(round(point.y())), int(round(point.x())))
        self.s2_value.setText(text or "Point at a cell for its S2 value.")
        self.s2_plot.setToolTip(text)

    def show_convergence(self, steps: list[dict]) -> None:
        plot = self.convergence
        plot.clear()
        if not steps:
            self.convergence_legend.setText("")
            return
        sizes = np.array([math.log2(step["n"]) for step in steps])
        values = np.array([step["ST"] for step in steps], dtype=float)
        keys = []
        for rank, index in enumerate(self.order):
            colour = FEATURE_COLOURS[rank % len(FEATURE_COLOURS)]
            plot.plot(sizes, values[:, index], pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=6, symbolBrush=colour)
            keys.append(f"<span style='color:{colour}'>&#9632;</span>&nbsp;{self.names[index]}")
        self.convergence_legend.setText(" &nbsp; ".join(keys))
        plot.getAxis("bottom").setTicks([[(float(s), str(int(2**s))) for s in sizes]])
        plot.autoRange()


class MethodsView(QWidget):
    """Ensemble results of any method: the chosen method's bars (mean, bootstrap interval and spread
    across networks) and the table of every method's ranking side by side."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.ensembles: dict = {}
        self.method_box = QComboBox()
        self.method_box.setToolTip("The method whose ensemble means are drawn")
        self.method_box.currentTextChanged.connect(self._draw)
        self.bars = styled_plot("Run a method to see its ensemble means", "index")
        legend(self.bars)
        self.table = QTableWidget(0, 0)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.summary = QLabel("Each method runs on every network of the ensemble; the table compares their rankings (1 = most influential).")
        self.summary.setObjectName("hint")
        self.summary.setWordWrap(True)
        top = QHBoxLayout()
        top.addWidget(QLabel("Show"))
        top.addWidget(self.method_box)
        top.addWidget(self.summary, 1)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.bars)
        split.addWidget(self.table)
        split.setSizes([360, 260])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(top)
        layout.addWidget(split, 1)

    def show_results(self, ensembles: dict, current: str | None = None) -> None:
        """``ensembles``: method name -> EnsembleResult; ``current``: the one drawn."""
        self.ensembles = dict(ensembles)
        self.method_box.blockSignals(True)
        self.method_box.clear()
        self.method_box.addItems(list(self.ensembles))
        self.method_box.setCurrentText(current or next(iter(self.ensembles), ""))
        self.method_box.blockSignals(False)
        self._draw(self.method_box.currentText())
        self._fill_table()

    def _draw(self, method: str) -> None:
        ensemble = self.ensembles.get(method)
        self.bars.clear()
        if ensemble is None:
            return
        from engine.app.tabular import METHOD_TITLES

        order = np.argsort(-np.nan_to_num(ensemble.mean, nan=-np.inf), kind="stable")
        x = np.arange(len(order), dtype=float)
        mean = np.nan_to_num(ensemble.mean[order])
        conf = ensemble.conf[order]
        has_conf = bool(np.isfinite(conf).any())
        self.bars.addItem(pg.BarGraphItem(x=x, height=mean, width=0.6, brush=ST_COLOUR, pen=pg.mkPen(None), name=f"{ensemble.measure} (mean of {len(ensemble.runs)})"))
        if has_conf:
            c = np.nan_to_num(conf)
            self.bars.addItem(pg.ErrorBarItem(x=x, y=mean, top=c, bottom=c, beam=0.12, pen=pg.mkPen("#333333", width=1)))
        add_intervals(self.bars, x, mean, conf if has_conf else None, np.nan_to_num(ensemble.spread[order]))
        self.bars.getAxis("bottom").setTicks([[(float(i), ensemble.names[j]) for i, j in enumerate(order)]])
        self.bars.setTitle(f"{METHOD_TITLES[method]}: {ensemble.measure}, {len(ensemble.runs)} networks, Kendall's W {ensemble.kendall_w:.2f}", size="10pt")
        self.bars.autoRange()

    def _fill_table(self) -> None:
        from engine.app.tabular import MethodComparison

        table = self.table
        table.clear()
        if not self.ensembles:
            table.setRowCount(0)
            return
        comparison = MethodComparison.from_ensembles(list(self.ensembles.values()))
        ranks = comparison.rank_table()
        methods = comparison.methods
        order = sorted(range(len(comparison.names)), key=lambda i: sum(ranks[m][i] for m in methods))
        table.setColumnCount(len(methods))
        table.setRowCount(len(order) + 1)
        table.setHorizontalHeaderLabels(methods)
        table.setVerticalHeaderLabels([comparison.names[i] for i in order] + ["networks W"])
        for column, method in enumerate(methods):
            ensemble = self.ensembles[method]
            for row, i in enumerate(order):
                item = QTableWidgetItem(f"{ranks[method][i]:g}")
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                item.setToolTip(f"{ensemble.measure} {ensemble.mean[i]:.4f} +- {ensemble.spread[i]:.4f} across {len(ensemble.runs)} networks")
                table.setItem(row, column, item)
            w = QTableWidgetItem(f"{comparison.network_w[method]:.2f}")
            w.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
            table.setItem(len(order), column, w)
        table.resizeColumnsToContents()
        if len(methods) > 1:
            self.summary.setText(f"Rank of each input by method (1 = most influential). Kendall's W across the {len(methods)} methods: {comparison.kendall_w:.2f}")

    def rank_texts(self) -> dict[str, list[str]]:
        """Input name -> the ranks shown in its row, method by method."""
        return {self.table.verticalHeaderItem(r).text(): [self.table.item(r, c).text() for c in range(self.table.columnCount())] for r in range(self.table.rowCount())}


class ReductionView(QWidget):
    """The test metric against the number of inputs k, for top-k by Sobol rank and for random choices."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.plot = styled_plot("Input reduction", "accuracy", "number of inputs k")
        self.plot.showGrid(x=True, y=True, alpha=0.25)
        legend(self.plot, offset=(-10, -10))
        self.summary = QLabel("Run a Sobol analysis first: its ST ranking decides which inputs are kept.")
        self.summary.setWordWrap(True)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        self.curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.table = ReductionTable()
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.plot)
        split.addWidget(self.table)
        split.setSizes([380, 240])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(self.summary, 1)
        layout.addLayout(row)
        layout.addWidget(split, 1)

    def show_running(self, message: str) -> None:
        """While a reduction runs: say so (never 'run a Sobol analysis first')."""
        self.summary.setText(f"<b>Input reduction running</b>: {message}")

    def show_result(self, result) -> None:
        plot = self.plot
        plot.clear()
        self.curves = {}
        plot.setLabel("left", result.metric.replace("_", " "))
        for selection, colour, name in (("ranked", S1_COLOUR, f"top-k by {result.rank_by}"), ("random", RANDOM_COLOUR, "random k inputs")):
            rows = sorted((r for r in result.rows if r.selection == selection), key=lambda r: r.k)
            if not rows:
                continue
            ks = np.array([r.k for r in rows], dtype=float)
            means = np.array([r.metrics[result.metric][0] for r in rows])
            spreads = np.array([r.metrics[result.metric][1] for r in rows])
            self.curves[selection] = (ks, means)
            plot.plot(ks, means, pen=pg.mkPen(colour, width=2), symbol="o", symbolSize=7, symbolBrush=colour, name=name)
            plot.addItem(pg.ErrorBarItem(x=ks, y=means, top=spreads, bottom=spreads, beam=0.15, pen=pg.mkPen(colour)))
        threshold = pg.InfiniteLine(pos=result.full_score - result.tolerance, angle=0, pen=pg.mkPen(ST_COLOUR, style=Qt.PenStyle.DashLine))
        threshold.label = pg.InfLineLabel(threshold, text=f"full model - {result.tolerance:g}", position=0.15, color=ST_COLOUR)
        recommended = pg.InfiniteLine(pos=result.recommended_k, angle=90, pen=pg.mkPen("#228833", width=2, style=Qt.PenStyle.DotLine))
        recommended.label = pg.InfLineLabel(recommended, text=f"k = {result.recommended_k}", position=0.1, color="#228833")
        plot.addItem(threshold)
        plot.addItem(recommended)
        plot.getAxis("bottom").setTicks([[(float(k), str(k)) for k in range(1, len(result.ranking) + 1)]])
        plot.autoRange()
        self.table.show_result(result)
        kept = ", ".join(result.ranking[: result.recommended_k])
        self.summary.setText(
            f"<b>Recommended k = {result.recommended_k}</b>: {kept} &nbsp;·&nbsp; full model {result.metric.replace('_', ' ')} {result.full_score:.3f}, "
            f"tolerance {result.tolerance:g} &nbsp;·&nbsp; ranking by {result.rank_by}: {', '.join(result.ranking)} &nbsp;·&nbsp; {result.elapsed_s:.1f} s"
        )


class ReductionTable(QTableWidget):
    """One row per (selection, k): the mean and std of each metric and the first seed's features; the recommended row highlighted."""

    def __init__(self, parent=None) -> None:
        super().__init__(0, 0, parent)
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.setAlternatingRowColors(True)
        self.verticalHeader().setVisible(False)
        self.horizontalHeader().setStretchLastSection(True)
        self.recommended_row: int | None = None

    def show_result(self, result) -> None:
        metrics = list(result.rows[0].metrics) if result.rows else []
        headers = ["k", "selection"] + [f"{m.replace('_', ' ')} {part}" for m in metrics for part in ("mean", "std")] + ["features (first seed)"]
        rows = sorted(result.rows, key=lambda r: (r.selection != "ranked", -r.k))
        self.clear()
        self.setColumnCount(len(headers))
        self.setHorizontalHeaderLabels(headers)
        self.setRowCount(len(rows))
        self.recommended_row = None
        for index, row in enumerate(rows):
            values = [str(row.k), row.selection]
            for metric in metrics:
                mean, std = row.metrics.get(metric, (math.nan, math.nan))
                values += [f"{mean:.4f}", f"{std:.4f}"]
            values.append(", ".join(row.features[0]) if row.features else "")
            recommended = row.selection == "ranked" and row.k == result.recommended_k
            if recommended:
                self.recommended_row = index
            for column, text in enumerate(values):
                item = QTableWidgetItem(text)
                if column != 1 and column != len(values) - 1:
                    item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if recommended:
                    item.setBackground(QBrush(QColor(RECOMMENDED_BACKGROUND)))
                    font = item.font()
                    font.setBold(True)
                    item.setFont(font)
                    item.setToolTip(f"Recommended: the fewest inputs within {result.tolerance:g} of the full model")
                self.setItem(index, column, item)
        self.resizeColumnsToContents()
        self.horizontalHeader().setSectionResizeMode(len(headers) - 1, QHeaderView.ResizeMode.Stretch)

    def row_texts(self, row: int) -> list[str]:
        return [self.item(row, column).text() for column in range(self.columnCount())]


def metrics_html(metrics: dict, elapsed: float, history: dict) -> str:
    rows = []
    for key, title in (("accuracy", "Accuracy"), ("balanced_accuracy", "Balanced accuracy"), ("roc_auc", "ROC AUC"), ("r2", "R²"), ("rmse", "RMSE")):
        if key in metrics:
            rows.append(f"<tr><td>{title}</td><td align='right'><b>{metrics[key]:.3f}</b></td></tr>")
    rows.append(f"<tr><td>Rows</td><td align='right'>{metrics.get('n_train', '?')} train · {metrics.get('n_validation', '?')} validation · {metrics.get('n_test', '?')} test</td></tr>")
    rows.append(f"<tr><td>Epochs</td><td align='right'>{history.get('epochs_run', '?')} (best {history.get('best_epoch', '?')}), {elapsed:.1f} s</td></tr>")
    html = "<b>Test metrics</b><table cellspacing='0' cellpadding='3'>" + "".join(rows) + "</table>"
    confusion, classes = metrics.get("confusion_matrix"), metrics.get("classes")
    if confusion and classes:
        head = "".join(f"<th>{c}</th>" for c in classes)
        body = ""
        for i, (name, row) in enumerate(zip(classes, confusion, strict=True)):
            cells = "".join(f"<td align='center' style='background:{'#dfeaf7' if i == j else '#f3f3f3'}'>{v}</td>" for j, v in enumerate(row))
            body += f"<tr><th align='left'>{name}</th>{cells}</tr>"
        html += f"<br><b>Confusion matrix</b> (rows: true class, columns: predicted)<table cellspacing='1' cellpadding='5'><tr><th></th>{head}</tr>{body}</table>"
    return html
