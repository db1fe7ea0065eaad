"""Every sensitivity method on one tabular network: Sobol, Morris, FAST, RBD-FAST (sampled through
the chosen input distribution), delta and PAWN (on the observed rows), DGSM (autograd).

The sampled methods draw points of the unit cube and map each coordinate through the inverse of
the input's distribution (the empirical quantile function by default), so every method sees the
inputs the Sobol analysis sees. Delta and PAWN need no sampling at all: they read the table's own
rows and the network's outputs on them, so correlated inputs stay as correlated as in the data.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from engine.core.errors import UserError
from engine.core.progress import CancelToken, ProgressFn, resolve
from engine.stats import screening
from engine.stats.screening import MEASURES, MethodResult, from_sobol
from engine.tabular.dataset import TabularData
from engine.tabular.sensitivity import build_problem, model_output, positive_class, tabular_sobol

METHODS = tuple(MEASURES)
SAMPLED = ("morris", "fast", "rbd_fast", "dgsm")
GIVEN_DATA = ("delta", "pawn")


def _inverse_cdf(u: np.ndarray, bounds: list[float], dist: str) -> np.ndarray:
    """A column of the unit cube through the inverse distribution SALib would have sampled."""
    from scipy.special import ndtr, ndtri

    u = np.clip(u, 1e-9, 1 - 1e-9)
    if dist == "unif":
        return bounds[0] + u * (bounds[1] - bounds[0])
    if dist == "norm":
        return bounds[0] + bounds[1] * ndtri(u)
    low, high, mean, std = bounds  # truncnorm
    a, b = ndtr((low - mean) / std), ndtr((high - mean) / std)
    return mean + std * ndtri(a + u * (b - a))


def unit_to_features(data: TabularData, dist: str = "empirical"):
    """(problem, map): the map takes (M, D) points of the unit cube to feature rows under ``dist``
    (integer inputs rounded, categorical ones uniform over their categories, as for Sobol)."""
    problem, to_features = build_problem(data, dist)

    def convert(unit: np.ndarray) -> np.ndarray:
        scaled = np.column_stack([_inverse_cdf(unit[:, i], b, d) for i, (b, d) in enumerate(zip(problem["bounds"], problem["dists"], strict=True))])
        return to_features(scaled)

    return problem, convert


def poincare_constants(data: TabularData, problem: dict) -> tuple[np.ndarray, list[str]]:
    """C_i of DGSM's bound ST_i <= C_i nu_i / V: (b - a)^2 / pi^2 for an input on [a, b] (exact for
    uniform inputs; Sobol and Kucherenko 2009), sigma^2 for a normal one (Lamboni et al. 2013); NaN
    for categorical inputs, which have no derivative."""
    constants, notes = [], []
    for feature, bounds, dist in zip(data.features, problem["bounds"], problem["dists"], strict=True):
        if feature.kind == "categorical":
            constants.append(math.nan)
        elif dist == "unif":
            constants.append((feature.maximum - feature.minimum) ** 2 / math.pi**2)
        else:
            constants.append(bounds[1] ** 2 if dist == "norm" else bounds[3] ** 2)
    if any(f.kind == "categorical" for f in data.features):
        notes.append("categorical inputs have no derivative; their DGSM is left empty")
    return np.array(constants), notes


def dgsm_network(model: nn.Module, data: TabularData, *, n: int = 1024, dist: str = "empirical", class_index: int = 0, seed: int = 0) -> MethodResult:
    """DGSM of the network by autograd at N points drawn from ``dist``: nu_i = E[(df/dx_i)^2] in
    the input's own units, and the bound C_i nu_i / V (Sobol and Kucherenko 2009)."""
    import time

    start = time.perf_counter()
    problem, convert = unit_to_features(data, dist)
    rng = np.random.default_rng(seed)
    rows = convert(rng.random((max(16, int(n)), len(data.names))))
    x = torch.as_tensor(rows, dtype=torch.float32).requires_grad_(True)
    with torch.enable_grad():
        out = model(x)
        values = torch.softmax(out, 1)[:, class_index] if data.task == "classification" else out[:, 0]
        (gradients,) = torch.autograd.grad(values.sum(), x)
    constants, notes = poincare_constants(data, problem)
    estimate = screening.dgsm_estimate(gradients.double().numpy(), values.detach().double().numpy(), constants, data.names)
    for key in estimate:
        estimate[key][np.isnan(constants)] = math.nan
    if dist in ("empirical", "uniform"):
        notes.append("the bound uses the uniform constant (b - a)^2 / pi^2 of each observed range: exact for uniform inputs, a ranking figure for the empirical ones")
    return MethodResult("dgsm", list(data.names), estimate, len(rows), time.perf_counter() - start, notes, seed=seed)


def network_method(
    model: nn.Module,
    data: TabularData,
    method: str,
    *,
    n: int | str = 1024,
    dist: str = "empirical",
    class_name: str | None = None,
    seed: int = 0,
    progress: ProgressFn | None = None,
    cancel: CancelToken | None = None,
) -> MethodResult:
    """One method's indices for one network. N is Sobol's base sample ('auto' allowed); Morris
    takes N / 8 trajectories (at least 10), FAST N points per input, RBD-FAST and DGSM N points."""
    progress, cancel = resolve(progress, cancel)
    if method not in METHODS:
        raise UserError(f"method must be one of {', '.join(METHODS)}, not '{method}'")
    class_index = positive_class(data, class_name)
    output_name = f"P({data.target} = {data.classes[class_index]})" if data.task == "classification" else data.target
    model.eval()
    if method == "sobol":
        return from_sobol(tabular_sobol(model, data, n=n, dist=dist, class_name=class_name, seed=seed, progress=progress, cancel=cancel))
    size = 1024 if n == "auto" else int(n)
    evaluate = model_output(model, data.task, class_index)
    cancel.check()
    if method in GIVEN_DATA:
        y = evaluate(data.x)
        run = screening.delta_given if method == "delta" else screening.pawn_given
        result = run(data.x.astype(np.float64), y, list(data.names), seed=seed)
        dist_name = "the observed rows"
    elif method == "dgsm":
        result, dist_name = dgsm_network(model, data, n=size, dist=dist, class_index=class_index, seed=seed), dist
    else:
        _, convert = unit_to_features(data, dist)

        def fn(unit: np.ndarray) -> np.ndarray:
            return evaluate(convert(unit))

        if method == "morris":
            result = screening.morris(fn, list(data.names), trajectories=max(10, size // 8), seed=seed)
        else:
            result = (screening.fast if method == "fast" else screening.rbd_fast)(fn, list(data.names), n=size, seed=seed)
        dist_name = dist
    result.output_name, result.distribution = output_name, dist_name
    progress(1.0, "done")
    return result
