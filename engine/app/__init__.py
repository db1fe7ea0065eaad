"""The application layer: the one door through which the front-ends (cli/, gui/) reach the engine.

Torch-free at import. It holds the request types both front-ends build (``ModelSpec``,
``PreprocessOptions``, ``TargetSpec``, from engine.core.requests) and one module per area of
work, each a small set of functions that take those requests:

- ``engine.app.models``: load a model from a spec, its layers, its sidecar;
- ``engine.app.data``: images, folders, tables, the demo data;
- ``engine.app.explain``: explanation methods, their parameters and results on disk;
- ``engine.app.evaluate``: data-set studies, the result store and its runs;
- ``engine.app.tabular``: the tabular workflow (training, Sobol and the other methods, reduction);
- ``engine.app.system``: versions, devices.

The names each module offers are resolved on first use (PEP 562), so importing a module of this
layer costs nothing until a function is called; the engine's internals behind them can move
without the front-ends changing. import-linter holds cli/ and gui/ to this package and
engine.core (pyproject.toml).
"""

from __future__ import annotations

from engine.core.requests import ModelSpec, PreprocessOptions, TargetSpec, parse_model_args

__all__ = ["ModelSpec", "PreprocessOptions", "TargetSpec", "parse_model_args"]
