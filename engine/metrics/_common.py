"""Input checks and JSON helpers shared by the metric modules."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine.core.errors import UserError


def as_map(values: Any, name: str = "map") -> np.ndarray:
    """An H x W float64 array from a numpy map or an Explanation (anything with ``.map``)."""
    values = getattr(values, "map", values)
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise UserError(f"the {name} must be H x W, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise UserError(f"the {name} holds NaN or infinite values and cannot be scored")
    return array


def as_mask(mask: Any, shape: tuple[int, ...]) -> np.ndarray:
    """A boolean H x W mask of the given shape (0/1 numbers are accepted, other values are not)."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    array = np.asarray(mask)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.shape != tuple(shape):
        raise UserError(f"the mask has shape {array.shape} but the map has shape {tuple(shape)}; they must match")
    if array.dtype != bool:
        if not np.isin(array, (0, 1)).all():
            raise UserError("the mask must be boolean (or hold only 0 and 1)")
        array = array.astype(bool)
    return array
