"""Every registered method honours the contract: map shape, finiteness, progress, cancel, records."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import engine
from engine import Cancelled, CancelToken, UserError
from engine.core.params import build_params
from engine.core.progress import EpochLosses, ObjectiveValue, PartialMap
from tests.cases import METHOD_CASES, all_cases

CASES = list(all_cases())
IDS = [f"{method}-{index}" for method, index, *_ in CASES]
PAYLOADS = (EpochLosses, ObjectiveValue, PartialMap)


def test_every_registered_method_has_cases():
    assert {m.name for m in engine.available_methods()} <= set(METHOD_CASES)


@pytest.mark.parametrize("method,index,factory,shape,params", CASES, ids=IDS)
def test_map_shape_progress_and_record(method, index, factory, shape, params):
    model = factory()
    x = torch.rand(shape, generator=torch.Generator().manual_seed(index))
    reports, payloads = [], []

    def progress(fraction, message, data=None):
        reports.append(fraction)
        payloads.append(data)

    result = engine.explain(model, x, method, params=params, progress=progress)
    assert result.map.shape == shape[1:]
    assert result.map.dtype == np.float32
    assert np.isfinite(result.map).all()
    assert result.method == method
    assert reports and reports[-1] == pytest.approx(1.0)
    assert all(b >= a for a, b in zip(reports, reports[1:], strict=False)), "progress must not go backwards"
    assert all(p is None or isinstance(p, PAYLOADS) for p in payloads), "payloads are typed, never ad-hoc values"
    assert result.elapsed_s > 0.0  # set by the runner, which times every method
    with torch.no_grad():
        logits = model(x.unsqueeze(0))
    assert result.predicted == int(logits.argmax())
    assert result.target == result.predicted
    assert result.probability == pytest.approx(float(torch.softmax(logits, 1).max()), rel=1e-5)
    summary = result.summary()
    assert summary["params"] == result.params_dict()
    assert summary["device"] == "cpu"


@pytest.mark.parametrize("method,index,factory,shape,params", CASES, ids=IDS)
def test_methods_leave_the_timing_to_the_runner(method, index, factory, shape, params):
    spec = engine.get_method(method)
    result = spec.explain(factory(), torch.rand(shape), None, build_params(spec.params_cls, params))
    assert result.elapsed_s == 0.0


@pytest.mark.parametrize("method,index,factory,shape,params", CASES, ids=IDS)
def test_cancel_before_start_raises(method, index, factory, shape, params):
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        engine.explain(factory(), torch.rand(shape), method, params=params, cancel=token)


@pytest.mark.parametrize("method,index,factory,shape,params", CASES, ids=IDS)
def test_cancel_from_first_progress_report_stops_the_run(method, index, factory, shape, params):
    token = CancelToken()
    calls = []

    def progress(fraction, message):  # the older two-argument form still works
        calls.append(fraction)
        token.cancel()

    with pytest.raises(Cancelled):
        engine.explain(factory(), torch.rand(shape), method, params=params, progress=progress, cancel=token)
    assert calls[-1] < 1.0


@pytest.mark.parametrize("method,index,factory,shape,params", CASES, ids=IDS)
def test_target_out_of_range_is_a_user_error(method, index, factory, shape, params):
    with pytest.raises(UserError, match="does not exist"):
        engine.explain(factory(), torch.rand(shape), method, target=99, params=params)


@pytest.mark.parametrize("method,index,factory,shape,params", CASES, ids=IDS)
def test_global_random_state_is_left_alone(method, index, factory, shape, params):
    model, x = factory(), torch.rand(shape)
    before = torch.get_rng_state()
    engine.explain(model, x, method, params=params, seed=123)
    assert torch.equal(before, torch.get_rng_state())


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(UserError, match="saliency"):
        engine.get_method("no-such-method")


def test_wrong_input_shape_is_a_user_error():
    with pytest.raises(UserError, match="expected one image"):
        engine.explain(METHOD_CASES["saliency"][0][0](), torch.rand(2, 3, 8, 8))


@pytest.mark.parametrize("method,index,factory,shape,params", CASES, ids=IDS)
def test_same_seed_gives_the_same_map(method, index, factory, shape, params):
    model, x = factory(), torch.rand(shape, generator=torch.Generator().manual_seed(1))
    first = engine.explain(model, x, method, params=params, seed=5)
    second = engine.explain(model, x, method, params=params, seed=5)
    np.testing.assert_array_equal(first.map, second.map)
    assert first.seed == 5
