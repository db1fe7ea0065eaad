"""The record every explanation method returns."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Explanation:
    """An attribution map with everything needed to interpret and reproduce it.

    ``map`` is float32, H x W at the resolution of the preprocessed model input, with raw values
    (no normalisation: that is done only for display).
    """

    map: np.ndarray
    method: str
    params: Any
    target: int
    predicted: int
    probability: float
    device: str
    elapsed_s: float
    target_probability: float | None = None
    seed: int | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.map = np.asarray(self.map, dtype=np.float32)
        if self.map.ndim != 2:
            raise ValueError(f"an explanation map is H x W, got shape {self.map.shape}")

    @property
    def signed(self) -> bool:
        """Whether the map holds both signs (and so wants a diverging color map)."""
        return bool(np.nanmin(self.map) < 0 < np.nanmax(self.map))

    def params_dict(self) -> dict:
        return dataclasses.asdict(self.params) if dataclasses.is_dataclass(self.params) else dict(self.params)

    def summary(self) -> dict:
        """JSON-friendly metadata (no arrays)."""
        finite = self.map[np.isfinite(self.map)]
        return {
            "method": self.method,
            "params": self.params_dict(),
            "target": int(self.target),
            "target_probability": None if self.target_probability is None else float(self.target_probability),
            "predicted": int(self.predicted),
            "probability": float(self.probability),
            "device": self.device,
            "elapsed_s": round(float(self.elapsed_s), 6),
            "seed": self.seed,
            "map_shape": list(self.map.shape),
            "map_min": float(finite.min()) if finite.size else None,
            "map_max": float(finite.max()) if finite.size else None,
        }
