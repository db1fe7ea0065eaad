"""Demo models by name: the shipped weights file, or the cached one, trained here on first use."""

from __future__ import annotations

from pathlib import Path

from engine.core.errors import UserError
from engine.core.progress import ProgressFn, resolve
from engine.demo.catalogue import SHIPPED_MODELS, cached_model, demo_model_name, recipe_command, shipped_model
from engine.models.training import train_demo_model


def demo_model_file(spec: str, progress: ProgressFn | None = None) -> Path:
    """The weights file of a demo model (``demo:NAME``); a cached one is trained on first use,
    with its progress (and the equivalent command) reported through ``progress``."""
    name = demo_model_name(spec)
    shipped = shipped_model(name)
    if shipped.is_file():
        return shipped
    cached = cached_model(name)
    if cached.is_file():
        return cached
    if name in SHIPPED_MODELS:
        raise UserError(f"the demo model {shipped} is missing from this installation; rebuild it with: {recipe_command(name, shipped)}")
    report, _ = resolve(progress, None)
    report(0.0, f"demo:{name} is not cached yet; training it once (same as: {recipe_command(name, cached)})")
    train_demo_model(name, cached, progress=report)
    return cached
