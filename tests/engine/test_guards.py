"""Guards against silent garbage and lost promises: non-finite models and parameters, the CPU's
out-of-memory wording, windows that do not cover the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import engine
from engine.core.errors import UserError
from engine.core.progress import CancelToken
from engine.runtime.batching import is_out_of_memory, run_in_batches
from tests.models import LinearModel, tiny_cnn

CPU_OOM = "[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: you tried to allocate 47185920000 bytes. Error code 12 (Cannot allocate memory)"
WINDOWS_OOM = "[enforce fail at alloc_cpu.cpp:72] data. DefaultCPUAllocator: not enough memory: you tried to allocate 9437184 bytes."


@pytest.mark.parametrize("error", [RuntimeError(CPU_OOM), RuntimeError(WINDOWS_OOM), MemoryError(), torch.OutOfMemoryError("CUDA out of memory")])
def test_every_allocator_wording_counts_as_out_of_memory(error):
    assert is_out_of_memory(error)


def test_other_runtime_errors_are_not_out_of_memory():
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


def test_a_cpu_allocation_failure_halves_the_batch_and_retries():
    sizes = []

    def evaluate(start, stop):
        sizes.append(stop - start)
        if stop - start > 4:
            raise RuntimeError(CPU_OOM)

    used = run_in_batches(16, 16, evaluate, cancel=CancelToken(), progress=lambda *a: None, device=torch.device("cpu"))
    assert used == 4
    assert sizes[:3] == [16, 8, 4] and sum(sizes[2:]) == 16


def test_the_runner_turns_a_cpu_allocation_failure_into_one_line():
    class Hungry(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError(CPU_OOM)

    with pytest.raises(UserError, match="out of memory on cpu"):
        engine.explain(Hungry(), torch.zeros(3, 8, 8), "saliency")


def test_nan_weights_are_an_error_not_a_nan_map():
    model = LinearModel()
    with torch.no_grad():
        model.linear.weight[0, 0] = float("nan")
    with pytest.raises(UserError, match="not a finite number"):
        engine.explain(model, torch.rand(3, 8, 8), "saliency")


@pytest.mark.parametrize(("method", "assignment"), [("local", {"delta": "inf", "mode": "additive"}), ("actmax", {"l2": "inf"}), ("local", {"blur_sigma": "nan"})])
def test_non_finite_parameters_are_refused(method, assignment):
    with pytest.raises(UserError, match="finite number"):
        engine.explain(tiny_cnn(seed=0), torch.rand(3, 16, 16), method, params=assignment)


def test_local_says_when_its_windows_leave_pixels_out():
    result = engine.explain(tiny_cnn(seed=0), torch.rand(3, 20, 20), "local", params={"window": 2, "stride": 8})
    covered = result.extras["covered_pixels"]
    assert covered == (3 * 2) ** 2  # windows at 0, 8, 16 along each axis, two pixels wide
    assert "cover only 36 of 400 pixels" in result.extras["notes"][0]
    assert np.count_nonzero(result.map) <= covered
    full = engine.explain(tiny_cnn(seed=0), torch.rand(3, 20, 20), "local", params={"window": 4, "stride": 4})
    assert "notes" not in full.extras and full.extras["covered_pixels"] == 400


@pytest.mark.parametrize(("params", "size"), [({"window": 4, "stride": 2}, (20, 20)), ({"window": 3, "stride": 5}, (17, 23)), ({"mode": "additive", "central": True, "window": 5}, (20, 15))])
def test_the_announced_cost_of_local_is_what_it_spends(params, size):
    spec = engine.get_method("local")
    result = engine.explain(tiny_cnn(seed=0), torch.rand(3, *size), "local", params=params)
    assert spec.estimate(result.params, *size).forward == result.extras["forward_passes"]


def test_optimisation_methods_announce_steps_times_batch():
    pertmap = engine.get_method("pertmap")
    assert pertmap.estimate(pertmap.params_cls(steps=300, batch_size=16), 224, 224).forward == 300 * 16 + 1
    actmax = engine.get_method("actmax")
    assert actmax.estimate(actmax.params_cls(steps=10, targets="1,2,3"), 224, 224).backward == 30


def test_a_long_explain_run_is_announced_with_its_passes(capsys, tmp_path, rgb_png, scripted_tiny):
    from cli.main import main as cli

    model, _ = scripted_tiny
    code = cli(["explain", "--model", str(model), "--input", str(rgb_png), "--out", str(tmp_path / "o"), "--method", "local", "--param", "window=1", "--resize", "24", "--crop", "24"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "local on 24 x 24: 577 forward passes per input" in err


def test_actmax_refuses_a_batch_of_units_beyond_the_memory_available(monkeypatch):
    import engine.methods.actmax as actmax

    monkeypatch.setattr(actmax, "available_memory_bytes", lambda device: 2**16)  # 64 KiB free
    with pytest.raises(UserError, match="optimise fewer targets"):
        engine.explain(tiny_cnn(seed=0), torch.rand(3, 32, 32), "actmax", params={"targets": ",".join(map(str, range(3))), "steps": 2})
    monkeypatch.setattr(actmax, "available_memory_bytes", lambda device: 2**34)
    result = engine.explain(tiny_cnn(seed=0), torch.rand(3, 32, 32), "actmax", params={"targets": "0,1,2", "steps": 2})
    assert result.extras["targets"] == [0, 1, 2]
