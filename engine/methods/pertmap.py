"""Maximally invariant data perturbation (Ikeno and Hara, 2018, "Maximizing Invariant Data
Perturbation with Stochastic Optimization").

Every input feature i gets a half-width w_i in [0, w_max]. The method looks for the largest
uniform noise x + w * xi, xi ~ U[-1, 1], that leaves the decision for class c unchanged, by
projected stochastic gradient ascent on

    J(w) = mean(w) - lam * E_xi[ (1/C) sum_{j != c} max(0, s_j(x + w * xi) - s_c(x + w * xi)) ]

where s is the softmax (``margin=probability``) or the logits (``margin=logit``) and C the
number of classes. Features that tolerate little noise are the ones the decision relies on, so
the map is ``w_max - w`` averaged over channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from engine.core.errors import UserError
from engine.core.explanation import Explanation
from engine.core.params import param
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.methods._base import OPTIMIZERS, apply_gradients, begin, finish, predict, report_step
from engine.methods._registry import Cost, MethodSpec, register
from engine.models.outputs import logits_of
from engine.runtime.batching import is_out_of_memory


@dataclass(frozen=True)
class PertmapParams:
    steps: int = param(300, "most projected stochastic gradient steps (the plateau rule usually stops sooner)", low=1, high=100000)
    batch_size: int = param(8, "noise samples drawn per step (one forward and one backward of this batch)", low=1, high=4096)
    optimizer: str = param("adam", "optimizer of the half-widths", choices=tuple(OPTIMIZERS))
    lr: float = param(0.1, "learning rate; an unopposed half-width grows by about lr per step (rmsprop: faster in its first steps)", low=1e-9, high=1e6)
    lam: float = param(100.0, "weight of the decision-change penalty against the mean half-width (larger: fewer decision changes)", low=0.0, high=1e12)
    w_max: float = param(1.0, "largest noise half-width, in normalised input units", low=1e-9, high=1e6)
    w_init: float = param(0.0, "initial half-width of every feature (at most w_max)", low=0.0, high=1e6)
    patch: int = param(8, "side of the square patches that share one half-width per channel (1: one per pixel)", low=1, high=4096)
    margin: str = param("probability", "what the penalty compares: softmax probabilities or logits", choices=("probability", "logit"))
    clip: bool = param(False, "clip the perturbed input to a valid range (see clip_range)")
    clip_range: str = param("input", "range used by clip: each channel's min/max of this input (input) or low/high (fixed)", choices=("input", "fixed"))
    low: float = param(-2.2, "lower bound of the input when clip_range=fixed (normalised units; -2.2 covers ImageNet)")
    high: float = param(2.7, "upper bound of the input when clip_range=fixed (normalised units; 2.7 covers ImageNet)")
    record_every: int = param(10, "record the objective, its terms and the changed-decision fraction every this many steps", low=1, high=100000)
    antithetic: bool = param(True, "draw the noise in pairs xi, -xi (antithetic variates): the part of the gradient's noise that is odd in xi cancels, at no extra cost")
    patience: int = param(5, "stop once the objective, averaged over blocks of record_every steps, has not risen by tol x w_max for this many blocks; 0 = run every step", low=0, high=100000)
    tol: float = param(0.005, "the rise of the block-averaged objective, as a fraction of w_max, that counts as progress for patience", low=0.0, high=1.0)
    noise: str = param("uniform", "law of xi: uniform on [-1, 1] (Ikeno and Hara 2018) or gaussian of the same variance (sd 1/sqrt(3))", choices=("uniform", "gaussian"))
    repeats: int = param(1, "independent runs (seeds seed, seed+1, ...) averaged into the map; 2 or more also give the Spearman correlation of their maps (stability; cost x repeats)", low=1, high=16)


def _upsample(w: torch.Tensor, patch: int, height: int, width: int) -> torch.Tensor:
    """Repeat each patch cell over patch x patch pixels and crop to the input size."""
    if patch == 1:
        return w
    channels, rows, cols = w.shape
    full = w[:, :, None, :, None].expand(channels, rows, patch, cols, patch).reshape(channels, rows * patch, cols * patch)
    return full[:, :height, :width]


def _clip_bounds(x: torch.Tensor, params: PertmapParams) -> tuple[torch.Tensor, torch.Tensor] | None:
    if not params.clip:
        return None
    if params.clip_range == "input":
        # Per channel, since normalisation gives each channel its own valid range.
        return x.amin(dim=(0, 2, 3), keepdim=True), x.amax(dim=(0, 2, 3), keepdim=True)
    if not params.low < params.high:
        raise UserError(f"clip needs low < high, got low={params.low} and high={params.high}")
    return torch.full_like(x[:, :1, :1, :1], params.low), torch.full_like(x[:, :1, :1, :1], params.high)


def _penalty(logits: torch.Tensor, target: int, margin: str) -> torch.Tensor:
    """Batch mean of (1/C) sum_j max(0, s_j - s_c); the j = c term is max(0, 0) = 0."""
    scores = torch.softmax(logits, dim=1) if margin == "probability" else logits
    hinge = torch.relu(scores - scores[:, target : target + 1])
    return hinge.sum(dim=1).mean() / logits.shape[1]


class _Trace:
    """J and its two terms, and the changed-decision fraction, at the recorded steps."""

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.rows: list[list[float]] = []

    def record(self, step: int, objective: torch.Tensor, mean_w: torch.Tensor, penalty: torch.Tensor, changed: torch.Tensor) -> float:
        """Keep one step's values and return its objective."""
        # One transfer from the device for the four values.
        row = torch.stack([objective.detach().float(), mean_w.detach().float(), penalty.detach().float(), changed]).cpu().tolist()
        self.steps.append(step)
        self.rows.append(row)
        return row[0]

    def extras(self) -> dict[str, list]:
        columns = ("objective", "mean_w", "penalty", "changed_fraction")
        return {"steps": self.steps, **{name: [row[i] for row in self.rows] for i, name in enumerate(columns)}}


_GAUSSIAN_STD = 1.0 / math.sqrt(3.0)  # the standard deviation of U[-1, 1]


def _draw(noise: torch.Tensor, kind: str) -> None:
    """Fill ``noise`` in place with xi: U[-1, 1], or N(0, 1/3), which has the same variance."""
    if kind == "gaussian":
        noise.normal_(0.0, _GAUSSIAN_STD)
    else:
        noise.uniform_(-1.0, 1.0)


def _objective(model, x, target: int, w, noise, bounds, params: PertmapParams) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """J = mean_w - lam * penalty on one batch of noisy copies of x; returns J, mean_w, penalty and the logits."""
    # One random draw per step, in place on the device (global RNG, seeded by the caller).
    if params.antithetic and noise.shape[0] >= 2:
        half = noise.shape[0] // 2
        _draw(noise[:half], params.noise)
        torch.neg(noise[:half], out=noise[half : 2 * half])
        _draw(noise[2 * half :], params.noise)
    else:
        _draw(noise, params.noise)
    w_full = _upsample(w, params.patch, *x.shape[2:])
    perturbed = torch.addcmul(x, noise, w_full)
    if bounds is not None:
        perturbed = torch.clamp(perturbed, bounds[0], bounds[1])
    logits = logits_of(model(perturbed)).float()
    penalty = _penalty(logits, target, params.margin)
    mean_w = w_full.mean()
    return mean_w - params.lam * penalty, mean_w, penalty, logits


def _halved(batch_size: int, device: torch.device) -> int:
    """The batch size to retry with after running out of memory."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if batch_size == 1:
        raise UserError(f"out of memory on {device} even with a batch of one; try the CPU or a smaller input") from None
    return max(1, batch_size // 2)


class _Plateau:
    """The stopping rule: the objective averaged over each block of ``record_every`` steps (on the
    device, read once per block) must rise by more than ``tol * w_max`` within ``patience`` blocks."""

    def __init__(self, params: PertmapParams) -> None:
        self.patience, self.margin = params.patience, params.tol * params.w_max
        self.best = -math.inf
        self.waited = 0
        self.total: torch.Tensor | None = None
        self.count = 0

    def add(self, objective: torch.Tensor) -> None:
        if self.patience:
            value = objective.detach().float()
            self.total = value if self.total is None else self.total + value
            self.count += 1

    def stop(self) -> bool:
        """At the end of a block: whether the objective has stopped improving."""
        if not self.patience or not self.count:
            return False
        mean = float(self.total) / self.count
        self.total, self.count = None, 0
        if mean > self.best + self.margin:
            self.best, self.waited = mean, 0
            return False
        self.best = max(self.best, mean)
        self.waited += 1
        return self.waited >= self.patience


def _optimise(model, x: torch.Tensor, target: int, params: PertmapParams, progress, cancel) -> tuple[torch.Tensor, _Trace, int, int]:
    """Projected stochastic gradient ascent on J; returns w (one per patch), the trace, the batch
    size that fitted and the number of steps taken (fewer than ``steps`` when the plateau rule stopped it)."""
    bounds = _clip_bounds(x, params)
    grid = (x.shape[1], math.ceil(x.shape[2] / params.patch), math.ceil(x.shape[3] / params.patch))
    w = torch.full(grid, params.w_init, dtype=x.dtype, device=x.device, requires_grad=True)
    optimizer = OPTIMIZERS[params.optimizer]([w], lr=params.lr)
    # The gradient is taken on J times the number of variables: the same optimum, but the
    # mean(w) term then pushes each variable with a gradient of about 1, so that lr means
    # "half-width gained per step" for sgd as it does for adam (rmsprop and adam are scale-free).
    scale = float(w.numel())
    noise = torch.empty((params.batch_size, *x.shape[1:]), dtype=x.dtype, device=x.device)
    trace, plateau = _Trace(), _Plateau(params)
    step = 0
    with torch.enable_grad():
        while step < params.steps:
            cancel.check()
            try:
                objective, mean_w, penalty, logits = _objective(model, x, target, w, noise, bounds, params)
                (grad,) = torch.autograd.grad(-objective * scale, w)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                noise = noise[: _halved(noise.shape[0], x.device)]
                continue
            apply_gradients(optimizer, [w], [grad])
            with torch.no_grad():
                w.clamp_(0.0, params.w_max)  # the projection of the projected gradient method
            plateau.add(objective)
            value = None
            # Only recorded steps report their objective: reading it waits for the device.
            if step % params.record_every == 0 or step == params.steps - 1:
                changed = (logits.detach().argmax(dim=1) != target).float().mean()
                value = trace.record(step, objective, mean_w, penalty, changed)
            step += 1
            report_step(progress, step, params.steps, value)
            if step % params.record_every == 0 and plateau.stop():
                break
    return w.detach(), trace, noise.shape[0], step


def _spearman(maps: list[torch.Tensor]) -> float | None:
    """Mean Spearman rank correlation over every pair of maps (ties get their mean rank)."""
    from scipy.stats import spearmanr

    values = [m.flatten().cpu().double().numpy() for m in maps]
    if any(v.min() == v.max() for v in values):
        return None  # a flat map has no ranking (every feature saturated or none)
    pairs = [spearmanr(values[i], values[j]).statistic for i in range(len(values)) for j in range(i + 1, len(values))]
    pairs = [p for p in pairs if math.isfinite(p)]
    return float(sum(pairs) / len(pairs)) if pairs else None


def explain(
    model: nn.Module,
    inputs: torch.Tensor,
    target: int | None,
    params: PertmapParams,
    *,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> Explanation:
    """Invariant-perturbation map of one input: w_max minus the channel mean of the optimised half-widths.

    Each step draws ``batch_size`` noise images with one in-place draw (``noise``: uniform or gaussian) on the device, runs
    one forward and one backward pass, takes an optimizer step on w and clips w to [0, w_max].
    ``extras``: ``steps`` (the recorded step numbers), ``objective``, ``mean_w`` and ``penalty``
    (J and its two terms, J = mean_w - lam * penalty, estimated on that step's batch with w as it
    was before that step's update), ``changed_fraction`` (share of that batch whose top class is
    not the target), ``w`` (final half-widths, C x H x W) and ``batch_size`` (after any halving
    for lack of memory). Each recorded step's progress report carries its J as an
    :class:`~engine.core.progress.ObjectiveValue` whose ``step`` counts the steps done, so recorded
    step s arrives as step s + 1.
    """
    progress, cancel = resolve(progress, cancel)
    x = begin(inputs, progress, cancel, "predicting")
    if params.w_init > params.w_max:
        raise UserError(f"w_init ({params.w_init}) must not exceed w_max ({params.w_max})")
    setup = predict(model, x, target)
    runs = []
    for repeat in range(params.repeats):
        if repeat:  # the caller seeded the first run; each further one draws from its own seed
            torch.manual_seed(torch.initial_seed() + repeat)
        part = _scaled(progress, repeat, params.repeats)
        runs.append(_optimise(model, x, setup.target, params, part, cancel))
    with torch.no_grad():
        w_runs = [_upsample(w, params.patch, *x.shape[2:]) for w, *_ in runs]
        # Mean of (w_max - w) rather than w_max - mean(w): exactly 0 where every channel is saturated.
        maps = [(params.w_max - w_full).mean(dim=0) for w_full in w_runs]
        relevance = torch.stack(maps).mean(dim=0)
        w_full = torch.stack(w_runs).mean(dim=0)
    _, trace, batch_size, steps_done = runs[0]
    extras = {**trace.extras(), "w": w_full.float().cpu().numpy(), "batch_size": batch_size, "steps_done": [r[3] for r in runs]}
    extras["stopped_early"] = any(r[3] < params.steps for r in runs)
    if params.repeats > 1:
        extras["stability"] = _spearman(maps)
    return finish(setup, SPEC.name, params, relevance, progress, extras)


def _scaled(progress: ProgressFn, index: int, count: int) -> ProgressFn:
    """The progress of run ``index`` of ``count`` as a part of the whole."""
    if count == 1:
        return progress

    def report(fraction: float, message: str, data=None) -> None:
        progress((index + fraction) / count, f"run {index + 1}/{count}: {message}", data)

    return report


def cost(params: PertmapParams, height: int, width: int) -> Cost:
    """Each step evaluates and differentiates a batch of noisy copies (at most: the plateau rule
    may stop a run early), for each repeat."""
    passes = params.steps * params.batch_size * params.repeats
    return Cost(passes + 1, passes)


SPEC = register(
    MethodSpec(
        name="pertmap",
        summary="Largest input noise that keeps the decision (Ikeno and Hara 2018); low tolerated noise = relevant",
        params_cls=PertmapParams,
        explain=explain,
        kind="optimisation",
        cost=cost,
    )
)
