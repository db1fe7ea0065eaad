"""The registry of explanation methods.

Every method is one public module of ``engine.methods`` that calls :func:`register` with a
:class:`MethodSpec`: a name, a frozen parameter dataclass and an ``explain`` function with the
signature ``explain(model, inputs, target, params, *, progress, cancel) -> Explanation``. Methods
start and end through ``_base`` and leave ``elapsed_s`` at 0: ``runner.explain`` times the run.

A method that can explain several images in one forward (and backward) pass also has a batched
function, ``explain_batch(model, inputs, targets, params, *, progress, cancel) -> list[Explanation]``
for an N x C x H x W batch and one target (or None) per image, whose maps equal ``explain``'s per
image up to float rounding. It is given in the spec (``explain_batch=``) or, for a method whose
module is not the batched code's, by :func:`register_batched`; ``runner.explain_many`` uses it
where there is one and explains image by image otherwise.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass

from engine.core.errors import UserError
from engine.core.params import ParamSpec, param_specs


@dataclass(frozen=True)
class Cost:
    """What a run will cost before it starts: model evaluations on one input of the given size."""

    forward: int
    backward: int = 0

    def describe(self) -> str:
        backward = f" and {self.backward:,} backward" if self.backward else ""
        return f"{self.forward:,} forward{backward} passes"


def _one_gradient(params, height: int, width: int) -> Cost:
    return Cost(1, 1)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    summary: str
    params_cls: type
    explain: Callable
    kind: str  # "gradient", "perturbation", "optimisation", ...
    needs_layer: bool = False
    # False when the method only evaluates the model (a black box): it then also runs on models
    # without gradients, such as ONNX graphs
    gradients: bool = True
    # cost(params, height, width) -> Cost: the passes a run will take, announced before long runs
    cost: Callable[..., Cost] = _one_gradient
    # explain_batch(model, inputs N x C x H x W, targets, params, *, progress, cancel) -> N
    # Explanations; None: the method explains one image at a time (see the module docstring)
    explain_batch: Callable | None = None

    @property
    def batched(self) -> Callable | None:
        """The method's batched explain, or None when it explains one image at a time."""
        _load_all()
        return self.explain_batch or _BATCHED.get(self.name)

    def params(self) -> list[ParamSpec]:
        return param_specs(self.params_cls)

    def estimate(self, params, height: int, width: int) -> Cost:
        return self.cost(params, height, width)

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "summary": self.summary,
            "kind": self.kind,
            "needs_layer": self.needs_layer,
            "gradients": self.gradients,
            "batched": self.batched is not None,
            "params": [p.to_dict() for p in self.params()],
        }


_REGISTRY: dict[str, MethodSpec] = {}
_BATCHED: dict[str, Callable] = {}
# Public modules of engine.methods that are not methods themselves.
_NOT_METHODS = {"runner"}
_LOADED = False


def register(spec: MethodSpec) -> MethodSpec:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"method '{spec.name}' is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def register_batched(name: str, explain_batch: Callable) -> None:
    """Add the batched explain of a method registered by another module (see the module docstring)."""
    _BATCHED[name] = explain_batch


def _load_all() -> None:
    global _LOADED
    if not _LOADED:
        package = importlib.import_module("engine.methods")
        for module in pkgutil.iter_modules(package.__path__):
            if not module.name.startswith("_") and module.name not in _NOT_METHODS:
                importlib.import_module(f"engine.methods.{module.name}")
        importlib.import_module("engine.methods._batched_cams")  # batched CAMs, on top of their modules
        _LOADED = True


def available_methods() -> list[MethodSpec]:
    _load_all()
    return sorted(_REGISTRY.values(), key=lambda s: s.name)


def get_method(name: str) -> MethodSpec:
    _load_all()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UserError(f"unknown method '{name}'; available: {known}") from None
