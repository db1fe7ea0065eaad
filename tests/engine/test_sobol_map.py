"""The image Sobol method (engine/methods/sobol.py) against known answers: a model that reads one
rectangle, an additive model whose indices follow analytically, the forward-pass count, the
convergence view, seeding, batching and the shared estimator of engine.stats.sobol."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter1d
from torch import nn

import engine
from engine import UserError
from engine.stats.sobol import sobol_analysis, sobol_design, sobol_indices
from tests.models import region_model, tiny_cnn


class Counted(nn.Module):
    """A model that counts the images it is given, and can refuse batches larger than a limit
    with the out-of-memory error of a device allocator."""

    def __init__(self, model: nn.Module, limit: int | None = None) -> None:
        super().__init__()
        self.model, self.limit, self.images, self.batches = model, limit, 0, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.limit is not None and x.shape[0] > self.limit:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        self.images += x.shape[0]
        self.batches.append(x.shape[0])
        return self.model(x)


class CellMeans(nn.Module):
    """Class 0's logit is sum_i w_i (mean over cell i of the channel sum): additive in the cells."""

    def __init__(self, size: int, grid: int, weights: list[float]) -> None:
        super().__init__()
        cells = torch.div(torch.arange(size) * grid, size, rounding_mode="floor")
        labels = cells[:, None] * grid + cells[None, :]
        one_hot = (labels[None] == torch.arange(grid * grid)[:, None, None]).double()
        self.register_buffer("averaging", one_hot / one_hot.sum(dim=(1, 2), keepdim=True))
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = torch.einsum("bhw,khw->bk", x.double().sum(1), self.averaging)
        score = means @ self.weights
        return torch.stack([score, torch.zeros_like(score) - 1e3], dim=1)


def _cells_overlapping(region: tuple[int, int, int, int], cell: int, grid: int) -> np.ndarray:
    r0, r1, c0, c1 = region
    inside = np.zeros((grid, grid), bool)
    inside[r0 // cell : (r1 - 1) // cell + 1, c0 // cell : (c1 - 1) // cell + 1] = True
    return inside.ravel()


@pytest.mark.parametrize("region", [(8, 16, 8, 16), (5, 19, 9, 22), (8, 24, 8, 24)])
def test_a_model_that_reads_one_rectangle_puts_its_total_indices_there(region):
    model = region_model(size=32, region=region)
    x = torch.rand((3, 32, 32), generator=torch.Generator().manual_seed(0))
    result = engine.explain(model, x, "sobol", params={"grid": 4, "n": 32})
    st = result.extras["ST"]
    inside = _cells_overlapping(region, 8, 4)
    assert st[inside].sum() >= 0.95 * st.sum()
    assert st[inside].sum() > 0.5  # the overlapping cells drive most of the output's variance
    # The map paints each cell's index: the rectangle's pixels hold most of its mass too.
    mask = np.zeros((32, 32), bool)
    mask[region[0] : region[1], region[2] : region[3]] = True
    assert result.map[mask].mean() > 5 * result.map[~mask].mean()


def _profiles(size: int, grid: int, softness: float) -> np.ndarray:
    """g x size: each cell's indicator blurred along the axis (scipy's filter, independent of the engine)."""
    cells = (np.arange(size) * grid) // size
    indicators = (cells[None, :] == np.arange(grid)[:, None]).astype(float)
    if softness == 0:
        return indicators
    return gaussian_filter1d(indicators, softness * size / grid, axis=1, mode="nearest", truncate=3.0)


def _additive_indices(x: np.ndarray, grid: int, weights: np.ndarray, softness: float) -> np.ndarray:
    """S1 = ST of each cell for CellMeans with the zero baseline, derived by hand.

    The blended image is M(p) x(p) with M(p) = sum_j m_j R_a(j)(row) C_b(j)(col), so the score
    is sum_j m_j a_j with a_j = sum_i w_i mean_{p in cell i} phi_j(p) delta(p), delta the channel
    sum of x. With independent m_j ~ U(0, 1), Var = sum_j a_j^2 / 12 and every index of cell j is
    a_j^2 / sum_k a_k^2 (no interactions, so S1 = ST).
    """
    size = x.shape[1]
    delta = x.sum(0)
    profile = _profiles(size, grid, softness)
    cells = (np.arange(size) * grid) // size
    labels = (cells[:, None] * grid + cells[None, :]).ravel()
    a = np.zeros(grid * grid)
    for j in range(grid * grid):
        phi = np.outer(profile[j // grid], profile[j % grid]).ravel()
        contribution = phi * delta.ravel()
        a[j] = sum(weights[i] * contribution[labels == i].mean() for i in range(grid * grid))
    return a**2 / (a**2).sum()


@pytest.mark.parametrize("softness", [0.0, 0.125, 0.5])
def test_an_additive_model_has_indices_proportional_to_each_cells_variance(softness):
    grid, size = 3, 30
    weights = np.array([3.0, -1.0, 0.0, 2.0, 0.5, -2.5, 1.0, 0.0, 1.5])
    x = torch.rand((3, size, size), generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    model = CellMeans(size, grid, weights.tolist())
    result = engine.explain(model, x, "sobol", target=0, params={"grid": grid, "n": 128, "baseline": "zero", "softness": softness})
    expected = _additive_indices(x.numpy(), grid, weights, softness)
    extras = result.extras
    # Within the 95% bootstrap interval of every cell (plus 0.005 for cells whose index and
    # interval are both zero): the scrambled design makes the estimate of a linear model far
    # tighter than the bootstrap's normal approximation suggests.
    for key in ("ST", "S1"):
        tolerance = extras[f"{key}_conf"] + 0.005
        assert np.all(np.abs(extras[key] - expected) <= tolerance), (key, extras[key], expected, extras[f"{key}_conf"])
    if softness == 0:  # hard edges: a cell of weight 0 moves nothing
        assert extras["ST"][[2, 7]].max() < 0.01 and extras["ST"][0] > 0.2
    low, high = extras["interval"].T
    assert np.all(low <= extras["ST"]) and np.all(extras["ST"] <= high)


def test_forward_passes_are_n_times_d_plus_2_and_match_the_cost_estimate():
    model = Counted(tiny_cnn())
    x = torch.rand(3, 24, 24)
    result = engine.explain(model, x, "sobol", params={"grid": 3, "n": 12, "batch_size": 10})
    n, d = 16, 9  # N = 12 is rounded up to a power of two, with a note
    assert result.extras["n"] == n and "rounded up to 16" in result.extras["notes"][0]
    assert result.extras["design_passes"] == n * (d + 2) == 176
    assert model.images == result.extras["forward_passes"] == n * (d + 2) + 1  # and the one forward of the unperturbed image
    assert max(model.batches) == 10
    spec = engine.get_method("sobol")
    assert spec.estimate(result.params, 24, 24).forward == result.extras["forward_passes"]
    assert spec.estimate(spec.params_cls(), 224, 224).forward == 32 * 66 + 1


def test_the_convergence_view_reuses_the_leading_rows():
    model = Counted(region_model(size=32, region=(8, 24, 8, 24)))
    result = engine.explain(model, torch.rand(3, 32, 32), "sobol", params={"grid": 4, "n": 64})
    convergence = result.extras["convergence"]
    assert [step["n"] for step in convergence] == [16, 32, 64]
    assert model.images == 64 * 18 + 1  # no pass beyond the design
    assert convergence[-1]["ST"] == pytest.approx(result.extras["ST"].tolist())
    assert all(len(step["ST"]) == 16 and len(step["ST_conf"]) == 16 for step in convergence)


def test_the_same_seed_gives_the_same_map_and_another_seed_another_design():
    model, x = tiny_cnn(), torch.rand(3, 16, 16)
    first = engine.explain(model, x, "sobol", params={"grid": 4, "n": 8}, seed=3)
    second = engine.explain(model, x, "sobol", params={"grid": 4, "n": 8}, seed=3)
    other = engine.explain(model, x, "sobol", params={"grid": 4, "n": 8}, seed=4)
    np.testing.assert_array_equal(first.map, second.map)
    np.testing.assert_array_equal(first.extras["ST_conf"], second.extras["ST_conf"])
    assert first.extras["design_seed"] != other.extras["design_seed"]
    assert not np.array_equal(first.map, other.map)


def test_out_of_memory_halves_the_batch_and_changes_nothing_else():
    x = torch.rand(3, 16, 16)
    reference = engine.explain(tiny_cnn(), x, "sobol", params={"grid": 2, "n": 8, "batch_size": 4})
    limited = Counted(tiny_cnn(), limit=5)
    result = engine.explain(limited, x, "sobol", params={"grid": 2, "n": 8, "batch_size": 16})
    assert result.extras["batch_size_used"] == 4
    np.testing.assert_allclose(result.map, reference.map, rtol=1e-5, atol=1e-7)


def test_labels_interval_and_map_for_hard_cells():
    result = engine.explain(tiny_cnn(), torch.rand(3, 16, 16), "sobol", params={"grid": 4, "n": 8, "softness": 0.0})
    labels = result.extras["labels"]
    assert labels.shape == (16, 16) and labels.dtype == np.int32
    assert labels[0, 0] == 0 and labels[15, 15] == 15 and labels[4, 0] == 4
    # With hard edges every pixel shows its own cell's index.
    np.testing.assert_allclose(result.map, result.extras["ST"][labels].astype(np.float32), rtol=1e-6)
    assert result.extras["interval"].shape == (16, 2)


def test_superpixels_are_painted_as_they_are():
    x = torch.zeros(3, 32, 32)
    x[:, :16] = 1.0
    x[:, :, :16] += 0.5
    result = engine.explain(region_model(size=32, region=(4, 28, 4, 28)), x, "sobol", params={"regions": "segments", "segments": 4, "n": 8, "baseline": "zero"})
    labels, st = result.extras["labels"], result.extras["ST"]
    assert result.extras["grid"] is None and result.extras["regions"] == labels.max() + 1 >= 2
    np.testing.assert_allclose(result.map, st[labels].astype(np.float32), rtol=1e-6)
    assert result.extras["forward_passes"] == 8 * (result.extras["regions"] + 2) + 1


def test_a_model_the_perturbations_do_not_move_gives_a_zero_map():
    class Constant(nn.Module):
        def forward(self, x):
            return torch.tensor([[1.0, 2.0]]).expand(x.shape[0], 2)

    result = engine.explain(Constant(), torch.rand(3, 8, 8), "sobol", params={"grid": 2, "n": 4})
    assert not result.map.any() and "did not change" in result.extras["notes"][0]


def test_bad_grids_are_user_errors():
    with pytest.raises(UserError, match="finer than the image"):
        engine.explain(tiny_cnn(), torch.rand(3, 8, 8), "sobol", params={"grid": 9})
    with pytest.raises(UserError, match="at least 4"):
        engine.explain(tiny_cnn(), torch.rand(3, 8, 8), "sobol", params={"n": 2})


def test_the_image_and_tabular_analyses_share_one_estimator():
    # The design/analysis halves give exactly what sobol_indices gives on the same function.
    problem = {"names": ["a", "b", "c"], "bounds": [[0, 1]] * 3}

    def fn(rows):
        return rows @ np.array([1.0, 2.0, 3.0]) + rows[:, 0] * rows[:, 1]

    whole = sobol_indices(fn, problem, n=64, second_order=False, seed=7, convergence=False)
    design = sobol_design(problem, 64, second_order=False, seed=7)
    halves = sobol_analysis(design, fn(design.samples), convergence=[16, 32])
    np.testing.assert_array_equal(whole.ST, halves.ST)
    np.testing.assert_array_equal(whole.S1_conf, halves.S1_conf)
    assert [step["n"] for step in halves.convergence] == [16, 32, 64]
