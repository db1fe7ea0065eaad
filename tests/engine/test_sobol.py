"""Sobol indices through SALib, against analytic answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine import Cancelled, CancelToken, UserError
from engine.stats.sobol import power_of_two, sobol_indices

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
