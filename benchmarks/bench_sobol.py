"""Target 5: Sobol analysis of the Pima network (7 inputs, second order, bootstrap intervals): the
total time and its split into sampling, evaluation and analysis, and how the total grows with N
and with the number of inputs D (a random ReLU network with D inputs)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from common import BenchResult, Context, summarise

EVALUATION_SHARE = 0.10
PIMA = Path(__file__).resolve().parent.parent / "resources" / "data" / "pima.csv"


def cases(quick: bool) -> dict:
    if quick:
        return {"n": 2**11, "n_scaling": [2**10, 2**11, 2**12], "d_scaling": [4, 8, 16], "d_scaling_n": 2**9}
    return {"n": 2**13, "n_scaling": [2**k for k in range(10, 16)], "d_scaling": [4, 8, 16, 32], "d_scaling_n": 2**10}


def _pima():
    from engine.io.tables import load_table
    from engine.tabular import TrainConfig, prepare, train_tabular

    data = prepare(load_table(PIMA, target="type"), "type")
    return train_tabular(data, TrainConfig(seed=0)), data


def _timed(call) -> tuple[float, object]:
    start = time.perf_counter()
    value = call()
    return time.perf_counter() - start, value


def _split_figures(result: BenchResult, label: str, runs: list[tuple[float, object]]) -> dict:
    walls = [wall for wall, _ in runs]
    parts = {
        "sampling": [r.sampling_s for _, r in runs],
        "evaluation": [r.evaluation_s for _, r in runs],
        "analysis": [r.analysis_s for _, r in runs],
        "total (sampling + evaluation + analysis)": [r.total_s for _, r in runs],
        "convergence analyses (wall - total)": [wall - r.total_s for wall, r in runs],
        "wall (the whole call)": walls,
    }
    for name, values in parts.items():
        result.figure(f"{label}: {name}", summarise(values))
    return parts


def random_network(d: int, seed: int = 0) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Sequential(torch.nn.Linear(d, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)).eval()


def network_fn(net: torch.nn.Module):
    def evaluate(rows: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return net(torch.as_tensor(rows, dtype=torch.float32))[:, 0].double().numpy()

    return evaluate


def _slope(xs: list[float], ys: list[float]) -> float:
    """Exponent of a power law y ~ x^k fitted on a log-log scale."""
    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0])


def run_sobol(ctx: Context) -> BenchResult:
    from engine.stats.sobol import sobol_indices
    from engine.tabular.sensitivity import tabular_sobol

    case = cases(ctx.quick)
    result = BenchResult("sobol", "Sobol indices of the Pima network: time split and growth (target 5)")
    result.config.update(case)
    train_s, (trained, data) = _timed(_pima)
    result.config.update({"inputs": len(data.names), "second_order": True, "bootstrap_resamples": 100, "distribution": "empirical", "train_s": round(train_s, 3)})
    result.notes.append(
        "engine.tabular.sensitivity.tabular_sobol as the CLI calls it: Saltelli sampling, evaluation, SALib analysis with 100 bootstrap resamples, "
        "and the convergence analyses at N = 256 ... N/2 (outside the engine's three-way split, shown as 'convergence')"
    )

    def pima(n: int):
        return lambda: tabular_sobol(trained.model, data, n=n, second_order=True, seed=0)

    label = f"Pima D={len(data.names)} N=2^{int(np.log2(case['n']))}"
    ctx.log(f"  sobol {label}")
    pima(case["n"])()  # warm-up
    runs = [_timed(pima(case["n"])) for _ in range(ctx.repeats)]
    parts = _split_figures(result, label, runs)
    result.figure(f"{label}: model evaluations", runs[0][1].n_evaluations, unit="rows")
    share = summarise([e / t for e, t in zip(parts["evaluation"], parts["total (sampling + evaluation + analysis)"], strict=True)])
    share_wall = summarise([e / t for e, t in zip(parts["evaluation"], parts["wall (the whole call)"], strict=True)])
    result.target(f"{label}: evaluation / total (sampling + evaluation + analysis)", share["median"], EVALUATION_SHARE, spread=share)
    result.figure(f"{label}: evaluation / wall", share_wall, unit="")

    # The same analysis with one torch thread: on a loaded machine two threads of a tiny network
    # spend most of their time waiting at each operation's barrier for a descheduled thread.
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
        try:
            single = [_timed(pima(case["n"])) for _ in range(ctx.repeats)]
        finally:
            torch.set_num_threads(threads)
        result.figure(f"{label}, 1 torch thread: evaluation", summarise([r.evaluation_s for _, r in single]))
        result.figure(f"{label}, 1 torch thread: total", summarise([r.total_s for _, r in single]))
        result.figure(f"{label}, 1 torch thread: evaluation / total", summarise([r.evaluation_s / r.total_s for _, r in single]), unit="")

    walls = []
    for n in case["n_scaling"]:
        ctx.log(f"  sobol Pima N={n}")
        runs = [_timed(pima(n)) for _ in range(max(1, ctx.repeats - 1))]
        stats = summarise([w for w, _ in runs])
        walls.append(stats["median"])
        result.figure(
            f"Pima N=2^{int(np.log2(n))} ({runs[0][1].n_evaluations} rows): wall",
            stats,
            sampling_s=float(np.median([r.sampling_s for _, r in runs])),
            evaluation_s=float(np.median([r.evaluation_s for _, r in runs])),
            analysis_s=float(np.median([r.analysis_s for _, r in runs])),
        )
    result.figure("Pima: exponent k of wall ~ N^k", _slope(case["n_scaling"], walls), unit="")

    n = case["d_scaling_n"]
    walls = []
    for d in case["d_scaling"]:
        problem = {"names": [f"x{i}" for i in range(d)], "bounds": [[0.0, 1.0]] * d}
        fn = network_fn(random_network(d))
        ctx.log(f"  sobol synthetic D={d} N={n}")
        runs = [_timed(lambda fn=fn, problem=problem: sobol_indices(fn, problem, n=n, second_order=True, seed=0)) for _ in range(max(1, ctx.repeats - 1))]
        stats = summarise([w for w, _ in runs])
        walls.append(stats["median"])
        result.figure(
            f"random network D={d} N=2^{int(np.log2(n))} ({runs[0][1].n_evaluations} rows): wall",
            stats,
            sampling_s=float(np.median([r.sampling_s for _, r in runs])),
            evaluation_s=float(np.median([r.evaluation_s for _, r in runs])),
            analysis_s=float(np.median([r.analysis_s for _, r in runs])),
        )
    result.figure("random network: exponent k of wall ~ D^k", _slope(case["d_scaling"], walls), unit="")
    result.notes.append("second-order analysis has D(D-1)/2 pairs, each bootstrapped, and N(2D+2) model evaluations, so the time grows faster than linearly in D")
    return result


def run_reduction_parallel(ctx: Context) -> BenchResult:
    """The input reduction's retrainings on Pima in 1 process and in one spawned worker per core
    (engine.tabular.parallel): wall time and speed-up, same results."""
    import os

    from engine.tabular import TrainConfig
    from engine.tabular.parallel import default_workers
    from engine.tabular.sensitivity import input_reduction

    result = BenchResult("reduction_parallel", "Input reduction on Pima: serial against parallel retrainings")
    _, data = _pima()
    ranking = list(data.names)
    seeds = 1 if ctx.quick else 3
    workers = default_workers()
    config = TrainConfig(seed=0)
    result.config.update({"seeds": seeds, "workers": workers, "trainings": (2 * len(ranking) - 1) * seeds, "cores": os.cpu_count()})
    walls, rows = {}, {}
    for count in (1, workers):
        ctx.log(f"  reduction, {count} process(es)")
        wall, reduction = _timed(lambda count=count: input_reduction(data, ranking, config=config, seeds=seeds, workers=count))
        walls[count], rows[count] = wall, [r.to_dict() for r in reduction.rows]
        result.figure(f"reduction wall, {count} process(es)", wall)
    result.figure("speed-up (serial wall / parallel wall)", walls[1] / walls[workers], unit="x")
    result.notes.append("the parallel wall includes starting the spawned workers (each imports torch once); the rows are identical: " + str(rows[1] == rows[workers]))
    return result


if __name__ == "__main__":  # python benchmarks/bench_sobol.py: the reduction speed-up alone
    import json
    import sys

    quick = "--quick" in sys.argv
    outcome = run_reduction_parallel(Context(quick=quick, device=torch.device("cpu"), repeats=1))
    print(json.dumps({"config": outcome.config, "figures": outcome.figures, "notes": outcome.notes}, indent=1, default=str))
