"""The registry of explanation methods.

Every method is one public module of ``engine.methods`` that calls :func:`register` with a
:class:`MethodSpec`: a name, a frozen parameter dataclass and an ``explain`` function with the
signature ``explain(model, inputs, target, params, *, progress, cancel) -> Explanation``. Methods
start and end through ``_base`` and leave ``elapsed_s`` at 0: ``runner.explain`` times the run.

A method that can explain several images in one forward (and backward) pass also has a batched
function, ``explain_batch(model, inputs, targets, params, *, progress, cancel) -> list[Explanation]``
for an N x C x H x W batch and one target (or None) per image, whose maps equal ``explain``'s per
image up to float rounding, given in the same spec (``explain_batch=``; the CAM family base in
``_cam`` builds both); ``runner.explain_many`` uses it where there is one and explains image by
image otherwise.

The methods are found by plugin discovery: the first look-up imports every public module of this
package (``pkgutil``), each of which registers its methods as it is imported. That is the one
import by name in ``engine.methods`` (tests/test_architecture.py keeps it so); the registry itself
imports no method module, so the import graph has no circle through it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
        return _BATCHED.get(self.name, self.explain_batch)

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
# The registered methods' batched explains by name (the specs' ``explain_batch``), the table
# ``MethodSpec.batched`` reads.
_BATCHED: dict[str, Callable] = {}
# Public modules of engine.methods that are not methods themselves.
_NOT_METHODS = {"runner"}
_LOADED = False


def register(spec: MethodSpec) -> MethodSpec:
    if spec.name in _REGISTRY and _REGISTRY[spec.name] is not spec:
        raise ValueError(f"method '{spec.name}' is registered twice")
    _REGISTRY[spec.name] = spec
    if spec.explain_batch is not None:
        _BATCHED[spec.name] = spec.explain_batch
    return spec


def _load_all() -> None:
    """Import every public module of this package once (plugin discovery; module docstring)."""
    global _LOADED
    if not _LOADED:
        for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
            if not module.name.startswith("_") and not module.ispkg and module.name not in _NOT_METHODS:
                importlib.import_module(f"{__package__}.{module.name}")
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
