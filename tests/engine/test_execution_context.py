"""Issue 27: batch size and memory budget are run settings (engine.runtime.context), measured batch
sizes (engine.runtime.sizing), and one region builder for kernelshap and the Sobol map."""

from __future__ import annotations

import dataclasses
import threading

import numpy as np
import pytest
import torch

import engine
from engine.core.errors import UserError
from engine.methods import _image_regions
from engine.runtime import sizing
from engine.runtime.batching import run_in_batches
from engine.runtime.context import ExecutionContext, current_context, running
from engine.runtime.sizing import BatchSizer, plan_batches
from tests.models import tiny_cnn

CPU = torch.device("cpu")


def _image(size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(3, size, size, generator=torch.Generator().manual_seed(seed))


def test_no_method_takes_a_batch_size_or_memory_budget_but_pertmap_its_noise_samples():
    for spec in engine.available_methods():
        names = {f.name for f in dataclasses.fields(spec.params_cls)}
        assert "memory_budget_mb" not in names, spec.name
        assert ("batch_size" in names) == (spec.name == "pertmap"), spec.name


@pytest.mark.parametrize("how", ["keyword", "legacy key"])
def test_the_runner_hands_the_batch_size_to_the_method(how):
    params = {"masks": 30, "grid": 4}
    if how == "keyword":
        result = engine.explain(tiny_cnn(), _image(), "rise", params=params, batch_size=7)
    else:
        result = engine.explain(tiny_cnn(), _image(), "rise", params={**params, "batch_size": "7"})
    assert result.extras["batch_size_used"] == 7
    assert "batch_size" not in dataclasses.asdict(result.params)


def test_a_memory_budget_caps_the_measured_batch_and_the_map_stays():
    model, x = tiny_cnn(), _image(64, seed=1)  # about 0.45 MiB an image: 2 fit in 1 MiB
    free = engine.explain(model, x, "rise", params={"masks": 40, "grid": 4}, seed=3)
    per_image = round(free.extras["memory_per_image_mb"] * 2**20)
    tight = engine.explain(model, x, "rise", params={"masks": 40, "grid": 4}, seed=3, memory_budget_mb=1)
    assert tight.extras["memory_budget_mb"] == 1
    assert tight.extras["batch_size_used"] == 2**20 // per_image < 16
    np.testing.assert_allclose(tight.map, free.map, rtol=1e-5, atol=1e-7)


def test_bad_run_settings_are_one_line():
    with pytest.raises(UserError, match="batch_size is a whole number"):
        engine.explain(tiny_cnn(), _image(), "rise", params={"masks": 4, "batch_size": "many"})
    with pytest.raises(UserError, match="memory_budget_mb is a whole number"):
        engine.explain(tiny_cnn(), _image(), "rise", params={"masks": 4}, memory_budget_mb=-1)


def test_the_context_is_the_runs_own_and_ends_with_it():
    seen = {}

    def method_body():
        seen["inside"] = current_context()

    with running(ExecutionContext(batch_size=5, method="probe")):
        method_body()
        other = threading.Thread(target=lambda: seen.setdefault("thread", current_context()))
        other.start()
        other.join()
    assert seen["inside"].batch_size == 5 and seen["inside"].method == "probe"
    assert seen["thread"].batch_size == 0 and seen["thread"].method == ""  # another thread: its own
    assert current_context().batch_size == 0  # after the run: the defaults again
    assert engine.get_method("rise").params_cls().batch_size == 0  # the former parameter reads the context


class _Clock:
    """A fake perf_counter: a batch of n costs ``overhead + n * per_item(n)`` seconds."""

    def __init__(self, monkeypatch, overhead: float, per_item):
        self.now, self.overhead, self.per_item = 0.0, overhead, per_item
        monkeypatch.setattr(sizing.time, "perf_counter", lambda: self.now)

    def run(self, start: int, stop: int) -> None:
        n = stop - start
        self.now += self.overhead + n * self.per_item(n)


def _run(clock: _Clock, total: int, model, sizes: list[int]) -> int:
    def evaluate(start: int, stop: int) -> None:
        sizes.append(stop - start)
        clock.run(start, stop)

    with running(ExecutionContext(method="probe", model=model, input_shape=(3, 8, 8))):
        sizer = plan_batches(1000, CPU)
        return run_in_batches(total, sizer, evaluate, cancel=engine.CancelToken(), progress=lambda *a, **k: None, device=CPU)


def test_the_batch_doubles_while_it_pays_and_the_next_run_starts_there(monkeypatch):
    # time per item falls until 128 (a fixed overhead per batch), then rises: 128 is the best
    clock = _Clock(monkeypatch, overhead=0.05, per_item=lambda n: 0.001 * (1.0 if n <= 128 else 1.5))
    model, sizes = torch.nn.Linear(2, 2), []
    used = _run(clock, 4000, model, sizes)
    assert sizes[:5] == [16, 32, 64, 128, 256] and used == 128 and set(sizes[5:-1]) == {128}
    again: list[int] = []
    assert _run(clock, 4000, model, again) == 128 and set(again[:-1]) == {128}  # remembered, settled


def test_no_trial_when_little_work_is_left(monkeypatch):
    clock = _Clock(monkeypatch, overhead=0.001, per_item=lambda n: 1e-5)
    sizes: list[int] = []
    assert _run(clock, 200, torch.nn.Linear(2, 2), sizes) == 16
    assert set(sizes[:-1]) == {16}


def test_an_explicit_size_is_kept_and_out_of_memory_ends_growth(monkeypatch):
    with running(ExecutionContext(batch_size=24)):
        sizer = plan_batches(1000, CPU)
    assert (sizer.size, sizer.growing) == (24, False)
    grown = BatchSizer(16, grow=True, limit=4096)
    grown.halved()
    assert (grown.size, grown.growing) == (8, False)


def test_kernelshap_and_the_sobol_map_fall_back_to_the_grid_alike(monkeypatch):
    monkeypatch.setattr(_image_regions, "slic_labels", lambda x, *a, **k: torch.zeros(x.shape[2:], dtype=torch.int64))
    sobol = engine.explain(tiny_cnn(), _image(16), "sobol", params={"regions": "segments", "segments": 8, "grid": 4, "n": 4})
    assert sobol.extras["regions"] == 16 and sobol.extras["grid"] == 4
    assert any("single superpixel" in note and "4 x 4 grid" in note for note in sobol.extras["notes"])
