"""engine.stats: Sobol indices through SALib against analytic answers, the result's serialisation,
and the model scores (accuracy, ROC AUC, R^2) against hand counts."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from engine import Cancelled, CancelToken, UserError
from engine.core.jsonable import dumps
from engine.stats.scores import classification_metrics, regression_metrics, roc_auc
from engine.stats.sobol import SobolResult, power_of_two, sobol_indices

ISHIGAMI = {"names": ["x1", "x2", "x3"], "bounds": [[-math.pi, math.pi]] * 3}


def ishigami(x: np.ndarray, a: float = 7.0, b: float = 0.1) -> np.ndarray:
    return np.sin(x[:, 0]) + a * np.sin(x[:, 1]) ** 2 + b * x[:, 2] ** 4 * np.sin(x[:, 0])


def test_ishigami_matches_the_analytic_indices_at_n_2_13():
    # Analytic values for a = 7, b = 0.1 (Ishigami and Homma 1990; Saltelli et al. 2008).
    reports = []
    result = sobol_indices(ishigami, ISHIGAMI, n=2**13, second_order=True, seed=0, progress=lambda f, m: reports.append(f))
    np.testing.assert_allclose(result.S1, [0.3139, 0.4424, 0.0], atol=0.02)
    np.testing.assert_allclose(result.ST, [0.5576, 0.4424, 0.2437], atol=0.02)
    # The only interaction is x1 with x3: S13 = ST1 - S1 = 0.2437.
    assert result.S2[0, 2] == pytest.approx(0.2437, abs=0.05)
    assert abs(result.S2[0, 1]) < 0.05 and abs(result.S2[1, 2]) < 0.05
    assert np.isnan(result.S2[1, 0]) and np.isnan(result.S2[2, 2])
    assert result.n_evaluations == 2**13 * (2 * 3 + 2)
    assert (result.S1_conf > 0).all() and (result.ST_conf < 0.1).all()
    assert reports[-1] == 1.0 and all(b >= a for a, b in zip(reports, reports[1:], strict=False))
    assert result.ranking() == ["x1", "x2", "x3"]


def test_additive_linear_function_has_indices_proportional_to_variance():
    # f = 1 x1 + 2 x2 + 3 x3 with xi ~ U(0, 1): S1_i = ST_i = a_i^2 / sum a^2.
    problem = {"names": ["a", "b", "c"], "bounds": [[0, 1]] * 3}
    result = sobol_indices(lambda x: x @ np.array([1.0, 2.0, 3.0]), problem, n=2**12, second_order=False, seed=1)
    expected = np.array([1, 4, 9]) / 14
    np.testing.assert_allclose(result.S1, expected, atol=0.02)
    np.testing.assert_allclose(result.ST, expected, atol=0.02)
    assert result.S2 is None
    assert result.n_evaluations == 2**12 * 5


def test_convergence_reuses_the_leading_rows_and_ends_at_n():
    calls = []

    def counted(x):
        calls.append(len(x))
        return ishigami(x)

    result = sobol_indices(counted, ISHIGAMI, n=2**11, second_order=False, seed=0)
    assert sum(calls) == result.n_evaluations  # the convergence view evaluates nothing more
    assert [step["n"] for step in result.convergence] == [256, 512, 1024, 2048]
    assert result.convergence[-1]["ST"] == pytest.approx(result.ST.tolist())
    errors = [abs(step["ST"][0] - 0.5576) for step in result.convergence]
    assert errors[-1] < 0.05


def test_normal_distributions_are_passed_to_salib():
    # f = x1 + x2 with x1 ~ N(0, 1) and x2 ~ N(0, 3): S1 = (0.1, 0.9).
    problem = {"names": ["x1", "x2"], "bounds": [[0, 1], [0, 3]], "dists": ["norm", "norm"]}
    result = sobol_indices(lambda x: x[:, 0] + x[:, 1], problem, n=2**12, second_order=False, seed=0)
    np.testing.assert_allclose(result.S1, [0.1, 0.9], atol=0.03)


def test_n_is_rounded_up_to_a_power_of_two_with_a_note():
    assert power_of_two(1000) == (1024, "N = 1000 is not a power of two; rounded up to 1024")
    assert power_of_two(512) == (512, None)
    result = sobol_indices(ishigami, ISHIGAMI, n=300, second_order=False, convergence=False)
    assert result.n == 512 and "rounded up to 512" in result.notes[0]


def test_the_same_seed_gives_the_same_indices():
    first = sobol_indices(ishigami, ISHIGAMI, n=512, seed=3, convergence=False)
    second = sobol_indices(ishigami, ISHIGAMI, n=512, seed=3, convergence=False)
    other = sobol_indices(ishigami, ISHIGAMI, n=512, seed=4, convergence=False)
    np.testing.assert_array_equal(first.ST, second.ST)
    np.testing.assert_array_equal(first.S1_conf, second.S1_conf)
    assert not np.array_equal(first.ST, other.ST)


def test_evaluation_is_batched():
    sizes = []
    sobol_indices(lambda x: sizes.append(len(x)) or ishigami(x), ISHIGAMI, n=1024, second_order=False, batch_rows=1000, convergence=False)
    assert max(sizes) == 1000 and sum(sizes) == 1024 * 5


@pytest.mark.parametrize(
    "problem,message",
    [
        ({"names": ["a"], "bounds": [[0, 1]]}, "at least two inputs"),
        ({"names": ["a", "b"], "bounds": [[0, 1]]}, "one bounds entry each"),
        ({"names": ["a", "b"], "bounds": [[0, 1], [2, 1]]}, "lower bound must be below"),
        ({"bounds": [[0, 1]]}, "needs 'names' and 'bounds'"),
    ],
)
def test_bad_problems_are_user_errors(problem, message):
    with pytest.raises(UserError, match=message):
        sobol_indices(ishigami, problem, n=256)


def test_bad_model_outputs_are_user_errors():
    with pytest.raises(UserError, match="constant"):
        sobol_indices(lambda x: np.ones(len(x)), ISHIGAMI, n=256)
    with pytest.raises(UserError, match="NaN"):
        sobol_indices(lambda x: np.full(len(x), np.nan), ISHIGAMI, n=256)
    with pytest.raises(UserError, match="outputs for"):
        sobol_indices(lambda x: np.ones(3), ISHIGAMI, n=256)


def test_cancel_stops_between_batches():
    token = CancelToken()
    seen = []

    def fn(x):
        seen.append(len(x))
        token.cancel()
        return ishigami(x)

    with pytest.raises(Cancelled):
        sobol_indices(fn, ISHIGAMI, n=1024, batch_rows=512, cancel=token)
    assert len(seen) == 1


# ---------------------------------------------------------------------------------------- serialisation


def _assert_same(a: SobolResult, b: SobolResult) -> None:
    """Field by field; arrays equal element for element, NaN equal to NaN."""
    for f in dataclasses.fields(SobolResult):
        left, right = getattr(a, f.name), getattr(b, f.name)
        if isinstance(left, np.ndarray) or isinstance(right, np.ndarray):
            np.testing.assert_array_equal(left, right, err_msg=f.name)
        elif f.name == "convergence":
            assert [s["n"] for s in left] == [s["n"] for s in right]
            for one, other in zip(left, right, strict=True):
                for key in ("S1", "ST", "S1_conf", "ST_conf"):
                    np.testing.assert_array_equal(one[key], other[key], err_msg=f"convergence {key}")
        else:
            assert left == right, f.name


def _through_json(result: SobolResult) -> SobolResult:
    # parse_constant refuses NaN and Infinity: the text must be strict JSON.
    return SobolResult.from_dict(json.loads(dumps(result.to_dict()), parse_constant=lambda name: pytest.fail(f"{name} in the JSON")))


def _awkward_result(**changes) -> SobolResult:
    fields = {
        "names": ["a", "b"],
        "S1": np.array([0.25, np.nan]),
        "S1_conf": np.array([0.01, np.inf]),
        "ST": np.array([-np.inf, 0.75]),
        "ST_conf": np.array([0.02, 0.03]),
        "n": 256,
        "n_evaluations": 1024,
        "second_order": False,
        "sampling_s": 0.5,
        "evaluation_s": 1.25,
        "analysis_s": 0.125,
        "convergence_s": 0.0625,
        "seed": 7,
        "conf_level": 0.9,
        "convergence": [{"n": 256, "S1": [0.25, math.nan], "ST": [0.5, 0.75], "S1_conf": [0.01, 0.02], "ST_conf": [0.02, 0.03]}],
        "notes": ["a note"],
        "problem": {"num_vars": 2, "names": ["a", "b"], "bounds": [[0.0, 1.0], [-1.0, 1.0]], "dists": ["unif", "unif"]},
        "output_name": "P(y = 1)",
        "distribution": "empirical",
    }
    return SobolResult(**fields | changes)


def test_to_dict_and_from_dict_round_trip_exactly_with_nan_inf_and_no_s2():
    result = _awkward_result()
    record = result.to_dict()
    assert record["S2"] is None and record["S2_conf"] is None
    assert record["timings_s"] == {"sampling": 0.5, "evaluation": 1.25, "analysis": 0.125, "total": 1.875, "convergence": 0.0625}
    _assert_same(SobolResult.from_dict(record), result)  # in memory: NaN and inf kept as they are
    # Strict JSON has no NaN or inf: both become null, and null comes back as NaN; every finite value is exact.
    text = dumps(record)
    assert json.loads(text)["S1"] == [0.25, None] and json.loads(text)["ST"] == [None, 0.75]
    _assert_same(_through_json(result), _awkward_result(S1_conf=np.array([0.01, np.nan]), ST=np.array([np.nan, 0.75])))


def test_a_second_order_result_survives_json_exactly():
    result = sobol_indices(ishigami, ISHIGAMI, n=256, second_order=True, seed=0, num_resamples=10)
    assert np.isnan(result.S2).sum() == 6  # the diagonal and the lower triangle are undefined
    _assert_same(_through_json(result), result)
    _assert_same(_through_json(_through_json(result)), result)


def test_from_dict_reads_a_record_from_before_the_newer_fields():
    record = _awkward_result().to_dict()
    for key in ("problem", "output_name", "distribution", "S2", "S2_conf"):
        del record[key]
    restored = SobolResult.from_dict(record)
    assert restored.problem == {} and restored.output_name == "the output" and restored.distribution == "" and restored.S2 is None
    with pytest.raises(KeyError):
        SobolResult.from_dict({k: v for k, v in record.items() if k != "ST"})


# ---------------------------------------------------------------------------------------- scores


def test_roc_auc_against_a_hand_count_with_ties():
    scores = np.array([0.1, 0.4, 0.35, 0.8, 0.4, 0.4])
    positive = np.array([0, 1, 0, 1, 0, 1])
    # Positives 0.4, 0.8, 0.4 against negatives 0.1, 0.35, 0.4: each 0.4 wins twice and ties once
    # (2.5), 0.8 wins three times: (2.5 + 3 + 2.5) / 9 pairs.
    assert roc_auc(scores, positive) == pytest.approx(8 / 9)
    order = np.random.default_rng(0).permutation(6)
    assert roc_auc(scores[order], positive[order]) == pytest.approx(8 / 9)


def test_roc_auc_extremes():
    positive = np.array([0, 0, 0, 1, 1])
    assert roc_auc(np.array([0.1, 0.2, 0.3, 0.7, 0.9]), positive) == 1.0
    assert roc_auc(np.array([0.9, 0.8, 0.7, 0.2, 0.1]), positive) == 0.0
    assert roc_auc(np.full(5, 0.3), positive) == 0.5
    assert np.isnan(roc_auc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_classification_metrics_by_hand():
    classes = ["a", "b", "c"]
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    probabilities = np.eye(3)[predicted] * 0.8 + 0.2 / 3
    metrics = classification_metrics(probabilities, y, classes)
    assert metrics["confusion_matrix"] == [[3, 1, 0], [0, 1, 1], [0, 0, 2]]
    assert metrics["accuracy"] == pytest.approx(6 / 8)
    assert metrics["balanced_accuracy"] == pytest.approx((3 / 4 + 1 / 2 + 2 / 2) / 3)
    assert metrics["n_test"] == 8 and metrics["classes"] == classes
    assert "roc_auc" not in metrics  # only for two classes
    two = classification_metrics(np.array([[0.9, 0.1], [0.4, 0.6], [0.7, 0.3], [0.2, 0.8]]), np.array([0, 0, 1, 1]), ["No", "Yes"])
    # Positives' P(Yes) 0.3, 0.8 against negatives' 0.1, 0.6: 0.3 beats one, 0.8 beats both.
    assert two["roc_auc"] == pytest.approx(3 / 4)
    assert two["confusion_matrix"] == [[1, 1], [1, 1]]


def test_regression_metrics_by_hand():
    metrics = regression_metrics(np.array([1.0, 2.0, 3.0, 5.0]), np.array([1.0, 2.0, 3.0, 4.0]))
    # SS_res = 1, SS_tot = 2.25 + 0.25 + 0.25 + 2.25 = 5.
    assert metrics["r2"] == pytest.approx(0.8)
    assert metrics["rmse"] == pytest.approx(0.5)
    assert metrics["n_test"] == 4
