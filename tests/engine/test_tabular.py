"""The tabular workflow: metrics, the raw-value network, training, prepare(), Sobol of the network,
input reduction and the report files. Known answers first; trainings are kept short."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from SALib.sample import sobol as sobol_sample

from engine.core.errors import UserError
from engine.core.jsonable import dumps
from engine.core.progress import EpochLosses
from engine.demo.catalogue import resolve_table
from engine.io.tables import load_table
from engine.stats.sobol import sobol_indices
from engine.tabular import TabularNet, TrainConfig, load_tabular_model, prepare, save_tabular_model, train_tabular
from engine.tabular.dataset import FeatureSpec
from engine.tabular.report import write_reduction_files, write_sobol_files
from engine.tabular.sensitivity import ReductionResult, ReductionRow, build_problem, input_reduction, positive_class, tabular_sobol
from engine.tabular.train import predict

# Full-batch training on the small synthetic tables: a fraction of the time, the same answers.
FAST = {"batch_size": 256}


def _table(folder, frame: pd.DataFrame, name: str = "table.csv"):
    path = folder / name
    frame.to_csv(path, index=False)
    return load_table(path)


def _pima_frame() -> pd.DataFrame:
    return pd.read_csv(resolve_table("demo:pima"))


@pytest.fixture(scope="module")
def pima():
    return prepare(load_table(resolve_table("demo:pima")), "type")


@pytest.fixture(scope="module")
def pima_trained(pima):
    return train_tabular(pima, TrainConfig(epochs=150, seed=0))


@pytest.fixture(scope="module")
def step_table(tmp_path_factory):
    """The class is x1 > median(x1); x2..x4 are noise."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4))
    frame = pd.DataFrame(x, columns=["x1", "x2", "x3", "x4"])
    frame["y"] = np.where(x[:, 0] > np.median(x[:, 0]), "pos", "neg")
    return prepare(_table(tmp_path_factory.mktemp("step"), frame), "y")


@pytest.fixture(scope="module")
def step_sobol(step_table):
    trained = train_tabular(step_table, TrainConfig(epochs=100, seed=0, **FAST))
    return trained, tabular_sobol(trained.model, step_table, n=512, seed=0)


@pytest.fixture(scope="module")
def reduction(tmp_path_factory):
    """Only x1 and x2 matter: y = (x1 + x2 > 0); ranking from the Sobol indices of a trained network."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 5))
    frame = pd.DataFrame(x, columns=[f"x{i}" for i in range(1, 6)])
    frame["y"] = np.where(x[:, 0] + x[:, 1] > 0, "1", "0")
    data = prepare(_table(tmp_path_factory.mktemp("reduction"), frame), "y")
    config = TrainConfig(epochs=60, seed=0, **FAST)
    full = train_tabular(data, config)
    sobol = tabular_sobol(full.model, data, n=256, seed=0)
    return sobol, input_reduction(data, sobol.ranking("ST"), config=config, seeds=2, tolerance=0.01)


# ---------------------------------------------------------------------------------------- network


def test_numeric_model_standardises_raw_values_inside():
    features = [FeatureSpec("a", "numeric", mean=10.0, std=2.0), FeatureSpec("b", "numeric", mean=-3.0, std=0.5)]
    torch.manual_seed(0)
    model = TabularNet(features, (8,), 2).eval()
    x = torch.tensor([[10.0, -3.0], [14.0, -2.0], [7.0, -4.5]])
    expected = model.body((x - torch.tensor([10.0, -3.0])) / torch.tensor([2.0, 0.5]))
    torch.testing.assert_close(model(x), expected)
    torch.testing.assert_close(model.encode(x), torch.tensor([[0.0, 0.0], [2.0, 2.0], [-1.5, -3.0]]))


def test_categorical_column_is_one_hot_encoded_inside():
    features = [FeatureSpec("colour", "categorical", categories=["blue", "green", "red"], integer=True), FeatureSpec("size", "numeric", mean=1.0, std=2.0)]
    model = TabularNet(features, (4,), 2)
    x = torch.tensor([[0.0, 1.0], [1.0, 3.0], [2.0, -1.0]])
    encoded = model.encode(x)
    assert encoded.shape == (3, 4)
    torch.testing.assert_close(encoded[:, 0], torch.tensor([0.0, 1.0, -1.0]))  # the numeric part comes first
    torch.testing.assert_close(encoded[:, 1:], torch.eye(3))


def test_save_load_round_trip_keeps_outputs_and_metadata(pima_trained, pima, tmp_path):
    weights, sidecar = pima_trained.save(tmp_path / "pima_model")
    assert weights.name == "pima_model.safetensors" and sidecar.name == "pima_model.json"
    model, meta = load_tabular_model(tmp_path / "pima_model.json")
    x = torch.as_tensor(pima.x)
    assert torch.equal(model(x), pima_trained.model.eval()(x))
    assert meta["classes"] == ["No", "Yes"] and meta["target"] == "type" and meta["task"] == "classification"
    assert meta["features"] == [f.to_dict() for f in pima.features]
    assert [FeatureSpec(**f) for f in meta["features"]] == model.features
    assert meta["config"]["hidden"] == [32, 16]
    assert meta["metrics"]["accuracy"] == pima_trained.metrics["accuracy"]


def test_load_refuses_a_missing_sidecar_or_corrupt_json(tmp_path):
    features = [FeatureSpec("a", "numeric"), FeatureSpec("b", "numeric")]
    meta = {"features": [f.to_dict() for f in features], "task": "classification", "classes": ["n", "y"], "config": {"hidden": [4], "activation": "relu", "dropout": 0.0}}
    weights, sidecar = save_tabular_model(TabularNet(features, (4,), 2), meta, tmp_path / "m")
    load_tabular_model(tmp_path / "m")  # the pair loads
    sidecar.write_text("{not json", encoding="utf-8")
    with pytest.raises(UserError, match="not valid JSON"):
        load_tabular_model(weights)
    sidecar.write_text(json.dumps({"format": "something else"}), encoding="utf-8")
    with pytest.raises(UserError, match="not a Sensiscope tabular model"):
        load_tabular_model(weights)
    sidecar.write_text(json.dumps({"format": "sensiscope-tabular", "features": meta["features"]}), encoding="utf-8")
    with pytest.raises(UserError, match="incomplete model description"):
        load_tabular_model(weights)
    sidecar.unlink()
    with pytest.raises(UserError, match="m.json"):
        load_tabular_model(weights)


# ---------------------------------------------------------------------------------------- training


def test_pima_reaches_published_accuracy(pima_trained):
    metrics = pima_trained.metrics
    assert metrics["accuracy"] >= 0.72
    assert metrics["roc_auc"] >= 0.78
    assert metrics["n_test"] == 332 and np.sum(metrics["confusion_matrix"]) == 332
    assert metrics["n_train"] + metrics["n_validation"] == 200 and metrics["n_validation"] == 40
    assert pima_trained.elapsed_s < 5


def test_training_is_seeded(pima, pima_trained):
    again = train_tabular(pima, TrainConfig(epochs=150, seed=0))
    other = train_tabular(pima, TrainConfig(epochs=150, seed=1))
    first = pima_trained.model.state_dict()
    assert all(torch.equal(first[k], v) for k, v in again.model.state_dict().items())
    assert again.metrics == pima_trained.metrics
    assert not torch.equal(first["body.0.weight"], other.model.state_dict()["body.0.weight"])


def test_early_stopping_stops_before_the_maximum(pima):
    trained = train_tabular(pima, TrainConfig(epochs=300, patience=5, seed=0))
    history = trained.history
    assert history["epochs_run"] < 300
    assert history["epochs_run"] <= history["best_epoch"] + 5
    assert len(history["val_loss"]) == history["epochs_run"]
    patient = train_tabular(pima, TrainConfig(epochs=20, patience=1000, seed=0))
    assert patient.history["epochs_run"] == 20


def test_each_epoch_is_reported_with_a_typed_payload_equal_to_the_history(pima):
    reports = []
    trained = train_tabular(pima, TrainConfig(epochs=300, patience=5, seed=0), progress=lambda f, message, data=None: reports.append((message, data)))
    epochs = [(message, data) for message, data in reports if isinstance(data, EpochLosses)]
    history = trained.history
    assert [data.epoch for _, data in epochs] == list(range(1, history["epochs_run"] + 1)) and {data.epochs for _, data in epochs} == {300}
    assert [data.loss for _, data in epochs] == history["train_loss"] and [data.validation for _, data in epochs] == history["val_loss"]
    # The text is as before, so a view that still reads it keeps working.
    message, data = epochs[-1]
    assert message == f"epoch {data.epoch}: loss {data.loss:.4f}, validation {data.validation:.4f}"
    assert re.fullmatch(r"epoch (\d+): loss ([-+0-9.eE]+), validation ([-+0-9.eE]+)", message)


def test_regression_learns_a_linear_target_in_its_units(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.uniform(-1, 1, size=(400, 3))
    frame = pd.DataFrame(x, columns=["x1", "x2", "x3"])
    frame["y"] = 3 * x[:, 0] - 2 * x[:, 1] + 100 + 0.05 * rng.normal(size=400)
    data = prepare(_table(tmp_path, frame), "y")
    assert data.task == "regression" and data.classes == []
    trained = train_tabular(data, TrainConfig(epochs=150, seed=0, **FAST))
    assert trained.metrics["r2"] > 0.9
    predicted = predict(trained.model, data.x[data.test], "regression")
    truth = data.y[data.test]
    # In the target's units: around 100, not standardised around 0.
    assert abs(predicted.mean() - truth.mean()) < 0.3
    assert trained.metrics["rmse"] == pytest.approx(float(np.sqrt(((predicted - truth) ** 2).mean())), rel=1e-4)
    assert trained.metrics["rmse"] < 0.5


def test_a_categorical_feature_that_decides_the_class_is_learned(tmp_path):
    rng = np.random.default_rng(3)
    colour = rng.choice(["blue", "green", "red"], size=300)
    frame = pd.DataFrame({"colour": colour, "noise": rng.normal(size=300), "y": np.where(colour == "green", "yes", "no")})
    data = prepare(_table(tmp_path, frame), "y")
    assert [f.kind for f in data.features] == ["categorical", "numeric"]
    assert data.features[0].categories == ["blue", "green", "red"]
    trained = train_tabular(data, TrainConfig(epochs=100, seed=0, **FAST))
    assert trained.metrics["accuracy"] > 0.95


# ---------------------------------------------------------------------------------------- prepare()


def test_pima_split_column_is_used_and_never_a_feature(pima):
    frame = _pima_frame()
    assert pima.names == ["npreg", "glu", "bp", "skin", "bmi", "ped", "age"]
    assert "split" in pima.split_source
    np.testing.assert_array_equal(pima.test, (frame["split"] == "test").to_numpy())
    assert pima.train.sum() == 200 and pima.test.sum() == 332
    assert pima.classes == ["No", "Yes"] and pima.task == "classification"
    assert [f.integer for f in pima.features] == [True, True, True, True, False, False, True]


def test_without_a_split_column_the_split_is_stratified_and_seeded(tmp_path):
    frame = _pima_frame().drop(columns="split")
    table = _table(tmp_path, frame)
    data = prepare(table, "type", seed=4)
    assert "stratified" in data.split_source
    for index in range(2):
        rows = data.y == index
        assert abs(data.test[rows].sum() - 0.3 * rows.sum()) <= 1
    assert abs(data.test.sum() - 0.3 * len(frame)) <= 1
    np.testing.assert_array_equal(prepare(table, "type", seed=4).test, data.test)
    assert not np.array_equal(prepare(table, "type", seed=5).test, data.test)


def _bad(frame: pd.DataFrame, case: str) -> tuple[pd.DataFrame, dict]:
    frame = frame.copy()
    options = {"target": "type"}
    if case == "unknown target":
        options["target"] = "outcome"
    elif case == "unknown feature":
        options["features"] = ["glu", "insulin"]
    elif case == "single class":
        frame["type"] = "No"
    elif case == "missing values":
        frame.loc[[3, 10], "bmi"] = np.nan
    elif case == "text in a numeric column":
        frame["glu"] = frame["glu"].astype(object)
        frame.loc[5, "glu"] = "high"
    elif case == "no numeric column":
        frame = pd.DataFrame({"a": ["x", "y", "x", "y"], "b": ["p", "q", "q", "p"], "type": ["No", "Yes", "No", "Yes"]})
    elif case == "split as a feature":
        options["features"] = ["glu", "split"]
    elif case == "repeated feature":
        options["features"] = ["glu", "bmi", "glu"]
    return frame, options


@pytest.mark.parametrize(
    "case,message",
    [
        ("unknown target", "'outcome'"),
        ("unknown feature", "insulin"),
        ("single class", "'type' has a single class"),
        ("missing values", "missing values in column 'bmi' (2)"),
        ("text in a numeric column", "column 'glu' is mostly numeric"),
        ("no numeric column", "no numeric column"),
        ("split as a feature", "'split' holds the train/test split"),
        ("repeated feature", "glu listed more than once"),
    ],
)
def test_bad_tables_raise_user_errors_naming_the_column(tmp_path, case, message):
    frame, options = _bad(_pima_frame(), case)
    table = _table(tmp_path, frame)
    with pytest.raises(UserError) as info:
        prepare(table, options.pop("target"), options.pop("features", None))
    assert message in str(info.value)


def test_missing_values_dropped_or_imputed_with_notes(tmp_path):
    frame = _pima_frame()
    rows = [0, 7, 300]  # two train rows and a test row
    assert list(frame.loc[rows, "split"]) == ["train", "train", "test"]
    glu = frame["glu"].astype(float)
    frame["glu"] = glu.where(~frame.index.isin(rows))
    frame["type"] = frame["type"].where(frame.index != 20)  # a missing target is always dropped
    table = _table(tmp_path, frame)
    dropped = prepare(table, "type", missing="drop")
    assert len(dropped.y) == 532 - 4 and dropped.test.sum() == 332 - 1 - (frame.loc[20, "split"] == "test")
    assert any("dropped 4 row(s)" in note and "'glu' (3)" in note for note in dropped.notes)
    imputed = prepare(table, "type", missing="impute")
    assert len(imputed.y) == 532 - 1
    kept = frame.drop(index=20)
    median = kept["glu"].median()
    column = imputed.names.index("glu")
    positions = [kept.index.get_loc(r) for r in rows]
    np.testing.assert_array_equal(imputed.x[positions, column], np.float32(median))
    assert any("imputed 3 missing value(s) of 'glu' with its median" in note for note in imputed.notes)
    with pytest.raises(UserError, match="'glu' \\(3\\)"):
        prepare(table, "type")


def test_a_missing_category_is_imputed_with_the_most_frequent(tmp_path):
    frame = pd.DataFrame({"colour": ["red", "red", "blue", None, "red", "blue"] * 5, "size": np.arange(30.0), "y": ["a", "b"] * 15})
    data = prepare(_table(tmp_path, frame), "y", missing="impute")
    assert data.features[0].categories == ["blue", "red"]
    assert np.all(data.x[3::6, 0] == 1)  # red
    assert any("most frequent category" in note for note in data.notes)


# ---------------------------------------------------------------------------------------- input distributions


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    rng = np.random.default_rng(5)
    frame = pd.DataFrame(
        {
            "count": rng.integers(2, 12, size=200),
            "level": rng.normal(5.0, 2.0, size=200),
            "colour": rng.choice(["blue", "green", "red"], size=200),
            "y": rng.choice(["no", "yes"], size=200),
        }
    )
    return prepare(_table(tmp_path_factory.mktemp("mixed"), frame), "y")


@pytest.mark.parametrize("dist", ["uniform", "normal", "truncnorm", "empirical"])
def test_build_problem_transforms(mixed, dist):
    problem, to_features = build_problem(mixed, dist)
    assert problem["names"] == ["count", "level", "colour"]
    values = to_features(sobol_sample.sample(problem | {"num_vars": 3}, 256, calc_second_order=False, scramble=True, seed=0))
    train = mixed.x[mixed.train].astype(np.float64)
    count, level, colour = values[:, 0], values[:, 1], values[:, 2]
    assert mixed.features[0].integer and np.all(count == np.round(count))
    assert set(np.unique(colour)) == {0.0, 1.0, 2.0}  # valid codes, every category
    assert np.all(np.abs(np.bincount(colour.astype(int)) / len(colour) - 1 / 3) < 0.05)
    if dist in ("uniform", "truncnorm", "empirical"):
        for index, column in ((0, count), (1, level)):
            assert train[:, index].min() <= column.min() and column.max() <= train[:, index].max()
    if dist == "uniform":
        low, high = train[:, 1].min(), train[:, 1].max()
        assert level.min() < low + 0.05 * (high - low) and level.max() > high - 0.05 * (high - low)
        assert abs(level.mean() - (low + high) / 2) < 0.05 * (high - low)
    if dist == "normal":
        assert abs(level.mean() - train[:, 1].mean()) < 0.2 and abs(level.std() - train[:, 1].std()) < 0.2
        assert level.min() < train[:, 1].min() or level.max() > train[:, 1].max()  # unbounded
    if dist == "empirical":
        assert set(np.unique(level)) <= set(train[:, 1]) and set(np.unique(count)) <= set(train[:, 0])


def test_build_problem_refuses_unknown_distribution_and_constant_feature(mixed, tmp_path):
    with pytest.raises(UserError, match="distribution must be one of"):
        build_problem(mixed, "cauchy")
    frame = pd.DataFrame({"a": [1.0] * 20, "b": np.arange(20.0), "y": ["n", "y"] * 10})
    with pytest.raises(UserError, match="'a' is constant"):
        build_problem(prepare(_table(tmp_path, frame), "y"), "uniform")


# ---------------------------------------------------------------------------------------- Sobol of the network


def test_sobol_known_answer_only_x1_matters(step_sobol):
    trained, result = step_sobol
    assert trained.metrics["accuracy"] > 0.95
    st = dict(zip(result.names, result.ST, strict=True))
    assert st["x1"] > 0.8
    assert all(st[name] < 0.1 for name in ("x2", "x3", "x4"))
    assert result.ranking("ST")[0] == "x1"
    assert result.output_name == "P(y = pos)" and result.distribution == "empirical"
    assert result.n == 512 and result.n_evaluations == 512 * (4 + 2)


def test_positive_class_defaults_and_choices(pima, pima_trained):
    assert positive_class(pima, None) == pima.classes.index("Yes")
    assert positive_class(pima, "No") == 0
    with pytest.raises(UserError, match="no class 'Maybe'"):
        positive_class(pima, "Maybe")
    with pytest.raises(UserError, match="no class 'Maybe'"):
        tabular_sobol(pima_trained.model, pima, n=64, class_name="Maybe")
    no = tabular_sobol(pima_trained.model, pima, n=256, class_name="No", seed=0)
    yes = tabular_sobol(pima_trained.model, pima, n=256, seed=0)
    assert no.output_name == "P(type = No)" and yes.output_name == "P(type = Yes)"
    # Two classes: P(No) = 1 - P(Yes), so the variance decomposition is the same.
    np.testing.assert_allclose(no.ST, yes.ST, atol=1e-4)


# ---------------------------------------------------------------------------------------- input reduction


def test_input_reduction_known_answer_two_of_five(reduction):
    sobol, result = reduction
    assert set(sobol.ranking("ST")[:2]) == {"x1", "x2"}
    assert result.recommended_k == 2
    assert [r.k for r in result.rows if r.selection == "ranked"] == [5, 4, 3, 2, 1]
    assert [r.k for r in result.rows if r.selection == "random"] == [4, 3, 2, 1]
    ranked = {r.k: r for r in result.rows if r.selection == "ranked"}
    random = {r.k: r for r in result.rows if r.selection == "random"}
    assert random[2].metrics["accuracy"][0] < ranked[2].metrics["accuracy"][0]
    assert ranked[1].metrics["accuracy"][0] < result.full_score - result.tolerance
    assert result.full_score == ranked[5].metrics["accuracy"][0]
    assert all(len(r.features) == 2 and all(len(f) == r.k for f in r.features) for r in result.rows)
    assert result.to_dict()["recommended_features"] == sobol.ranking("ST")[:2]


def test_reduction_to_dict_and_from_dict_round_trip_with_nan():
    rows = [ReductionRow(2, "ranked", [["b", "a"]], {"accuracy": (0.75, 0.0), "roc_auc": (math.nan, math.nan)}), ReductionRow(1, "random", [["a"]], {"accuracy": (0.5, 0.125), "roc_auc": (0.5, 0.0)})]
    result = ReductionResult(["b", "a"], "S1", "accuracy", 0.75, 0.01, 1, rows, 2.5)
    record = result.to_dict()
    first = record["rows"][0]
    assert list(first) == ["k", "selection", "features", "accuracy_mean", "accuracy_std", "roc_auc_mean", "roc_auc_std"]
    assert first["accuracy_mean"] == 0.75 and math.isnan(first["roc_auc_mean"]) and record["recommended_features"] == ["b"]
    assert json.loads(dumps(record))["rows"][0]["roc_auc_mean"] is None  # strict JSON: NaN is null
    for restored in (ReductionResult.from_dict(record), ReductionResult.from_dict(json.loads(dumps(record)))):
        assert dumps(restored.to_dict()) == dumps(record)
        assert restored.rows[1] == rows[1] and math.isnan(restored.rows[0].metrics["roc_auc"][0])
        assert dataclasses.replace(restored, rows=[]) == dataclasses.replace(result, rows=[])


def test_input_reduction_refuses_a_bad_ranking(step_table):
    with pytest.raises(UserError, match="every feature exactly once"):
        input_reduction(step_table, ["x1", "x2", "x3"], seeds=1)
    with pytest.raises(UserError, match="at least one seed"):
        input_reduction(step_table, step_table.names, seeds=0)


# ---------------------------------------------------------------------------------------- report files


def _png_size(path) -> tuple[int, int]:
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        return image.size


def test_write_sobol_files(step_sobol, tmp_path):
    _, result = step_sobol
    files = write_sobol_files(result, tmp_path / "out")
    assert "s2_csv" not in files
    with open(files["indices_csv"], newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["feature"] for r in rows] == result.ranking("ST")
    st = [float(r["ST"]) for r in rows]
    assert st == sorted(st, reverse=True)
    for row in rows:
        i = result.names.index(row["feature"])
        for key in ("S1", "S1_conf", "ST", "ST_conf"):
            assert float(row[key]) == pytest.approx(float(getattr(result, key)[i]), abs=1e-6)
    with open(files["convergence_csv"], newline="", encoding="utf-8") as handle:
        convergence = list(csv.reader(handle))
    assert convergence[0] == ["N", "S1_x1", "S1_x2", "S1_x3", "S1_x4", "ST_x1", "ST_x2", "ST_x3", "ST_x4"]
    assert [int(r[0]) for r in convergence[1:]] == [256, 512]
    assert float(convergence[-1][5]) == pytest.approx(result.ST[0], abs=1e-6)
    width, height = _png_size(files["chart_png"])
    assert width >= 400 and height >= 300


def test_write_sobol_files_with_second_order(tmp_path):
    def fn(x):
        return x[:, 0] + x[:, 1] * x[:, 2]

    problem = {"names": ["a", "b", "c"], "bounds": [[-1, 1]] * 3}
    result = sobol_indices(fn, problem, n=256, second_order=True, seed=0, num_resamples=20)
    files = write_sobol_files(result, tmp_path)
    with open(files["s2_csv"], newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["", "a", "b", "c"] and [r[0] for r in rows[1:]] == ["a", "b", "c"]
    for i in range(3):
        for j in range(3):
            cell = rows[i + 1][j + 1]
            if j > i:
                assert float(cell) == pytest.approx(result.S2[i, j], abs=1e-6)
            else:
                assert cell == ""
    # Analytic answer: the b*c interaction carries a quarter of the variance (1/3 vs 1/9 of 4/9).
    assert float(rows[2][3]) == pytest.approx(0.25, abs=0.1)


def test_write_reduction_files(reduction, tmp_path):
    _, result = reduction
    files = write_reduction_files(result, tmp_path / "reduce")
    with open(files["table_csv"], newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert [(int(r["k"]), r["selection"]) for r in rows] == [(r.k, r.selection) for r in result.rows]
    for row, expected in zip(rows, result.rows, strict=True):
        assert float(row["accuracy_mean"]) == pytest.approx(expected.metrics["accuracy"][0])
        assert float(row["accuracy_std"]) == pytest.approx(expected.metrics["accuracy"][1])
        assert row["features"] == " | ".join(",".join(f) for f in expected.features)
    width, height = _png_size(files["chart_png"])
    assert width >= 400 and height >= 300
