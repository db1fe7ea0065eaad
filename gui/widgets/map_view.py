"""One explanation map drawn over its image (a cell of the comparison grid)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QProgressBar, QSizePolicy, QStyle, QToolButton, QVBoxLayout, QWidget

from .. import colours

METHOD_TITLES = {
    "gradcam": "Grad-CAM",
    "gradcam++": "Grad-CAM++",
    "local": "Local sensitivity",
    "saliency": "Saliency",
    "pertmap": "Perturbation map",
    "actmax": "Activation maximisation",
    "sobol": "Sobol indices",
}
# Parameters worth naming in a title even at their default value.
KEY_PARAMS = {"local": ("mode", "window", "stride"), "gradcam": ("layer",), "gradcam++": ("layer",), "pertmap": ("steps", "lam"), "actmax": ("objective", "steps"), "sobol": ("regions", "n")}


@dataclass
class AnalysisRequest:
    """What a cell shows: a method with its parameters, on one input, for one target."""

    method: str
    params: dict[str, Any]
    target: int | None
    target_label: str
    input_name: str
    defaults: dict[str, Any] = field(default_factory=dict)

    def key_params(self) -> str:
        shown = []
        for name, value in self.params.items():
            if name in KEY_PARAMS.get(self.method, ()) or (name in self.defaults and value != self.defaults[name]):
                if value == "" or name in ("mean", "std"):
                    continue
                shown.append(f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}")
        return ", ".join(shown)


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

    def __init__(self, cell_id: int, request: AnalysisRequest, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.cell_id = cell_id
        self.request = request
        self.explanation = None
        self.image: np.ndarray | None = None  # the display image under the map (H x W x C in [0, 1])
        self.mask: np.ndarray | None = None
        self.input_path = ""  # the file the map explains
        self.state = "queued"
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setObjectName("mapCell")

        self.title = QLabel()
        self.title.setObjectName("cellTitle")
        self.title.setTextFormat(Qt.TextFormat.RichText)
        # No word wrap: a wrapping label makes the grid ask for its preferred height and scroll early.
        self.title.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
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

        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setMinimumSize(200, 200)
        self.graphics.ci.setContentsMargins(2, 2, 2, 2)
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
        for z, item in enumerate((self.base_item, self.map_item, self.mask_item)):
            item.setZValue(z)
            self.plot.addItem(item)
        # No colour map until a result shows: colour maps come from matplotlib, which is then already imported
        # (by the first job, on its worker), so the window neither loads it at start nor stalls for it.
        self.colorbar = pg.ColorBarItem(values=(0.0, 1.0), colorMap=None, interactive=False, width=12)
        self.colorbar.setImageItem(self.map_item, insert_in=self.plot)
        self.curve_plot = None
        self.graphics.scene().sigMouseMoved.connect(self._mouse_moved)
        self.graphics.scene().sigMouseClicked.connect(lambda _event: self.clicked.emit(self))

        self.footer = QLabel(" ")
        self.footer.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.footer.setObjectName("cellFooter")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 4, 6, 4)
        layout.setSpacing(2)
        layout.addLayout(header)
        layout.addWidget(self.graphics, 1)
        layout.addWidget(self.footer)
        self._update_title()

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
    def _update_title(self, detail: str = "") -> None:
        request = self.request
        name = METHOD_TITLES.get(request.method, request.method)
        params = request.key_params()
        line = f"<b>{name}</b>" + (f" <span style='color:gray'>({params})</span>" if params else "")
        info = [request.input_name, f"target {request.target_label}"]
        if detail:
            info.append(detail)
        self.title.setText(f"{line}<br><span style='font-size:small'>{' · '.join(info)}</span>")
        self.title.setToolTip(f"{name}: {params or 'default parameters'}\n{' · '.join(info)}")

    def set_running(self, fraction: float = 0.0, message: str = "", data: object = None) -> None:
        """A job's progress report (``job.signals.progress`` connects here); the payload is not drawn yet."""
        self.state = "running"
        self.progress.show()
        self.progress.setValue(int(fraction * 1000))
        self.footer.setText(message or "running...")

    def set_failed(self, message: str) -> None:
        self.state = "failed"
        self.progress.hide()
        self.footer.setText(f"failed: {message}")
        self.footer.setToolTip(message)

    def set_cancelled(self) -> None:
        self.state = "cancelled"
        self.progress.hide()
        self.footer.setText("cancelled" + (" (showing the previous result)" if self.explanation is not None else ""))

    def set_result(self, explanation, image: np.ndarray | None, mask: np.ndarray | None, label_of=str) -> None:
        """Show a finished explanation over its (display) image, with the mask outline if any."""
        self.state = "done"
        self.explanation = explanation
        self.image, self.mask = image, mask
        self.progress.hide()
        if image is not None:
            gray = image.mean(axis=2) if image.ndim == 3 else image
            self.base_item.setImage(np.ascontiguousarray(gray, dtype=np.float32), levels=(0.0, 1.0))
        levels = map_levels([explanation.map])
        if self.colorbar.colorMap() is None:  # coloured at once; the grid's display settings follow (apply_display)
            self.colorbar.setColorMap(colours.colormap(colours.resolve("auto", levels[0] < 0 < levels[1])))
        self.map_item.setImage(explanation.map, levels=levels)
        if mask is not None and mask.shape == explanation.map.shape and mask.any():
            self.mask_item.setImage(outline(mask), levels=(0, 255))
        else:
            self.mask_item.clear()
        probability = explanation.target_probability if explanation.target_probability is not None else None
        target = label_of(explanation.target) + (f" (p {probability:.2f})" if probability is not None else "")
        self.request = dataclasses.replace(self.request, target_label=target)
        self._update_title(f"{explanation.elapsed_s:.2f} s on {explanation.device}")
        self.footer.setText(f"range {float(np.nanmin(explanation.map)):.3g} to {float(np.nanmax(explanation.map)):.3g}")
        if explanation.extras.get("convergence"):
            self._show_convergence(explanation.extras["convergence"], explanation.extras.get("index", "ST"))
        else:
            self._show_curve(explanation.extras.get("objective"))
        self.plot.autoRange(padding=0)

    def _curve_area(self, title: str):
        """The small plot under the map (made on first use), cleared and titled."""
        if self.curve_plot is None:
            self.curve_plot = self.graphics.addPlot(row=1, col=0)
            self.curve_plot.setMaximumHeight(80)
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
        if values is None or len(values) < 2:
            return
        values = np.asarray(values, dtype=float).ravel()
        self._curve_area("objective by step")
        steps = self.explanation.extras.get("steps") if self.explanation is not None else None
        x = np.asarray(steps, dtype=float) if steps is not None and len(steps) == len(values) else np.arange(len(values), dtype=float)
        self.curve_plot.plot(x, values, pen=pg.mkPen("#3a7bd5", width=1.5))
        self.setToolTip(f"objective: {values[0]:.4g} at the first record, {values[-1]:.4g} at the last ({len(values)} records)")

    def apply_display(self, colormap_name: str, opacity: float, levels: tuple[float, float] | None, show_mask: bool) -> None:
        """Colour map (a matplotlib name; 'auto': diverging for signed maps), opacity, levels (None: the map's own) and mask outline."""
        if self.explanation is None:
            return
        own = map_levels([self.explanation.map])
        low, high = levels or own
        self.colorbar.setColorMap(colours.colormap(colours.resolve(colormap_name, low < 0 < high)))
        self.colorbar.setLevels((low, high))
        self.map_item.setOpacity(opacity)
        self.mask_item.setVisible(show_mask)

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
