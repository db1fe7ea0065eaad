"""Local sensitivity to input pixel perturbations (Miao and Matveev, 2025, arXiv:2504.15100).

Every square window of the input (all channels together) is perturbed in turn and the change of
the target output is measured:

* ``occlusion``: the window is replaced by a baseline (zero, the image's channel means, or a
  Gaussian-blurred copy of the image); a window's value is f(x) - f(x with the window replaced),
  the definition of occlusion by Zeiler and Fergus (2014) and of Captum's ``Occlusion``.
* ``additive``: delta is added to the window; a window's value is the finite difference
  (f(x + delta 1_W) - f(x)) / (delta |W|) (or the central difference), an estimate of the
  derivative per pixel, summed over channels and averaged over the window.

Windows start at 0, s, 2s, ... and, like Captum's, the last one in each direction is cut off at the
image border so that the whole image is covered. A pixel's map value is the mean of the values of
all the windows that cover it (0 where none does, possible only when the stride exceeds the window).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from engine.accel import Untraceable, channels_last, incremental_executor
from engine.accel import enabled as accel_enabled
from engine.core.errors import UserError
from engine.core.explanation import Explanation
from engine.core.params import param
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.io.blur import baseline_image
from engine.methods._base import RunSettingNames, begin, finish
from engine.methods._perturb import perturbed_outputs, reference
from engine.methods._registry import Cost, MethodSpec, register
from engine.models.outputs import OUTPUT_CHOICES, logits_of
from engine.runtime.batching import is_out_of_memory
from engine.runtime.sizing import BatchSizer, automatic_batch_size, plan_batches


@dataclass(frozen=True)
class LocalParams(RunSettingNames):
    mode: str = param(
        "occlusion",
        "occlusion: replace each window by a baseline and record the drop of the output; additive: add delta and record the finite-difference slope",
        choices=("occlusion", "additive"),
    )
    window: int = param(8, "side of the square window in pixels (1 = single pixels)", low=1)
    stride: int = param(0, "step between windows in pixels; 0 means equal to the window (no overlap)", low=0)
    baseline: str = param(
        "zero",
        "occlusion: what replaces a window: zeros, the image's per-channel mean, or a Gaussian-blurred copy of the image",
        choices=("zero", "mean", "blur"),
    )
    blur_sigma: float = param(5.0, "occlusion with the blur baseline: Gaussian standard deviation in pixels", low=0.1)
    delta: float = param(0.1, "additive: the step added to every channel of a window, in normalised input units", low=1e-6)
    central: bool = param(False, "additive: central differences (f(x+delta) - f(x-delta)) / 2 delta, twice the forward passes")
    output: str = param("logit", "what is measured: the target's logit, probability or log-probability", choices=OUTPUT_CHOICES)
    engine: str = param(
        "auto",
        "incremental: recompute only the part of each layer a window changes (exact; Krypton, SIGMOD 2019); dense: whole forward passes; auto: incremental when its estimated speed-up is worth it",
        choices=("auto", "incremental", "dense"),
    )


def window_starts(size: int, window: int, stride: int) -> list[int]:
    """Window origins along one axis, as Captum's Occlusion places them.

    Captum takes ceil((size - window) / stride) + 1 windows at 0, s, 2s, ...; the last one may run
    past the border and is then cut off there. Origins at or past the border (possible only when
    the stride exceeds the window) are dropped.
    """
    count = math.ceil((size - window) / stride) + 1
    return [i * stride for i in range(count) if i * stride < size]


def _membership(starts: list[int], window: int, size: int, device: torch.device) -> torch.Tensor:
    """n_windows x size boolean matrix: row i marks the pixels of window i along this axis."""
    begin = torch.tensor(starts, device=device)[:, None]
    pixels = torch.arange(size, device=device)[None, :]
    return (pixels >= begin) & (pixels < begin + window)


def _baseline(x: torch.Tensor, params: LocalParams) -> torch.Tensor:
    return baseline_image(x, params.baseline, params.blur_sigma)


def _check(params: LocalParams, height: int, width: int) -> int:
    """Validate what the parameter parser cannot (the image size) and return the stride."""
    if params.window < 1:
        raise UserError(f"window must be at least 1, not {params.window}")
    if params.window > min(height, width):
        raise UserError(f"window {params.window} is larger than the image ({height} x {width}); choose at most {min(height, width)}")
    if params.stride < 0:
        raise UserError(f"stride must be at least 0, not {params.stride}")
    if params.mode == "additive" and not params.delta > 0:
        raise UserError(f"delta must be positive, not {params.delta}")
    if params.mode not in ("occlusion", "additive"):
        raise UserError(f"unknown mode '{params.mode}'; choose occlusion or additive")
    return params.stride or params.window


@dataclass(frozen=True)
class _Windows:
    """The windows as products of a row and a column membership matrix (n_rows x H and n_cols x W).

    Perturbation i belongs to window i // per_window. Additive central differences need x + delta
    and x - delta per window, stored next to each other (2w is +delta, 2w + 1 is -delta).
    """

    rows: torch.Tensor
    cols: torch.Tensor
    per_window: int

    @classmethod
    def build(cls, height: int, width: int, window: int, stride: int, per_window: int, device: torch.device) -> _Windows:
        rows = _membership(window_starts(height, window, stride), window, height, device)
        cols = _membership(window_starts(width, window, stride), window, width, device)
        return cls(rows, cols, per_window)

    @property
    def grid(self) -> tuple[int, int]:
        return self.rows.shape[0], self.cols.shape[0]

    @property
    def count(self) -> int:
        return self.rows.shape[0] * self.cols.shape[0]

    @property
    def perturbations(self) -> int:
        return self.count * self.per_window

    @property
    def covered_pixels(self) -> int:
        """Pixels inside at least one window (all of them unless the stride exceeds the window)."""
        return int(self.rows.any(0).sum()) * int(self.cols.any(0).sum())

    def masks(self, index: torch.Tensor) -> torch.Tensor:
        """B x 1 x H x W mask of each perturbation's window, built by broadcasting, no loop."""
        window_index = index // self.per_window
        n_cols = self.cols.shape[0]
        return (self.rows[window_index // n_cols][:, :, None] & self.cols[window_index % n_cols][:, None, :]).unsqueeze(1)


def _perturb(x: torch.Tensor, index: torch.Tensor, windows: _Windows, baseline: torch.Tensor | None, delta: float) -> torch.Tensor:
    """The perturbed images numbered ``index``: windows replaced by the baseline, or shifted by delta."""
    mask = windows.masks(index)
    if baseline is not None:
        return torch.where(mask, baseline, x)
    sign = 1.0 - 2.0 * (index % windows.per_window).to(x.dtype)  # +1, or -1 for the second of a central pair
    return x + (delta * sign).view(-1, 1, 1, 1) * mask.to(x.dtype)


# ``auto`` keeps the incremental path when the first batch (the windows of the largest boxes, see
# ``_Forwards._order``) cut the multiply-accumulates by at least this factor. Measured on
# ResNet-18 (whole local runs against dense ones, same process, channels-last boxes): first-batch
# estimates of 2.0-2.1x at 224 px ran in about 0.4 of the dense time, 1.42x (window 16 at 112 px)
# in 0.73 of it, and 1.29x (window 32 at 112 px) as fast as dense.
AUTO_MIN_SPEEDUP = 1.35
# Elsewhere (GPUs) the threshold of the first version stays: not measured there yet, and a box
# batch is many small copies, which cost a GPU more than a CPU.
AUTO_MIN_SPEEDUP_ACCELERATOR = 3.0


def auto_threshold(device: torch.device) -> float:
    """The estimated speed-up from which ``auto`` keeps the incremental path on ``device``."""
    return AUTO_MIN_SPEEDUP if device.type == "cpu" else AUTO_MIN_SPEEDUP_ACCELERATOR


class _Forwards:
    """The forward passes of perturbed batches, dense or incremental (``engine.accel``).

    With ``engine=auto`` the incremental path runs the first batch and is kept only when its
    estimated speed-up (multiply-accumulates of the dense forwards over those done) reaches
    ``auto_threshold(device)`` (``AUTO_MIN_SPEEDUP`` on a CPU); models that cannot be traced run
    densely with a note, and a failure part-way hands the remaining windows to the dense path.
    With acceleration switched off (``SENSISCOPE_ACCEL=0``) every engine runs densely, with a note.

    Channels-last batches (``engine.accel.channels_last``) make CPU and GPU convolutions faster
    (resnet18 at 224 on a CPU: about 25% per image, outputs equal to 3e-6); the unperturbed image
    goes the same way, so f(x) and f(x perturbed) come from the same kernels.
    """

    def __init__(self, model: nn.Module, x: torch.Tensor, logits: torch.Tensor, windows: _Windows, params: LocalParams) -> None:
        self.model, self.windows, self.requested = model, windows, params.engine
        self.executor, self.notes, self.decided, self.failed = None, [], params.engine != "auto", False
        height, width = x.shape[2:]
        self.size = (min(params.window, height), min(params.window, width))
        if params.engine != "dense":
            self.executor = self._executor(model, x, logits)
        # Boxes hold whole windows: one cut off at the border is shifted inward (it then covers a
        # few unperturbed pixels too, which changes nothing).
        self.row_origins = (windows.rows.int().argmax(1).cpu()).clamp(max=height - self.size[0])
        self.col_origins = (windows.cols.int().argmax(1).cpu()).clamp(max=width - self.size[1])
        self.order = torch.arange(windows.perturbations)

    def arrange(self, windows: _Windows, batch_size: int) -> None:
        """Set ``order`` for batches of ``batch_size`` (see ``_order``)."""
        self.order = self._order(windows, batch_size)

    def _order(self, windows: _Windows, batch_size: int) -> torch.Tensor:
        """The order in which the perturbations run. Incrementally, a batch's boxes share one size,
        the largest of its windows' along each axis, and windows near a border have smaller boxes
        in the deep layers; so row and column positions are ranked by the work of their own boxes
        (``axis_costs``, largest first, so that ``auto`` decides on the costliest batch) and the
        windows run in strips of a few row ranks, walked along the column ranks and back, so that
        each batch holds a compact block of like boxes. Dense: as numbered."""
        if self.executor is None:
            return torch.arange(windows.perturbations)
        rows = self.executor.axis_costs(self.row_origins, self.size[0], 0).numpy()
        cols = self.executor.axis_costs(self.col_origins, self.size[1], 1).numpy()
        rank_rows, rank_cols = np.argsort(np.argsort(-rows, kind="stable")), np.argsort(np.argsort(-cols, kind="stable"))
        side = max(1, round(math.sqrt(max(1, batch_size // windows.per_window))))
        grid_rows, grid_cols = np.meshgrid(rank_rows, rank_cols, indexing="ij")
        r, c = grid_rows.ravel(), grid_cols.ravel()
        strip = r // side  # strips of `side` row ranks, walked in column rank, back and forth
        ranked = np.lexsort((r, np.where(strip % 2 == 0, c, -c), strip))  # the last key sorts first
        window = torch.from_numpy(ranked).long()
        return (window[:, None] * windows.per_window + torch.arange(windows.per_window)[None, :]).reshape(-1)

    def _executor(self, model: nn.Module, x: torch.Tensor, logits: torch.Tensor):
        if not getattr(model, "has_gradients", True):
            return None  # an ONNX graph: not a torch module to trace, and no note needed for that
        if not accel_enabled():
            self.notes.append("acceleration is switched off (SENSISCOPE_ACCEL=0 or engine.accel.disabled()); the perturbed images ran densely")
            return None
        try:
            executor = incremental_executor(model, channels_last(x))
        except Untraceable as exc:
            self.notes.append(f"incremental inference is not available for this model ({exc}); the perturbed images ran densely")
            return None
        traced = logits_of(executor.output).detach()
        if traced.shape != logits.shape or not torch.allclose(traced.float(), logits.float(), rtol=1e-4, atol=1e-5 * (1.0 + float(logits.abs().max()))):
            self.notes.append("the traced model does not reproduce the model's output (control flow?); the perturbed images ran densely")
            return None
        return executor

    @property
    def choice(self) -> str:
        return "incremental" if self.executor is not None else "dense"

    def __call__(self, batch: torch.Tensor, index: torch.Tensor):
        if self.executor is None:
            return self.model(channels_last(batch))
        window_index = index // self.windows.per_window
        n_cols = self.windows.cols.shape[0]
        origin = torch.stack([self.row_origins[window_index // n_cols], self.col_origins[window_index % n_cols]], 1)
        try:
            output = self.executor.run(channels_last(batch), origin, self.size)
            rows = logits_of(output).shape[0]
            if rows != batch.shape[0]:
                raise RuntimeError(f"it gave {rows} output row(s) for a batch of {batch.shape[0]}")
        except Exception as exc:  # noqa: BLE001 - an operation the executor mishandles: the rest runs densely
            if is_out_of_memory(exc):
                raise  # run_in_batches halves the batch
            first_line = (str(exc).splitlines() or [""])[0][:160]
            self.notes.append(f"the incremental executor failed on this model ({type(exc).__name__}: {first_line}); the perturbed images from there on ran densely")
            self.executor, self.decided, self.failed = None, True, True
            return self.model(channels_last(batch))
        if not self.decided:
            self.decided = True
            if self.executor.stats.estimated_speedup < auto_threshold(batch.device):
                self.notes.append(f"auto: the incremental path would save too little here (estimated speed-up {self.executor.stats.estimated_speedup:.2f}x); dense forwards were used")
                self.executor = None
        return output

    def extras(self, executor_stats) -> dict:
        # After a failure the counts stop at the failing layer: no estimate to report.
        speedup = None if executor_stats is None or self.failed else round(executor_stats.estimated_speedup, 3)
        return {"engine": self.choice, "engine_requested": self.requested, "incremental_estimated_speedup": speedup}


def _sizer(per_image: int, device: torch.device, incremental: bool) -> BatchSizer:
    """The batches of the perturbed images (``engine.runtime.sizing``). Incrementally a CPU starts
    from 32: the layers that run densely at the end are small maps, which batches of 32 use better
    (ResNet-18, 224 px, 64 interior windows of 16 pixels: 4-5% faster than batches of 16, and no
    faster at 64). Incrementally the batch never grows: the windows are ordered for the start size
    (``_Forwards._order`` puts like boxes into one batch, and ``auto`` decides on the first batch),
    so only a remembered start size is used; the batch grows once the forwards run densely."""
    automatic = automatic_batch_size(device) * (2 if incremental and device.type == "cpu" else 1)
    return plan_batches(per_image, device, automatic=automatic, variant="incremental" if incremental else "dense", grow=not incremental)


def _perturbed_outputs(forwards: _Forwards, x: torch.Tensor, target: int, windows: _Windows, params: LocalParams, sizer: BatchSizer, progress, cancel) -> torch.Tensor:
    """The target output of every perturbed image (float64, in the perturbations' numbering), run
    in the forwards' order; ``forwards`` is called with the perturbed batch and its numbers."""
    baseline = _baseline(x, params) if params.mode == "occlusion" else None
    order = forwards.order
    current = {}

    def perturb(start: int, stop: int) -> torch.Tensor:
        current["index"] = index = order[start:stop]
        return _perturb(x, index.to(x.device), windows, baseline, params.delta)

    def forward(batch: torch.Tensor):
        output = forwards(batch, current["index"])
        if forwards.executor is None:
            sizer.allow_growth("dense")  # the order stopped mattering (auto chose dense, or a failure)
        return output

    ordered, _ = perturbed_outputs(forward, windows.perturbations, perturb, target, params.output, per_image=sizer.per_item, device=x.device, progress=progress, cancel=cancel, sizer=sizer)
    outputs = torch.empty_like(ordered)
    outputs[order.to(outputs.device)] = ordered
    return outputs


def _window_values(outputs: torch.Tensor, f_x: float, windows: _Windows, params: LocalParams) -> torch.Tensor:
    """n_rows x n_cols values, in float64 so that small finite differences keep their digits."""
    out = outputs.double()
    if params.mode == "occlusion":
        values = f_x - out
    else:
        rows, cols = windows.rows.to(out.device).double(), windows.cols.to(out.device).double()
        area = (rows.sum(1)[:, None] * cols.sum(1)[None, :]).reshape(-1)  # pixels per (cut-off) window
        if params.central:
            values = (out[0::2] - out[1::2]) / (2.0 * params.delta * area)
        else:
            values = (out - f_x) / (params.delta * area)
    return values.view(*windows.grid)


def _pixel_map(values: torch.Tensor, windows: _Windows) -> torch.Tensor:
    """Each pixel's mean over the values of the windows covering it (0 where none does)."""
    # sum = R^T V C and coverage = R^T 1 C, where R and C are the row and column membership
    # matrices (windows are products of the two).
    rows, cols = windows.rows.to(values.device).double(), windows.cols.to(values.device).double()
    summed = rows.T @ values @ cols
    coverage = rows.sum(0)[:, None] * cols.sum(0)[None, :]
    return torch.where(coverage > 0, summed / coverage.clamp(min=1.0), torch.zeros_like(summed))


def explain(model: nn.Module, inputs: torch.Tensor, target: int | None, params: LocalParams, *, progress: ProgressFn | None = None, cancel: CancelToken | None = None) -> Explanation:
    """Map of the change of the target output when each window of the input is perturbed."""
    progress, cancel = resolve(progress, cancel)
    x = begin(inputs, progress, cancel, "forward")
    height, width = x.shape[2:]
    stride = _check(params, height, width)
    per_window = 2 if (params.mode == "additive" and params.central) else 1
    windows = _Windows.build(height, width, params.window, stride, per_window, x.device)
    ref = reference(model, x, target, params.output)
    setup, f_x = ref.setup, ref.f_x
    with torch.inference_mode():
        forwards = _Forwards(model, x, setup.logits, windows, params)
        sizer = _sizer(ref.per_image, x.device, forwards.executor is not None)
        forwards.arrange(windows, sizer.size)
        stats = None if forwards.executor is None else forwards.executor.stats
        outputs = _perturbed_outputs(forwards, x, setup.target, windows, params, sizer, progress, cancel)
    cancel.check()
    values = _window_values(outputs, f_x, windows, params)
    extras = {
        "forward_passes": windows.perturbations + 1,
        "windows": windows.count,
        **sizer.extras(),
        "window_values": values.float().cpu().numpy(),
        "f_x": f_x,
        "stride": stride,
        "covered_pixels": windows.covered_pixels,
        **forwards.extras(stats),
    }
    notes = list(forwards.notes)
    if windows.covered_pixels < height * width:
        notes.append(
            f"the windows cover only {windows.covered_pixels} of {height * width} pixels (stride {stride} is larger than the window {params.window}); "
            "the others were never perturbed and are 0 in the map"
        )
    if notes:
        extras["notes"] = notes
    return finish(setup, SPEC.name, params, _pixel_map(values, windows), progress, extras)


def cost(params: LocalParams, height: int, width: int) -> Cost:
    """One forward pass per window (two with central differences) and the unperturbed one."""
    stride = params.stride or params.window
    window = min(params.window, height, width)
    windows = len(window_starts(height, window, stride)) * len(window_starts(width, window, stride))
    return Cost(windows * (2 if params.mode == "additive" and params.central else 1) + 1)


SPEC = register(
    MethodSpec(
        name="local",
        summary="Change of the target output when each window of pixels is occluded or nudged (local sensitivity)",
        params_cls=LocalParams,
        explain=explain,
        kind="perturbation",
        gradients=False,
        cost=cost,
    )
)
