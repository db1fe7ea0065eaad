"""One explanation map drawn over its image (a cell of the comparison grid)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QFrame, QHBoxLayout, QProgressBar, QStyle, QToolButton, QVBoxLayout, QWidget

from .. import colours
from ..document import CANCELLED, DONE, FAILED, KEY_PARAMS, PENDING, RUNNING, AnalysisRequest  # noqa: F401 - re-exported
from .elided_label import ElidedLabel, Run

UNTRAINED_MARK = "UNTRAINED"

METHOD_TITLES = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "local": "Local sensitivity",
    "saliency": "Saliency",
    "pertmap": "Perturbation map",
    "actmax": "Activation maximisation",
    "sobol": "Sobol indices",
}
def outline(mask: np.ndarray) -> np.ndarray:
    """The boundary pixels of a boolean mask as an RGBA image (a green line)."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    edge = mask & ~inner
    rgba = np.zeros((*mask.shape, 4), np.uint8)
    rgba[edge] = (40, 230, 90, 255)
    return rgba


def region_edges(labels: np.ndarray) -> np.ndarray:
    """The borders between the regions of a label image (Sobol's superpixels) as an RGBA image (white, half opaque)."""
    edge = np.zeros(labels.shape, bool)
    edge[1:, :] |= labels[1:, :] != labels[:-1, :]
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    rgba = np.zeros((*labels.shape, 4), np.uint8)
    rgba[edge] = (255, 255, 255, 170)
    return rgba


def map_levels(maps: list[np.ndarray]) -> tuple[float, float]:
    """Display levels: symmetric about zero when any map is signed, else the joint range."""
    finite = [m[np.isfinite(m)] for m in maps]
    finite = [f for f in finite if f.size]
    if not finite:
        return 0.0, 1.0
    low, high = min(float(f.min()) for f in finite), max(float(f.max()) for f in finite)
    if low < 0 < high:
        bound = max(-low, high)
        return -bound, bound
    if high <= low:
        return low, low + 1.0
    return low, high


class MapCell(QFrame):
    """A titled view of one analysis: the grey image, the map in colour, the mask outline, a colour bar."""

    remove_requested = Signal(object)
    rerun_requested = Signal(object)
    move_requested = Signal(object, int)  # cell, -1 (left) or +1 (right)
    clicked = Signal(object)
    menu_requested = Signal(object, object)  # cell, global position (QPoint)

    def __init__(self, cell_id: int, request: AnalysisRequest, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cell_id = cell_id
        self.request = request
        self.explanation = None
        self.image: np.ndarray | None = None  # the display image under the map (H x W x C in [0, 1])
        self.mask: np.ndarray | None = None
        self.input_path = ""  # the file the map explains
        self.state = PENDING
        self.show_colorbar = True  # the grid hides every cell's bar in shared-scale mode
        self.colormap_choice = ""  # the cell's own colour map (right-click); empty: the grid's
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setObjectName("mapCell")
        self.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.customContextMenuRequested.connect(lambda pos: self.menu_requested.emit(self, self.mapToGlobal(pos)))

        # No word wrap (a wrapping label makes the grid ask for its preferred height and scroll early):
        # each line is cut with an ellipsis to the cell's width, the full text in the tooltip.
        self.title = ElidedLabel()
        self.title.setObjectName("cellTitle")
        self.title.setMinimumWidth(60)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setMaximumWidth(90)
        self.progress.setTextVisible(False)
        self.rerun_button = self._tool_button(QStyle.StandardPixmap.SP_BrowserReload, "Run this analysis again")
        self.rerun_button.clicked.connect(lambda: self.rerun_requested.emit(self))
        self.remove_button = self._tool_button(QStyle.StandardPixmap.SP_TitleBarCloseButton, "Remove this map")
        self.remove_button.clicked.connect(lambda: self.remove_requested.emit(self))
        header = QHBoxLayout()
        header.addWidget(self.title, 1)
        header.addWidget(self.progress)
        self.left_button = self._tool_button(QStyle.StandardPixmap.SP_ArrowLeft, "Move this map left")
        self.left_button.clicked.connect(lambda: self.move_requested.emit(self, -1))
        self.right_button = self._tool_button(QStyle.StandardPixmap.SP_ArrowRight, "Move this map right")
        self.right_button.clicked.connect(lambda: self.move_requested.emit(self, 1))
        header.addWidget(self.left_button)
        header.addWidget(self.right_button)
        header.addWidget(self.rerun_button)
        header.addWidget(self.remove_button)

        self._build_graphics()

        self.footer = ElidedLabel(" ")
        self.footer.setObjectName("cellFooter")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.setSpacing(2)
        layout.addLayout(header)
        layout.addWidget(self.graphics, 1)
        layout.addWidget(self.footer)
        self._update_title()

    def _build_graphics(self) -> None:
        """The picture: grey image, map, region outlines and mask outline, with the colour bar."""
        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setMinimumSize(200, 200)
        self.graphics.ci.setContentsMargins(2, 2, 2, 2)
        self.graphics.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.graphics.customContextMenuRequested.connect(lambda pos: self.menu_requested.emit(self, self.graphics.mapToGlobal(pos)))
        self.plot = self.graphics.addPlot(row=0, col=0)
        self.plot.hideAxis("left")
        self.plot.hideAxis("bottom")
        self.plot.setMenuEnabled(False)
        self.plot.hideButtons()
        self.plot.invertY(True)
        self.plot.setAspectLocked(True)
        self.base_item = pg.ImageItem()
        self.map_item = pg.ImageItem()
        self.mask_item = pg.ImageItem()
        self.regions_item = pg.ImageItem()  # Sobol's region outlines
        for z, item in enumerate((self.base_item, self.map_item, self.regions_item, self.mask_item)):
            item.setZValue(z)
            self.plot.addItem(item)
        # No colour map until a result shows: colour maps come from matplotlib, which is then already imported
        # (by the first job, on its worker), so the window neither loads it at start nor stalls for it.
        self.colorbar = pg.ColorBarItem(values=(0.0, 1.0), colorMap=None, interactive=False, width=12)
        self.colorbar.setImageItem(self.map_item, insert_in=self.plot)
        self.colorbar.hide()  # no bar until a map shows: a 0-1 bar over nothing would lie
        self.curve_plot = None
        self.optimised_plot = None  # activation maximisation's optimised images
        self.image_only = False  # the view shows an image, not a map (actmax started from noise)
        self.graphics.scene().sigMouseMoved.connect(self._mouse_moved)
        self.graphics.scene().sigMouseClicked.connect(lambda _event: self.clicked.emit(self))

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.clicked.emit(self)
        super().mousePressEvent(event)

    def set_selected(self, selected: bool) -> None:
        self.setProperty("selected", selected)
        self.style().unpolish(self)
        self.style().polish(self)

    def _tool_button(self, icon: QStyle.StandardPixmap, tip: str) -> QToolButton:
        button = QToolButton()
        button.setIcon(self.style().standardIcon(icon))
        button.setToolTip(tip)
        button.setAutoRaise(True)
        return button

    # ---------------------------------------------------------------- state
    def _update_title(self, detail: str = "", method_notes: list[str] | None = None) -> None:
        """Method and key parameters; then input, target, model (marked when untrained) and time. The
        lines are cut to the cell's width; the untrained mark is never cut."""
        request = self.request
        name = METHOD_TITLES.get(request.method, request.method)
        params = request.key_params()
        first = [Run(name, bold=True)] + ([Run(f" ({params})", colour="gray")] if params else [])
        second = [Run(request.input_name or "(no input)"), Run(f" · target {request.target_label}")]
        model = request.model
        if model is not None:
            second.append(Run(f" · model {model.name()}"))
            if model.untrained:
                warning = self.palette().color(QPalette.ColorRole.BrightText).name()
                second.append(Run(f" {UNTRAINED_MARK}", bold=True, colour=warning, keep=True))
        if detail:
            second.append(Run(f" · {detail}"))
        self.title.set_lines([(first, False), (second, True)])
        lines = self.title.text()
        notes = [f"{UNTRAINED_MARK}: random weights, its classes mean nothing"] if model is not None and model.untrained else []
        notes += [f"model source: {model.source}"] if model is not None and model.source else []
        notes += list(method_notes or [])
        self.title.setToolTip("\n".join([lines, *notes]))

    def _clear_map(self) -> None:
        """No map on screen (a pending, running or failed cell never shows an old one), and no colour bar."""
        self.explanation = None
        self.image_only = False
        self.image = self.mask = None
        for item in (self.base_item, self.map_item, self.mask_item, self.regions_item):
            item.clear()
        self.colorbar.hide()
        if self.curve_plot is not None:
            self.curve_plot.clear()
        if self.optimised_plot is not None:
            self.optimised_item.clear()

    def show_analysis(self, analysis, label_of=str) -> None:
        """Draw what the document says of this cell's analysis (gui/document.py)."""
        self.request = analysis.request
        self.input_path = analysis.request.input_path
        if analysis.status == DONE and analysis.result is not None:
            if analysis.result is not self.explanation:
                self.set_result(analysis.result, analysis.image, analysis.mask, label_of)
            return
        self._clear_map()
        self._update_title()
        if analysis.status == RUNNING:
            self.set_running(analysis.fraction, analysis.message)
        elif analysis.status == FAILED:
            self.set_failed(analysis.error)
        elif analysis.status == CANCELLED:
            self.set_cancelled()
        else:
            self.set_pending()

    def set_pending(self, text: str = "") -> None:
        self.state = PENDING
        self.progress.hide()
        self.footer.setText(text or "waiting to run for this input and model")
        self.footer.setToolTip("")

    def set_running(self, fraction: float = 0.0, message: str = "", data: object = None) -> None:
        """A job's progress report (``job.signals.progress`` connects here); the payload is not drawn yet."""
        self.state = RUNNING
        self.progress.show()
        self.progress.setValue(int(fraction * 1000))
        self.footer.setText(message or "running...")

    def set_failed(self, message: str) -> None:
        self.state = FAILED
        self.progress.hide()
        self.footer.setText(f"failed: {message}")
        self.footer.setToolTip(message)

    def set_cancelled(self) -> None:
        self.state = CANCELLED
        self.progress.hide()
        self.footer.setText("cancelled: press the run button to compute it")

    def set_result(self, explanation, image: np.ndarray | None, mask: np.ndarray | None, label_of=str) -> None:
        """Show a finished explanation over its (display) image, with the mask outline if any."""
        self.state = DONE
        self.explanation = explanation
        self.image, self.mask = image, mask
        self.progress.hide()
        self.colorbar.show() if self.show_colorbar else self.colorbar.hide()
        if image is not None:
            gray = image.mean(axis=2) if image.ndim == 3 else image
            self.base_item.setImage(np.ascontiguousarray(gray, dtype=np.float32), levels=(0.0, 1.0))
        levels = map_levels([explanation.map])
        if self.colorbar.colorMap() is None:  # coloured at once; the grid's display settings follow (apply_display)
            self.colorbar.setColorMap(colours.colormap(colours.resolve("auto", levels[0] < 0 < levels[1])))
        self.map_item.setImage(explanation.map, levels=levels)
        colours.label_bar(self.colorbar, *levels, self.value_label())
        if mask is not None and mask.shape == explanation.map.shape and mask.any():
            self.mask_item.setImage(outline(mask), levels=(0, 255))
        else:
            self.mask_item.clear()
        probability = explanation.target_probability if explanation.target_probability is not None else None
        target = label_of(explanation.target) + (f" (p {probability:.2f})" if probability is not None else "")
        self.request = dataclasses.replace(self.request, target_label=target)
        detail = f"{explanation.elapsed_s:.2f} s on {explanation.device}"
        if explanation.extras.get("stability") is not None:  # pertmap with repeats >= 2
            detail += f" · stability (Spearman of {explanation.params.repeats} runs) {explanation.extras['stability']:.2f}"
        if explanation.extras.get("engine") == "incremental":  # local: which forwards ran (the tooltip has the notes)
            detail += " · incremental"
        self._update_title(detail, [str(note) for note in explanation.extras.get("notes") or []])
        self.footer.setToolTip("")
        self.footer.setText(f"range {float(np.nanmin(explanation.map)):.3g} to {float(np.nanmax(explanation.map)):.3g}")
        if explanation.extras.get("convergence"):
            self._show_convergence(explanation.extras["convergence"], explanation.extras.get("index", "ST"))
        else:
            self._show_curve(explanation.extras.get("objective"))
        self._show_optimised(explanation, label_of)
        self._image_only(explanation)
        labels = explanation.extras.get("labels")
        if isinstance(labels, np.ndarray) and labels.shape == explanation.map.shape:
            self.regions_item.setImage(region_edges(labels), levels=(0, 255))
        else:
            self.regions_item.clear()
        self.plot.autoRange(padding=0)

    def _image_only(self, explanation) -> None:
        """Activation maximisation from noise or a flat image: a change map over the input means nothing,
        so the view shows the optimised image itself, with no map and no colour bar."""
        params = explanation.params
        init = params.get("init") if isinstance(params, dict) else getattr(params, "init", None)
        self.image_only = explanation.method == "actmax" and init not in (None, "input") and explanation.extras.get("images") is not None
        if not self.image_only:
            return
        image = np.clip(np.asarray(explanation.extras["images"][0], dtype=np.float32), 0.0, 1.0)
        self.base_item.setImage(image if image.shape[-1] == 3 else image[..., 0], levels=(0.0, 1.0))
        self.map_item.clear()
        self.mask_item.clear()
        self.colorbar.hide()
        self.footer.setText(f"the optimised image (init={init}); start from the input (init=input) for a change map")

    def has_map(self) -> bool:
        """A map with a colour scale is on screen (not a pending cell, not an optimised image)."""
        return self.explanation is not None and not self.image_only

    def _curve_area(self, title: str):
        """The small plot under the map (made on first use), cleared and titled."""
        if self.curve_plot is None:
            self.curve_plot = self.graphics.addPlot(row=1, col=0)
            self.curve_plot.setMinimumHeight(110)
            self.curve_plot.setMaximumHeight(140)
            for axis in ("left", "bottom"):
                self.curve_plot.getAxis(axis).setStyle(maxTickLevel=0, tickFont=self.font())
            self.curve_plot.setMenuEnabled(False)
            self.curve_plot.hideButtons()
        self.curve_plot.setTitle(title, size="8pt")
        self.curve_plot.clear()
        return self.curve_plot

    def _show_convergence(self, steps: list[dict], index: str, shown: int = 5) -> None:
        """Sobol's convergence view: the index of the largest regions at N/4, N/2 and N (log2 N on x)."""
        if len(steps) < 2:
            return
        sizes = np.array([step["n"] for step in steps], dtype=float)
        values = np.array([step[index] for step in steps], dtype=float)  # steps x regions; null reads as NaN
        top = np.argsort(-np.nan_to_num(values[-1], nan=-np.inf), kind="stable")[:shown]
        plot = self._curve_area(f"{index} of the top regions by log2 N")
        for rank, region in enumerate(top):
            plot.plot(np.log2(sizes), values[:, region], pen=pg.mkPen(pg.intColor(rank, hues=shown), width=1.5))
        change = float(np.nanmax(np.abs(values[-1, top] - values[-2, top])))
        at = ", ".join(f"{n:g}" for n in sizes)
        self.setToolTip(f"convergence: {index} of the {len(top)} largest regions at N = {at}; the largest change from N = {sizes[-2]:g} to {sizes[-1]:g} is {change:.3g}")

    def _show_curve(self, values) -> None:
        """The objective by step (pertmap, actmax): one line per optimised target, readable axes."""
        if values is None or len(values) < 2:
            return
        values = np.asarray(values, dtype=float)
        values = values.reshape(len(values), -1)  # steps x targets
        plot = self._curve_area("objective by step")
        steps = self.explanation.extras.get("steps") if self.explanation is not None else None
        x = np.asarray(steps, dtype=float) if steps is not None and len(steps) == len(values) else np.arange(len(values), dtype=float)
        for column in range(values.shape[1]):
            plot.plot(x, values[:, column], pen=pg.mkPen(pg.intColor(column, hues=max(values.shape[1], 1)) if column else "#3a7bd5", width=1.5))
        first = values[:, 0]
        self.setToolTip(f"objective: {first[0]:.4g} at the first record, {first[-1]:.4g} at the last ({len(first)} records)")

    def _show_optimised(self, explanation, label_of=str) -> None:
        """Activation maximisation: the optimised image of every target, side by side under the map."""
        images = explanation.extras.get("images")
        if images is None:
            if self.optimised_plot is not None:
                self.optimised_item.clear()
                self.optimised_plot.setTitle("")
            return
        images = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        gap = np.ones((images.shape[1], max(2, images.shape[2] // 24), 3), np.float32)
        strip = np.concatenate([part for image in images for part in (image, gap)][:-1], axis=1)
        if self.optimised_plot is None:
            self.optimised_plot = self.graphics.addPlot(row=2, col=0)
            for axis in ("left", "bottom"):
                self.optimised_plot.hideAxis(axis)
            self.optimised_plot.setMenuEnabled(False)
            self.optimised_plot.hideButtons()
            self.optimised_plot.invertY(True)
            self.optimised_plot.setAspectLocked(True)
            self.optimised_plot.setMaximumHeight(120)
            self.optimised_item = pg.ImageItem()
            self.optimised_plot.addItem(self.optimised_item)
        self.optimised_item.setImage(strip, levels=(0.0, 1.0))
        targets = list(explanation.extras.get("targets") or range(len(images)))
        kind = explanation.extras.get("objective_kind", "logit")
        names = [label_of(t) if kind == "logit" else f"channel {t}" for t in targets]
        self.optimised_plot.setTitle("optimised image: " + ", ".join(names), size="8pt")
        self.optimised_plot.autoRange(padding=0)

    def apply_display(self, colormap_name: str, opacity: float, levels: tuple[float, float] | None, show_mask: bool, normalise: bool = False, show_regions: bool = True) -> None:
        """Colour map (a matplotlib name; 'auto': diverging for signed maps; the cell's own choice wins),
        opacity, levels (None: the map's own), mask outline, and ``normalise``: the map divided by its
        largest absolute value, so that maps of different methods share one 0-1 (or -1-1) scale."""
        if self.explanation is None or self.image_only:
            return
        data = self.explanation.map
        if normalise:
            peak = float(np.nanmax(np.abs(data))) if data.size else 0.0
            data = data / peak if peak > 0 else data
        self.map_item.setImage(data, autoLevels=False)
        own = map_levels([data])
        low, high = levels or own
        self.colorbar.setColorMap(colours.colormap(colours.resolve(self.colormap_choice or colormap_name, low < 0 < high)))
        self.colorbar.setLevels((low, high))
        colours.label_bar(self.colorbar, low, high, "map / max |map|" if normalise else self.value_label())
        self.map_item.setOpacity(opacity)
        self.mask_item.setVisible(show_mask)
        self.regions_item.setVisible(show_regions)

    def value_label(self) -> str:
        return f"{METHOD_TITLES.get(self.request.method, self.request.method)} value"

    def link_to(self, other: MapCell | None) -> None:
        view = other.plot.getViewBox() if other is not None else None
        self.plot.setXLink(view)
        self.plot.setYLink(view)

    def _mouse_moved(self, pos) -> None:
        if self.explanation is None or not self.plot.sceneBoundingRect().contains(pos):
            return
        point = self.plot.getViewBox().mapSceneToView(pos)
        x, y = int(np.floor(point.x())), int(np.floor(point.y()))
        data = self.explanation.map
        if 0 <= y < data.shape[0] and 0 <= x < data.shape[1]:
            self.footer.setText(f"x {x}, y {y}: {float(data[y, x]):.4g}")
