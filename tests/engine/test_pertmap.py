"""Maximally invariant perturbation (pertmap) on models whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import engine
from engine import UserError
from engine.core.progress import ObjectiveValue
from tests.models import LinearModel, region_model

SIZE = 16


def _input(seed: int = 0) -> torch.Tensor:
    return torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _discriminative_region_model(x: torch.Tensor) -> nn.Module:
    """RegionModel whose classifier separates x (class 0) from pure noise (class 1).

    A random RegionModel predicts the same class whatever its input (its ReLU features all point
    the same way), so no noise ever changes its decision. Here class 0 scores v . f and class 1
    scores -v . f, with v chosen so that v . f(x) = 1 and v . f(noise) < 0: enough noise inside
    the region flips the decision, and the pixels outside the region still have no effect at all.
    """
    model = region_model()
    with torch.no_grad():
        features = model.pool(model.features(x[None] * model.mask)).flatten()
        noise = torch.rand(256, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)) * 2 - 1
        noise_features = model.pool(model.features(noise * model.mask)).mean(0).flatten()
        v = features / features.norm() - noise_features / noise_features.norm()
        v = v / (v @ features)
        model.classifier.weight.copy_(torch.stack([v, -v, torch.zeros_like(v)]))
        model.classifier.bias.zero_()
    return model


def _dilated(mask: torch.Tensor, radius: int) -> np.ndarray:
    grown = torch.nn.functional.max_pool2d(mask.float()[None, None], 2 * radius + 1, stride=1, padding=radius)
    return grown[0, 0].bool().numpy()


class ConstantModel(nn.Module):
    """Ignores its input: the same logits for every image."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([0.5, 2.0, -1.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(x.shape[0], -1)


class Recorder(nn.Module):
    """Wraps a model and keeps the batches it was called with."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.batches: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.detach().clone())
        return self.model(x)


REGION = {"steps": 100, "batch_size": 8, "lr": 0.05, "lam": 10.0, "w_max": 2.0, "record_every": 10, "patch": 1, "patience": 0}


def test_region_model_saturates_outside_and_puts_the_map_inside():
    x = _input()
    model = _discriminative_region_model(x)
    result = engine.explain(model, x, "pertmap", params=REGION, seed=0)
    w, relevance = result.extras["w"], result.map
    inside = _dilated(model.region_mask(), 2)  # two 3 x 3 convolutions: receptive-field radius 2
    assert w.shape == (3, SIZE, SIZE)
    np.testing.assert_allclose(w[:, ~inside], 2.0, atol=1e-6)
    assert relevance.min() >= 0.0
    assert relevance[inside].sum() >= 0.95 * relevance.sum()
    assert relevance.sum() > 1.0, "the region must keep some pixels below w_max"
    assert result.predicted == 0 and result.target == 0


def test_a_model_that_ignores_its_input_tolerates_full_noise_everywhere():
    result = engine.explain(ConstantModel(), _input(), "pertmap", params={"steps": 60, "batch_size": 4, "lr": 0.05})
    np.testing.assert_array_equal(result.extras["w"], 1.0)
    np.testing.assert_array_equal(result.map, 0.0)
    assert all(p == 0.0 for p in result.extras["penalty"])
    assert result.predicted == 1


def test_penalty_is_exactly_zero_at_zero_width():
    x = _input()
    result = engine.explain(_discriminative_region_model(x), x, "pertmap", params={**REGION, "steps": 3, "w_init": 0.0})
    assert result.extras["steps"][0] == 0
    assert result.extras["penalty"][0] == 0.0
    assert result.extras["mean_w"][0] == 0.0
    assert result.extras["objective"][0] == 0.0
    assert result.extras["changed_fraction"][0] == 0.0


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop", "adam"])
def test_the_objective_improves_and_w_stays_in_bounds(optimizer):
    x = _input()
    result = engine.explain(_discriminative_region_model(x), x, "pertmap", params={**REGION, "steps": 60, "optimizer": optimizer})
    objective = result.extras["objective"]
    assert result.extras["steps"] == [0, 10, 20, 30, 40, 50, 59]
    assert len(objective) == len(result.extras["mean_w"]) == len(result.extras["penalty"]) == len(result.extras["changed_fraction"]) == 7
    assert objective[-1] > objective[0] + 1.0
    for total, mean_w, penalty in zip(objective, result.extras["mean_w"], result.extras["penalty"], strict=True):
        assert total == pytest.approx(mean_w - 10.0 * penalty, abs=1e-5)
    assert all(0.0 <= f <= 1.0 for f in result.extras["changed_fraction"])
    assert 0.0 <= result.extras["w"].min() and result.extras["w"].max() <= 2.0


@pytest.mark.parametrize("optimizer", ["sgd", "rmsprop", "adam"])
def test_projection_clips_overshooting_steps_at_both_bounds(optimizer):
    # A huge lr and lambda make every step overshoot: without the projection w would leave [0, w_max].
    x = _input()
    params = {**REGION, "steps": 20, "optimizer": optimizer, "lr": 10.0, "lam": 1e4, "w_init": 1.0}
    result = engine.explain(_discriminative_region_model(x), x, "pertmap", params=params)
    assert result.extras["w"].min() == 0.0 and result.extras["w"].max() == 2.0
    assert all(0.0 <= v <= 2.0 for v in result.extras["mean_w"])


@pytest.mark.parametrize("patch", [4, 5])
def test_patch_mode_shares_one_width_per_patch(patch):
    x = _input()
    result = engine.explain(_discriminative_region_model(x), x, "pertmap", params={**REGION, "steps": 40, "patch": patch})
    w = result.extras["w"]
    assert w.shape == (3, SIZE, SIZE)
    for top in range(0, SIZE, patch):
        for left in range(0, SIZE, patch):
            block = result.map[top : top + patch, left : left + patch]
            assert np.ptp(block) == 0.0
            assert np.ptp(w[:, top : top + patch, left : left + patch], axis=(1, 2)).max() == 0.0
    assert np.ptp(result.map) > 0.0


def test_same_seed_same_map_and_another_seed_another_w():
    x = _input()
    model = _discriminative_region_model(x)
    params = {**REGION, "steps": 20, "lr": 0.1, "lam": 100.0}
    first = engine.explain(model, x, "pertmap", params=params, seed=1)
    again = engine.explain(model, x, "pertmap", params=params, seed=1)
    other = engine.explain(model, x, "pertmap", params=params, seed=2)
    np.testing.assert_array_equal(first.map, again.map)
    np.testing.assert_array_equal(first.extras["w"], again.extras["w"])
    assert not np.array_equal(first.extras["w"], other.extras["w"])


def _two_class_linear() -> tuple[LinearModel, torch.Tensor, np.ndarray]:
    """Two classes whose weights differ on the left half only: the margin ignores the right half."""
    model = LinearModel(channels=1, size=8, classes=2, seed=0)
    relevant = np.zeros((8, 8), dtype=bool)
    relevant[:, :4] = True
    with torch.no_grad():
        weight = model.linear.weight.view(2, 8, 8)
        weight[1] = weight[0]
        weight[0, :, :4] = 0.25
        weight[1, :, :4] = -0.25
        model.linear.bias.zero_()
    return model, torch.full((1, 8, 8), 0.2), relevant


@pytest.mark.parametrize("margin", ["probability", "logit"])
def test_linear_model_pixels_that_carry_the_margin_tolerate_less_noise(margin):
    model, x, relevant = _two_class_linear()  # margin z0 - z1 = 0.5 * sum(left half) = 3.2 at x
    params = {"steps": 80, "batch_size": 8, "lr": 0.05, "lam": 100.0, "w_max": 2.0, "margin": margin, "patch": 1, "patience": 0}
    result = engine.explain(model, x, "pertmap", params=params)
    w = result.extras["w"][0]
    assert result.predicted == 0
    assert w[relevant].mean() < w[~relevant].mean() - 0.5
    np.testing.assert_allclose(w[~relevant], 2.0, atol=1e-6)


def test_one_forward_per_step_and_clipping_to_the_input_range():
    x = _input()
    model = Recorder(_discriminative_region_model(x))
    engine.explain(model, x, "pertmap", params={**REGION, "steps": 7, "batch_size": 5, "clip": True, "w_init": 1.0})
    assert [b.shape[0] for b in model.batches] == [1] + [5] * 7
    low, high = x.amin(dim=(1, 2)), x.amax(dim=(1, 2))
    for batch in model.batches[1:]:
        assert torch.all(batch.amin(dim=(0, 2, 3)) >= low) and torch.all(batch.amax(dim=(0, 2, 3)) <= high)
        assert batch.amin() == low.min() or batch.amax() == high.max()  # w = 1 noise does reach the bounds


def test_fixed_clip_range_and_unclipped_noise():
    x = _input()
    model = Recorder(_discriminative_region_model(x))
    engine.explain(model, x, "pertmap", params={**REGION, "steps": 2, "clip": True, "clip_range": "fixed", "low": -0.1, "high": 0.9, "w_init": 1.0})
    assert all(b.min() >= -0.1 and b.max() <= 0.9 for b in model.batches[1:])
    model.batches.clear()
    engine.explain(model, x, "pertmap", params={**REGION, "steps": 2, "w_init": 1.0})
    assert min(float(b.min()) for b in model.batches[1:]) < -0.1


def test_bad_parameters_are_user_errors():
    x = _input()
    model = _discriminative_region_model(x)
    with pytest.raises(UserError, match="w_init"):
        engine.explain(model, x, "pertmap", params={"w_init": 3.0, "w_max": 2.0})
    with pytest.raises(UserError, match="low < high"):
        engine.explain(model, x, "pertmap", params={"clip": True, "clip_range": "fixed", "low": 1.0, "high": 0.0})
    with pytest.raises(UserError, match="must be one of"):
        engine.explain(model, x, "pertmap", params={"optimizer": "lbfgs"})


def test_the_model_is_not_changed_and_needs_no_grad_setup():
    x = _input()
    model = _discriminative_region_model(x)
    for p in model.parameters():
        p.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = engine.explain(model, x, "pertmap", params={**REGION, "steps": 5}, target=1)
    assert result.target == 1 and result.predicted == 0
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    model.requires_grad_(True)
    engine.explain(model, x, "pertmap", params={**REGION, "steps": 5})
    assert all(p.grad is None for p in model.parameters())


class RunsOutOfMemory(nn.Module):
    """Raises the out-of-memory error that a device would for optimisation batches larger than `limit`."""

    def __init__(self, model: nn.Module, limit: int) -> None:
        super().__init__()
        self.model, self.limit = model, limit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > self.limit and torch.is_grad_enabled():  # the prediction runs without grad
            raise torch.OutOfMemoryError("out of memory (simulated)")
        return self.model(x)


def test_the_batch_is_halved_when_memory_runs_out():
    x = _input()
    model = RunsOutOfMemory(_discriminative_region_model(x), limit=2)
    result = engine.explain(model, x, "pertmap", params={**REGION, "steps": 4, "batch_size": 8})
    assert result.extras["batch_size"] == 2 and result.extras["steps"] == [0, 3]
    with pytest.raises(UserError, match="batch of one"):
        engine.explain(RunsOutOfMemory(model.model, limit=0), x, "pertmap", params={**REGION, "steps": 4})


def test_each_recorded_step_reports_its_objective_as_a_typed_payload():
    x = _input()
    reports = []

    def progress(fraction, message, data=None):
        if data is not None:
            reports.append((message, data))

    result = engine.explain(_discriminative_region_model(x), x, "pertmap", params={**REGION, "steps": 25, "record_every": 10}, progress=progress)
    payloads = [data for _, data in reports]
    assert all(isinstance(data, ObjectiveValue) for data in payloads)
    # A payload's step counts the steps done; the extras number the steps from 0.
    assert [data.step for data in payloads] == [step + 1 for step in result.extras["steps"]] == [1, 11, 21, 25]
    assert [data.value for data in payloads] == result.extras["objective"]
    assert all(data.steps == 25 and data.name == "objective" for data in payloads)
    assert [message for message, _ in reports] == ["step 1/25", "step 11/25", "step 21/25", "step 25/25"]


def test_the_plateau_rule_stops_once_the_map_has_converged_to_the_region():
    """The stopping rule ends the run well before its step cap, and the map it stops at is the
    region model's known answer: every pixel outside the region saturated, the mass inside."""
    x = _input()
    model = _discriminative_region_model(x)
    params = {**REGION, "steps": 2000, "patience": 3, "tol": 0.005}
    result = engine.explain(model, x, "pertmap", params=params, seed=0)
    (done,) = result.extras["steps_done"]
    assert result.extras["stopped_early"] and done < 400, done
    inside = _dilated(model.region_mask(), 2)
    np.testing.assert_allclose(result.extras["w"][:, ~inside], 2.0, atol=1e-6)
    assert result.map[inside].sum() >= 0.95 * result.map.sum() > 1.0


def test_antithetic_pairs_are_mirror_images_and_repeats_report_their_stability():
    x = _input()
    recorder = Recorder(_discriminative_region_model(x))
    result = engine.explain(recorder, x, "pertmap", params={**REGION, "steps": 30, "batch_size": 6, "repeats": 2}, seed=0)
    noisy = [b for b in recorder.batches if b.shape[0] == 6]
    assert len(noisy) == 60  # 30 steps x 2 repeats
    second = noisy[1] - x[None]  # the first step runs at w = w_init = 0: no noise to see yet
    assert second.abs().max() > 0
    torch.testing.assert_close(second[:3], -second[3:])
    assert not torch.equal(noisy[1], noisy[31]), "the second repeat draws other noise"
    assert 0.5 <= result.extras["stability"] <= 1.0  # both runs find the region
    assert result.extras["steps_done"] == [30, 30] and not result.extras["stopped_early"]
    spec = engine.get_method("pertmap")
    assert spec.estimate(result.params, SIZE, SIZE).forward == 30 * 6 * 2 + 1


def test_without_antithetic_pairs_every_sample_is_drawn_afresh():
    x = _input()
    recorder = Recorder(_discriminative_region_model(x))
    engine.explain(recorder, x, "pertmap", params={**REGION, "steps": 2, "batch_size": 4, "antithetic": False}, seed=0)
    second = recorder.batches[-1] - x[None]
    assert second.abs().max() > 0 and not torch.allclose(second[:2], -second[2:])


@pytest.mark.parametrize("noise", ["uniform", "gaussian"])
def test_the_noise_distribution_has_the_uniform_variance_and_its_own_support(noise):
    """With w held at 1 (w_init = w_max = 1, no learning) the perturbations are xi itself: uniform
    draws stay in [-1, 1]; Gaussian ones have the same variance 1/3 but reach beyond 1."""
    x = _input()
    recorder = Recorder(_discriminative_region_model(x))
    params = {**REGION, "steps": 6, "batch_size": 64, "lr": 1e-9, "w_max": 1.0, "w_init": 1.0, "noise": noise}
    engine.explain(recorder, x, "pertmap", params=params, seed=0)
    xi = torch.stack([b - x[None] for b in recorder.batches if b.shape[0] == 64])
    assert abs(xi.var().item() - 1 / 3) < 0.01
    if noise == "uniform":
        assert xi.abs().max() <= 1.0 + 1e-6
    else:
        assert xi.abs().max() > 1.5
        torch.testing.assert_close(xi[:, :32], -xi[:, 32:])  # antithetic pairs hold for either law


def test_gaussian_noise_finds_the_region_too():
    x = _input()
    model = _discriminative_region_model(x)
    result = engine.explain(model, x, "pertmap", params={**REGION, "noise": "gaussian"}, seed=0)
    inside = _dilated(model.region_mask(), 2)
    assert result.map[inside].sum() >= 0.9 * result.map.sum() > 1.0
