"""Speed-ups that leave the answer unchanged, behind one small interface.

* ``fast_copy(model, example)``: the model with its batch norms folded into the convolutions
  (a cached torch.fx copy, channels-last weights), for the methods that run a model many times
  (Integrated Gradients, SmoothGrad, Score-CAM, RISE); ``channels_last(x)`` is the input layout
  it runs fastest with, and ``first_linear(copy)`` splits it at a first convolution that a
  straight path can run by linearity.
* ``incremental_executor(model, x)``: incremental inference for window perturbations of ``x``
  (``local``): each layer recomputes only the boxes a window changes (Krypton, SIGMOD 2019).

The plain path (the user's model, run as it is on inputs as they are) is the reference: every
speed-up is checked against it (``verify``; tests/engine/test_accel.py) and falls back to it
where it cannot be exact. ``SENSISCOPE_ACCEL=0`` in the environment, or ``with disabled():``
around a run, turns them all off: ``fast_copy`` gives the model itself, ``channels_last`` the
input, ``first_linear`` None, and ``incremental_executor`` raises ``Untraceable``, so every method
takes its plain path.

The methods import this package only, never its private modules (an import-linter contract in
pyproject.toml holds them to it).
"""

from __future__ import annotations

from engine.accel._fast import FirstLinear
from engine.accel._incremental import IncrementalExecutor, Untraceable
from engine.accel._paths import channels_last, fast_copy, first_linear, incremental_executor
from engine.accel._switch import disabled, enabled
from engine.accel._verify import Verification, verify

__all__ = [
    "FirstLinear",
    "IncrementalExecutor",
    "Untraceable",
    "Verification",
    "channels_last",
    "disabled",
    "enabled",
    "fast_copy",
    "first_linear",
    "incremental_executor",
    "verify",
]
