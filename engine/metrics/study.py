"""The `evaluate` report: per method, localisation, faithfulness (deletion, insertion and optionally ROAD), the sanity check
and the time per image; every mean with its bootstrap 95% interval, and every pair of methods
compared on the same images (Wilcoxon signed-rank, Holm-corrected; engine.metrics.significance).
The run itself goes through engine.runs (engine.runs.evaluate), whose store the report is read
from, in memory or on disk.

The pointing game's tolerance is 0 by default here. The 15-pixel tolerance of the Excitation
Backprop and TorchRay benchmarks (Zhang et al., ECCV 2016; Fong et al., ICCV 2019) was set for
224-pixel ImageNet/VOC images; on the 128 x 128 phantom a 15-pixel disc around the lesion covers a
large share of the image (a lesion of radius 10 grows to radius 25: about 12% of the image), so
a map would "hit" by pointing next to the lesion. Pass ``tolerance=15`` to compare with those
benchmarks on images of their size.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.core.progress import CancelToken, resolve
from engine.io.images import InputItem, load_input, read_image
from engine.io.preprocess import Preprocess
from engine.methods.runner import explain
from engine.metrics import cascading_randomisation, explain_fn_for
from engine.metrics.significance import Comparison, bootstrap_interval, compare_methods
from engine.models.loading import LoadedModel

# Parameters that keep each method to seconds per image on a CPU for 128 x 128 inputs; the user's
# --param values override them.
EVALUATE_DEFAULTS = {
    "local": {"window": 16, "stride": 8},
    "actmax": {"init": "input", "steps": 32, "lr": 0.02, "l2": 0.01},
    # 100 steps without the plateau rule: on the 12 demo images it localised as well as the method's
    # own defaults (<= 300 steps, patch 8) at a fifth of their time (docs/pertmap-study.md)
    "pertmap": {"steps": 100, "batch_size": 8, "patch": 4, "lr": 0.1, "patience": 0},
}
# stability: the Spearman correlation of a stochastic method's runs (pertmap with repeats >= 2)
METRIC_NAMES = ("pointing", "energy", "iou", "deletion_auc", "insertion_auc", "road_morf", "road_lerf", "stability", "time_s")


def mask_for(item: InputItem, preprocess: Preprocess) -> np.ndarray | None:
    """The item's mask with the same resize and crop as its image, as booleans."""
    if item.mask is None:
        return None
    geometry = Preprocess(resize=preprocess.resize, crop=preprocess.crop, mean=(0.0,), std=(1.0,), channels=1, interpolation="nearest")
    mask = read_image(item.mask)
    return geometry.geometry(mask[:, :, :1]).numpy()[0] > 0.5


@dataclass
class MethodSummary:
    method: str
    params: dict
    values: dict[str, list[float]] = field(default_factory=lambda: {name: [] for name in METRIC_NAMES})
    deletion_curves: list[np.ndarray] = field(default_factory=list)
    insertion_curves: list[np.ndarray] = field(default_factory=list)
    fractions: np.ndarray | None = None
    sanity: list[dict] = field(default_factory=list)

    def stats(self, seed: int = 0) -> dict[str, dict]:
        """Per metric: mean, standard deviation, n and the bootstrap 95% interval of the mean."""
        out = {}
        for name, values in self.values.items():
            array = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
            interval = bootstrap_interval(array, seed=seed)
            out[name] = {
                "mean": float(array.mean()) if array.size else None,
                "std": float(array.std()) if array.size else None,
                "n": int(array.size),
                "ci_low": None if interval is None else interval[0],
                "ci_high": None if interval is None else interval[1],
            }
        return out

    def sanity_verdict(self) -> str:
        judged = [s for s in self.sanity if s["passed"] is not None]
        if not judged:
            return "not judged"
        passed = sum(1 for s in judged if s["passed"])
        return f"{'passed' if passed == len(judged) else 'FAILED'} ({passed}/{len(judged)} images; correlation after full randomisation {np.mean([s['final_correlation'] for s in judged]):.2f})"

    def to_dict(self) -> dict:
        return {"method": self.method, "params": self.params, "metrics": self.stats(), "sanity": self.sanity, "sanity_verdict": self.sanity_verdict()}


@dataclass
class EvaluationReport:
    model: str
    n_images: int
    accuracy: float | None
    methods: list[MethodSummary]
    images: list[dict]
    elapsed_s: float

    def comparisons(self) -> list[Comparison]:
        """Every pair of methods on every metric that has values (see engine.metrics.significance)."""
        if len(self.methods) < 2:
            return []
        out = []
        for name in METRIC_NAMES:
            if name == "stability":
                continue  # one method's own property, not a paired score
            values = {m.method: m.values[name] for m in self.methods}
            if any(values.values()):
                out += compare_methods(values, name)
        return out

    def to_dict(self) -> dict:
        return {
            "model": self.model,
            "n_images": self.n_images,
            "accuracy": self.accuracy,
            "methods": [m.to_dict() for m in self.methods],
            "comparisons": [c.to_dict() for c in self.comparisons()],
            "images": self.images,
            "elapsed_s": self.elapsed_s,
        }


def sanity_checks(
    loaded: LoadedModel, items: list[InputItem], method_params: dict[str, object], *, sanity_images: int = 1, sanity_layers: int = 4, seed: int = 0, cancel: CancelToken | None = None
) -> dict[str, list[dict]]:
    """The model-randomisation check of every method on the first ``sanity_images`` items that
    have a lesion mask (engine.runs.evaluate adds them to the report it reads from the run's store)."""
    _, cancel = resolve(None, cancel)
    out: dict[str, list[dict]] = {name: [] for name in method_params}
    checked = 0
    for item in items:
        if checked >= sanity_images:
            break
        mask = mask_for(item, loaded.preprocess)
        if mask is None or not mask.any():
            continue
        tensor, _ = load_input(item, loaded.preprocess)
        for name, params in method_params.items():
            result = explain(loaded, tensor, name, None, params, seed=seed, cancel=cancel)
            report = cascading_randomisation(loaded, tensor, explain_fn_for(tensor, name, result.target, params, seed=seed), max_layers=sanity_layers, seed=seed, cancel=cancel)
            out[name].append({"image": item.source, "passed": report.passed, "final_correlation": report.final_correlation, "verdict": report.verdict})
        checked += 1
    return out
