"""Turning a loaded CSV table into arrays for training: features, target, split, encodings."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from engine.core.errors import UserError
from engine.core.vocab import MISSING_POLICIES
from engine.io.tables import Table

SPLIT_COLUMN = "split"


@dataclass
class FeatureSpec:
    """How one input enters the network."""

    name: str
    kind: str  # numeric or categorical
    categories: list[str] = field(default_factory=list)
    integer: bool = False
    mean: float = 0.0
    std: float = 1.0
    minimum: float = 0.0
    maximum: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class TabularData:
    """Encoded features (categorical columns as category codes), target and the train/test split."""

    features: list[FeatureSpec]
    target: str
    task: str  # classification or regression
    classes: list[str]
    x: np.ndarray  # (rows, features) float32, raw numeric values and category codes
    y: np.ndarray  # class index (int64) or value (float32)
    train: np.ndarray  # boolean row masks
    test: np.ndarray
    split_source: str
    notes: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [f.name for f in self.features]

    def select(self, names: list[str]) -> TabularData:
        """The same rows and split with only some features, in the order given."""
        index = [self.names.index(n) for n in names]
        return TabularData([self.features[i] for i in index], self.target, self.task, self.classes, self.x[:, index], self.y, self.train, self.test, self.split_source, list(self.notes))


def _stratified_split(y: np.ndarray, task: str, test_fraction: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), dtype=bool)
    groups = [np.flatnonzero(y == c) for c in np.unique(y)] if task == "classification" else [np.arange(len(y))]
    for rows in groups:
        count = int(round(len(rows) * test_fraction))
        test[rng.permutation(rows)[:count]] = True
    return test


def _feature_names(frame: pd.DataFrame, target: str, features: list[str] | None, use_split: bool) -> list[str]:
    """The feature columns asked for (default: all but the target and the split), checked."""
    if features is None:
        return [c for c in frame.columns if c != target and not (use_split and c == SPLIT_COLUMN)]
    unknown = [f for f in features if f not in frame.columns]
    if unknown:
        raise UserError(f"unknown feature column(s) {', '.join(unknown)}; the columns are: {', '.join(frame.columns)}")
    if target in features:
        raise UserError(f"the target '{target}' cannot also be a feature")
    if use_split and SPLIT_COLUMN in features:
        raise UserError(f"column '{SPLIT_COLUMN}' holds the train/test split, so it cannot be a feature")
    repeated = sorted({f for f in features if features.count(f) > 1})
    if repeated:
        raise UserError(f"feature column(s) {', '.join(repeated)} listed more than once")
    return features


def _drop_missing(frame: pd.DataFrame, features: list[str], target: str, missing: str, notes: list[str]) -> tuple[pd.DataFrame, dict[str, int]]:
    """Apply the missing-value policy's row drops; imputation is left to the column encoders."""
    counts = {c: int(frame[c].isna().sum()) for c in [*features, target] if frame[c].isna().any()}
    if counts:
        listing = ", ".join(f"'{c}' ({n})" for c, n in counts.items())
        if missing == "error":
            raise UserError(f"missing values in column {listing}; choose --missing drop or --missing impute")
        # A missing target cannot be imputed, so its rows go whatever the policy.
        if target in counts or missing == "drop":
            before = len(frame)
            frame = frame.dropna(subset=[*features, target] if missing == "drop" else [target])
            notes.append(f"dropped {before - len(frame)} row(s) with missing values in {listing}")
    return frame, counts


# Fewer rows than this leave nothing to split into training and test sets.
MIN_ROWS = 4

# Beyond this, the mean and variance used for scaling overflow float64 (1e308 squared is inf).
MAX_MAGNITUDE = 1e150


def _numeric_feature(name: str, series: pd.Series, missing_count: int, notes: list[str]) -> tuple[FeatureSpec, np.ndarray]:
    values = series.astype(np.float64)
    infinite = int(np.isinf(values.to_numpy()).sum())
    if infinite:
        raise UserError(f"column '{name}' holds {infinite} infinite value(s) (inf, or a number too large for a float); fix or remove them")
    if values.abs().max() > MAX_MAGNITUDE:
        raise UserError(f"column '{name}' holds values as large as {values.abs().max():.3g}; scaling them would overflow (rescale the column, e.g. to other units)")
    if values.isna().any():  # impute policy: the median of the column
        values = values.fillna(values.median())
        notes.append(f"imputed {missing_count} missing value(s) of '{name}' with its median")
    array = values.to_numpy()
    integer = bool(np.all(np.mod(array, 1) == 0))
    spec = FeatureSpec(name, "numeric", integer=integer, mean=float(array.mean()), std=float(array.std()) or 1.0, minimum=float(array.min()), maximum=float(array.max()))
    return spec, array


def _categorical_feature(name: str, series: pd.Series, missing_count: int, notes: list[str]) -> tuple[FeatureSpec, np.ndarray]:
    numeric_share = pd.to_numeric(series.dropna(), errors="coerce").notna().mean() if series.notna().any() else 0
    # Mostly numbers with a few words is a typo or a stray label, not a categorical column.
    if 0.5 <= numeric_share < 1:
        bad = series[pd.to_numeric(series, errors="coerce").isna() & series.notna()].iloc[0]
        raise UserError(f"column '{name}' is mostly numeric but holds non-numeric value(s) such as '{bad}'")
    if series.isna().any():
        series = series.fillna(series.mode().iloc[0])
        notes.append(f"imputed {missing_count} missing value(s) of '{name}' with its most frequent category")
    categories = sorted(str(v) for v in series.dropna().unique())
    if len(categories) < 2:
        only = f"a single category ('{categories[0]}')" if categories else "no values"
        raise UserError(f"column '{name}' has {only}; it carries no information")
    array = series.astype(str).map({c: i for i, c in enumerate(categories)}).to_numpy(dtype=np.float64)
    spec = FeatureSpec(name, "categorical", categories=categories, integer=True, minimum=0.0, maximum=float(len(categories) - 1))
    return spec, array


# A classification target with more distinct values than this (or, beyond ten, one distinct value
# in every other row) is a measurement or an identifier, not a set of classes.
MAX_TARGET_CLASSES = 50


def _check_class_count(target: str, classes: int, rows: int, numeric: bool) -> None:
    if classes <= MAX_TARGET_CLASSES and not (classes > 10 and classes > rows / 2):
        return
    what = f"the target '{target}' has {classes} distinct values in {rows} rows"
    if numeric:
        raise UserError(f"{what}: it looks continuous, not a set of classes; use --task regression (classification takes at most {MAX_TARGET_CLASSES} classes)")
    raise UserError(f"{what}: too many classes to learn (at most {MAX_TARGET_CLASSES}); is it an identifier or free text? Choose another --target")


def _encode_target(series: pd.Series, target: str, numeric: bool, task: str) -> tuple[str, list[str], np.ndarray]:
    """(task, classes, y): 'auto' becomes regression for a numeric target with over ten values."""
    if task == "auto":
        task = "regression" if numeric and series.nunique() > 10 else "classification"
    if task == "classification":
        classes = sorted(str(v) for v in series.unique()) if not numeric else [str(v) for v in sorted(series.unique())]
        if len(classes) < 2:
            raise UserError(f"the target '{target}' has a single class ('{classes[0]}'); a classifier needs at least two")
        _check_class_count(target, len(classes), len(series), numeric)
        lookup = {c: i for i, c in enumerate(classes)}
        return task, classes, series.map(lambda v: lookup[str(v)]).to_numpy(dtype=np.int64)
    if task == "regression":
        if not numeric:
            raise UserError(f"the target '{target}' is not numeric, so it cannot be regressed; use a classification target")
        return task, [], series.to_numpy(dtype=np.float32)
    raise UserError(f"task must be auto, classification or regression, not '{task}'")


def _test_rows(frame: pd.DataFrame, use_split: bool, y: np.ndarray, task: str, test_fraction: float, seed: int) -> tuple[np.ndarray, str]:
    """The test-row mask and where it came from: the split column, else a stratified random split."""
    if use_split:
        split = frame[SPLIT_COLUMN].astype(str).str.strip().str.lower()
        unknown = sorted(set(split) - {"train", "test"})
        if unknown:
            raise UserError(f"column '{SPLIT_COLUMN}' must hold train or test, not {', '.join(unknown)}")
        test, source = (split == "test").to_numpy(), f"the '{SPLIT_COLUMN}' column"
    else:
        test = _stratified_split(y, task, test_fraction, seed)
        source = f"a stratified random split ({test_fraction:.0%} test, seed {seed})"
    if test.all() or not test.any():
        raise UserError("the split leaves no training or no test rows")
    return test, source


def _fit_scaling(specs: list[FeatureSpec], x: np.ndarray, train: np.ndarray) -> None:
    # The scaling stored in the model is learnt from the training rows only, never the test rows.
    for index, spec in enumerate(specs):
        if spec.kind == "numeric":
            train_values = x[train, index].astype(np.float64)
            spec.mean, spec.std = float(train_values.mean()), float(train_values.std()) or 1.0
            spec.minimum, spec.maximum = float(train_values.min()), float(train_values.max())


def prepare(
    table: Table,
    target: str,
    features: list[str] | None = None,
    *,
    task: str = "auto",
    missing: str = "error",
    test_fraction: float = 0.3,
    seed: int = 0,
) -> TabularData:
    """Check and encode a table. Problems (no usable feature, one class, non-numeric values in a
    numeric column, missing values without an explicit policy) raise UserError naming the column."""
    frame = table.frame
    if target not in frame.columns:
        raise UserError(f"no target column '{target}'; the columns are: {', '.join(frame.columns)}")
    use_split = SPLIT_COLUMN in frame.columns and target != SPLIT_COLUMN
    features = _feature_names(frame, target, features, use_split)
    if not features:
        raise UserError("no feature columns are left besides the target")
    if missing not in MISSING_POLICIES:
        raise UserError(f"missing-value policy must be one of {', '.join(MISSING_POLICIES)}")
    notes: list[str] = []
    frame = frame[[*features, target] + ([SPLIT_COLUMN] if use_split else [])].copy()
    frame, missing_counts = _drop_missing(frame, features, target, missing, notes)
    if len(frame) < MIN_ROWS:
        raise UserError(f"only {len(frame)} row(s) are left to learn from (at least {MIN_ROWS} are needed){'; ' + notes[-1] if notes else ''}")
    declared = {c.name: c for c in table.columns}
    specs, columns = [], []
    for name in features:
        encode = _numeric_feature if declared[name].kind == "numeric" else _categorical_feature
        spec, array = encode(name, frame[name], missing_counts.get(name, 0), notes)
        specs.append(spec)
        columns.append(array)
    if not any(spec.kind == "numeric" for spec in specs) and not any(c.kind == "numeric" for c in table.columns):
        raise UserError("the table has no numeric column at all; check its delimiter and decimal separator")
    task, classes, y = _encode_target(frame[target], target, declared[target].kind == "numeric", task)
    test, source = _test_rows(frame, use_split, y, task, test_fraction, seed)
    x = np.stack(columns, axis=1).astype(np.float32)
    _fit_scaling(specs, x, ~test)
    return TabularData(specs, target, task, classes, x, y, ~test, test, source, notes)
