"""Command-line sub-commands of the tabular workflow: train, sobol, sensitivity, reduce."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli._common import _log, _print_json, _progress_printer, integer, number, seed
from engine.core.errors import UserError
from engine.core.files import check_output_folder
from engine.core.vocab import ACTIVATIONS, DISTRIBUTIONS, MISSING_POLICIES, TABULAR_TRAINING
from engine.core.vocab import TABULAR_MAX_LAYERS as MAX_LAYERS
from engine.core.vocab import TABULAR_MAX_WIDTH as MAX_WIDTH

# Kept here (not imported from engine.tabular, which imports torch): a test checks they agree.
METHOD_NAMES = ("sobol", "morris", "fast", "rbd_fast", "delta", "pawn", "dgsm")
DEFAULT_NETWORKS = 5
AUTO_TOLERANCE = 0.02
AUTO_BUDGET = 2_000_000


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of integers") from None
    if not values or min(values) < 1 or max(values) > MAX_WIDTH or len(values) > MAX_LAYERS:
        raise argparse.ArgumentTypeError(f"'{text}' needs 1 to {MAX_LAYERS} layer widths from 1 to {MAX_WIDTH}")
    return values


def _sample_size(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    return integer(2, 2**20)(text)


def _methods(text: str) -> list[str]:
    names = list(METHOD_NAMES) if text.strip().lower() == "all" else _names(text)
    unknown = [n for n in names if n not in METHOD_NAMES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown method(s) {', '.join(unknown) or text!r}; choose from {', '.join(METHOD_NAMES)} or 'all'")
    return list(dict.fromkeys(names))


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="a CSV or Parquet table, or demo:pima for the embedded Pima diabetes table")
    parser.add_argument("--target", required=True, help="the column to predict")
    parser.add_argument("--features", type=_names, help="comma-separated feature columns (default: all but the target and 'split')")
    parser.add_argument("--missing", choices=MISSING_POLICIES, default="error", help="what to do with missing values (default: refuse, naming the columns)")
    parser.add_argument("--task", choices=("auto", "classification", "regression"), default="auto")
    parser.add_argument("--seed", type=seed, default=TABULAR_TRAINING["seed"], help="seed for the split, the initialisation and the sampling")
    parser.add_argument("--json", action="store_true", help="print a JSON result to stdout and nothing else")


def _train_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--hidden", type=_ints, default=TABULAR_TRAINING["hidden"], help="hidden layer widths, e.g. 32,16")
    group.add_argument("--activation", default=TABULAR_TRAINING["activation"], choices=ACTIVATIONS)
    group.add_argument("--dropout", type=number(0, 0.99), default=TABULAR_TRAINING["dropout"])
    group.add_argument("--weight-decay", type=number(0, 10), default=TABULAR_TRAINING["weight_decay"])
    group.add_argument("--lr", type=number(0, 10, low_open=True), default=TABULAR_TRAINING["lr"])
    group.add_argument("--epochs", type=integer(1, 100_000), default=TABULAR_TRAINING["epochs"], help="maximum epochs (early stopping decides)")
    group.add_argument("--patience", type=integer(1, 100_000), default=TABULAR_TRAINING["patience"], help="epochs without validation improvement before stopping")
    group.add_argument("--no-class-weights", action="store_true", help="do not weight classes by inverse frequency")


def add_parsers(commands) -> None:
    train = commands.add_parser("train", help="train a feedforward network on a CSV table")
    _data_arguments(train)
    _train_arguments(train)
    train.add_argument("--out", required=True, help="model path; MODEL.safetensors and MODEL.json are written")
    train.add_argument("--overwrite", action="store_true", help="replace model files that Sensiscope did not write (refused otherwise)")

    sobol = commands.add_parser("sobol", help="Sobol global sensitivity of a tabular network (SALib)")
    _data_arguments(sobol)
    source = sobol.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a model saved by `train`")
    source.add_argument("--train", action="store_true", help="train a network first (training options apply)")
    _train_arguments(sobol)
    _sobol_arguments(sobol)
    sobol.add_argument("--out", help="folder for CSV tables and PNG charts")

    sensitivity = commands.add_parser("sensitivity", help="one or several sensitivity methods on an ensemble of tabular networks, with their rankings compared")
    _data_arguments(sensitivity)
    source = sensitivity.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a model saved by `train` (an ensemble of one)")
    source.add_argument("--train", action="store_true", help="train the networks first (training options apply)")
    sensitivity.add_argument("--method", type=_methods, default=["sobol"], help=f"comma-separated methods or 'all': {', '.join(METHOD_NAMES)} (default sobol)")
    _train_arguments(sensitivity)
    _sobol_arguments(sensitivity)
    sensitivity.add_argument("--out", help="folder for CSV tables")

    reduce = commands.add_parser("reduce", help="rank inputs by Sobol indices and retrain on the top k")
    _data_arguments(reduce)
    _train_arguments(reduce)
    _sobol_arguments(reduce)
    reduce.add_argument("--rank-by", choices=("ST", "S1"), default="ST")
    reduce.add_argument("--seeds", type=integer(1, 100), default=3, help="trainings per k (mean and spread are reported)")
    reduce.add_argument("--tolerance", type=number(0, 1), default=0.01, help="accepted loss of accuracy (R^2 for regression) against the full model")
    reduce.add_argument("--no-random", action="store_true", help="skip the random-selection baseline")
    reduce.add_argument(
        "--workers",
        type=integer(0, 32),
        default=1,
        help="processes for the retrainings (default 1, in this process: each extra one imports torch first, which pays only for long trainings; 0 = one per core, at most 8)",
    )
    reduce.add_argument("--out", help="folder for the table and chart")


def _sobol_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("Sobol analysis")
    group.add_argument("--n", type=_sample_size, default=1024, help="base sample size N from 2 to 2^20 (a power of two; others are rounded up), or 'auto'")
    group.add_argument("--n-tolerance", type=number(0, 1, low_open=True), default=AUTO_TOLERANCE, help=f"--n auto: stop when the widest ST interval (+-) is below this (default {AUTO_TOLERANCE})")
    group.add_argument("--n-budget", type=integer(1000, 10**9), default=AUTO_BUDGET, help=f"--n auto: never more model evaluations than this per network (default {AUTO_BUDGET:,})")
    group.add_argument("--second-order", action="store_true", help="also compute S2 (costs N(2D+2) instead of N(D+2) evaluations)")
    group.add_argument("--dist", choices=DISTRIBUTIONS, default="empirical", help="input distribution from the training rows (default empirical: each input through its empirical quantile function)")
    group.add_argument("--networks", type=integer(1, 50), default=DEFAULT_NETWORKS, help=f"with --train: networks trained with seeds s..s+K-1 on the same split (default {DEFAULT_NETWORKS})")
    group.add_argument("--class", dest="class_name", help="class whose probability is analysed (default: the positive class)")


def _config(args):
    from engine.app.tabular import TrainConfig

    return TrainConfig(
        hidden=tuple(args.hidden),
        activation=args.activation,
        dropout=args.dropout,
        weight_decay=args.weight_decay,
        lr=args.lr,
        epochs=args.epochs,
        patience=args.patience,
        class_weights=not args.no_class_weights,
        seed=args.seed,
    )


# Tables from this size on show a progress line while they are read.
LARGE_TABLE_BYTES = 32 * 2**20


def _read_table(args):
    from engine.app.data import load_table, resolve_table

    path = resolve_table(args.data)
    try:
        large = path.stat().st_size >= LARGE_TABLE_BYTES
    except OSError:
        large = False  # load_table says what is wrong with it
    progress = _progress(args, "read ") if large else None
    try:
        return load_table(path, progress=progress)
    finally:
        if progress is not None:
            _end_progress(args)


def _load_data(args):
    from engine.app.tabular import prepare

    table = _read_table(args)
    data = prepare(table, args.target, args.features, task=args.task, missing=args.missing, seed=args.seed)
    for note in data.notes:
        _log(f"note: {note}")
    return data


def _metrics_line(metrics: dict) -> str:
    keys = ("accuracy", "balanced_accuracy", "roc_auc", "r2", "rmse")
    return ", ".join(f"{k} {metrics[k]:.3f}" for k in keys if k in metrics)


def _progress(args, prefix: str):
    """A progress line with the time left on stderr; none under --json (stdout stays pure JSON)."""
    return None if args.json else _progress_printer(prefix)


def _end_progress(args) -> None:
    if not args.json:
        print(file=sys.stderr)


# Designs with this many rows are announced before they start.
LONG_DESIGN = 500_000


def _announce_design(args, d: int, second_order: bool) -> None:
    from engine.app.tabular import power_of_two

    if args.n == "auto":
        _log(f"--n auto: N doubles from 256 until the widest ST interval is below {args.n_tolerance:g} or {args.n_budget:,} evaluations per network")
        return
    n, _ = power_of_two(args.n)
    rows = n * (2 * d + 2 if second_order else d + 2)
    if rows >= LONG_DESIGN:  # a small table network evaluates ~50,000 rows a second on a CPU
        _log(f"Sobol design: N = {n}, {d} inputs, {rows:,} model evaluations")


def cmd_train(args) -> int:
    from engine.app.tabular import check_model_output, train_tabular

    check_model_output(args.out, args.overwrite)  # before the work: never replace a user's file
    data = _load_data(args)
    trained = train_tabular(data, _config(args), progress=_progress(args, "train "))
    _end_progress(args)
    weights, sidecar = trained.save(args.out, args.overwrite)
    summary = {
        "model": str(weights),
        "metadata": str(sidecar),
        "features": data.names,
        "target": data.target,
        "task": data.task,
        "classes": data.classes,
        "split": data.split_source,
        "metrics": trained.metrics,
        "epochs_run": trained.history["epochs_run"],
        "elapsed_s": trained.elapsed_s,
    }
    if args.json:
        _print_json(summary)
    else:
        print(f"trained on {trained.metrics['n_train']} rows ({data.split_source}), {trained.history['epochs_run']} epochs, {trained.elapsed_s:.1f} s")
        print(f"test ({trained.metrics['n_test']} rows): {_metrics_line(trained.metrics)}")
        print(f"saved {weights} and {sidecar}")
    return 0


def _listing(values, limit: int = 8) -> str:
    values = [str(v) for v in values]
    return ", ".join(values[:limit]) + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _check_model_fits_table(args, meta: dict, data) -> None:
    """Refuse a saved model whose target, task or classes differ from the table's, saying which
    option or file to change: the model file (--model) or the table (--data, --target, --task)."""
    model, target, task, classes = args.model, meta.get("target"), meta.get("task"), list(meta.get("classes") or [])
    if target != data.target:
        raise UserError(
            f"the model predicts '{target}' ({model}) but --target is '{data.target}': pass --target {target} to analyse this model on {args.data}, "
            f"or give --model a model trained for '{data.target}' (main.py train --data {args.data} --target {data.target})"
        )
    if task != data.task:
        raise UserError(f"the model is a {task} model ({model}) but '{data.target}' in {args.data} was read as a {data.task} target: pass --task {task}")
    if classes != data.classes:
        raise UserError(
            f"the model was trained on the classes {_listing(classes)} of '{target}' ({model}), but {args.data} has {_listing(data.classes)}: "
            f"give --data the table the model was trained on (or one with the same classes), or train a new model on {args.data}"
        )
    inputs = [f["name"] for f in meta.get("features") or []]
    if inputs and inputs != data.names:
        absent = [name for name in inputs if name not in data.names]
        if absent and args.features is None:
            raise UserError(
                f"the model was trained on {_listing(inputs)} ({model}), but {args.data} lacks {_listing(absent)}: "
                f"give --data the table the model was trained on (or one with those columns), or train a new model on {args.data}"
            )
        raise UserError(f"the model was trained on {_listing(inputs, 50)} ({model}), in this order; pass --features {','.join(inputs)}")
    for spec in data.features:
        trained_on = next((f for f in meta["features"] if f["name"] == spec.name), {})
        if spec.kind == "categorical" and list(trained_on.get("categories", [])) != spec.categories:
            raise UserError(
                f"column '{spec.name}' of {args.data} has the categories {_listing(spec.categories)}, but the model ({model}) was trained on {_listing(trained_on.get('categories', []))}: "
                f"give --data a table with the model's categories, or train a new model on {args.data}"
            )


def _saved_network(args, data):
    """The model of --model, checked against the data, as a TrainedModel with its test metrics."""
    import dataclasses

    from engine.app.tabular import TrainConfig, TrainedModel, classification_metrics, load_tabular_model, predict, regression_metrics

    model, meta = load_tabular_model(args.model)
    _check_model_fits_table(args, meta, data)
    outputs = predict(model, data.x[data.test], data.task)
    metrics = classification_metrics(outputs, data.y[data.test], data.classes) if data.task == "classification" else regression_metrics(outputs, data.y[data.test])
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    saved = {k: v for k, v in (meta.get("config") or {}).items() if k in fields}
    try:
        config = TrainConfig(**{**saved, "hidden": tuple(saved.get("hidden", TrainConfig().hidden))})
    except (TypeError, UserError):
        config = TrainConfig()
    return TrainedModel(model, data, config, metrics)


def _networks(args, data) -> list:
    """--model: the saved network (an ensemble of one); --train: --networks networks, seeds s..s+K-1."""
    from engine.app.tabular import train_ensemble

    if getattr(args, "model", None):
        if args.networks != DEFAULT_NETWORKS and args.networks != 1:
            _log("note: --networks applies to --train; a saved model is an ensemble of one")
        return [_saved_network(args, data)]
    trained = train_ensemble(data, _config(args), args.networks, progress=_progress(args, "train "))
    _end_progress(args)
    for t in trained:
        _log(f"trained seed {t.config.seed}: {_metrics_line(t.metrics)} on {t.metrics['n_test']} test rows")
    return trained


def _mean_metrics(trained: list) -> dict:
    """One network's metrics, or for an ensemble the mean of each figure (and each network's)."""
    if len(trained) == 1:
        return trained[0].metrics
    keys = [k for k, v in trained[0].metrics.items() if isinstance(v, (int, float))]
    return {k: sum(t.metrics[k] for t in trained) / len(trained) for k in keys} | {"per_network": [t.metrics for t in trained]}


def _ensemble_run(args, trained, data, method: str):
    from engine.app.tabular import ensemble_method

    if method == "sobol":
        _announce_design(args, len(data.names), args.second_order)
    result = ensemble_method(
        trained,
        data,
        method,
        n=args.n,
        dist=args.dist,
        class_name=args.class_name,
        seed=args.seed,
        second_order=args.second_order,
        tolerance=args.n_tolerance,
        budget=args.n_budget,
        progress=_progress(args, f"{method} "),
    )
    _end_progress(args)
    return result


def _print_ensemble(ensemble) -> None:
    """Per input: ensemble mean, spread across networks, bootstrap half-width and the rank in each network."""
    from engine.app.tabular import METHOD_TITLES

    k = len(ensemble.runs)
    print(f"{METHOD_TITLES[ensemble.method]}: {ensemble.measure}, {k} network{'s' if k > 1 else ''} (seeds {', '.join(map(str, ensemble.seeds))})")
    print(f"{'feature':<16}{'mean':>9}{'spread':>9}{'+-boot':>9}  ranks per network")
    for row in ensemble.summary():
        ranks = " ".join(f"{r:g}" for r in row["ranks"])
        conf = f"{row['conf']:>9.3f}" if row["conf"] == row["conf"] else f"{'-':>9}"
        print(f"{row['name']:<16}{row['mean']:>9.3f}{row['spread']:>9.3f}{conf}  {ranks}")
    if k > 1:
        print(f"Kendall's W (agreement of the {k} networks' rankings): {ensemble.kendall_w:.2f}")


def _sobol_report(out: dict, order: list[str], metrics: dict) -> dict:
    """The `sobol --json` document, from SobolResult.to_dict(): features sorted by ST, then the rest."""
    index = {name: i for i, name in enumerate(out["names"])}
    return {
        "output": out["output_name"],
        "distribution": out["distribution"],
        "metrics": metrics,
        "features": [{"name": name, **{k: out[k][index[name]] for k in ("S1", "S1_conf", "ST", "ST_conf")}} for name in order],
        "S2": out["S2"],
        "S2_conf": out["S2_conf"],
        "names": out["names"],
        "n": out["n"],
        "n_evaluations": out["n_evaluations"],
        "timings_s": out["timings_s"],
        "convergence": out["convergence"],
        "seed": out["seed"],
    }


def cmd_sobol(args) -> int:
    from engine.app.tabular import mean_sobol, write_ensemble_files, write_sobol_files

    if args.out:
        check_output_folder(args.out)  # before the work, not after it
    data = _load_data(args)
    trained = _networks(args, data)
    ensemble = _ensemble_run(args, trained, data, "sobol")
    result = mean_sobol(ensemble)
    for note in result.notes:
        _log(f"note: {note}")
    report = _sobol_report(result.to_dict(), result.ranking("ST"), _mean_metrics(trained))
    report["ensemble"] = {k: v for k, v in ensemble.to_dict().items() if k != "sobol"}
    if args.out:
        chart_notes: list[str] = []
        report["files"] = write_sobol_files(result, args.out, chart_notes) | (write_ensemble_files(ensemble, args.out) if len(trained) > 1 else {})
        for note in chart_notes:
            _log(f"note: {note}")
    if args.json:
        _print_json(report)
        return 0
    what = f"mean of {len(trained)} networks, " if len(trained) > 1 else ""
    print(f"Sobol indices of {result.output_name}, N = {result.n} ({what}{result.n_evaluations} model evaluations), {args.dist} inputs")
    print(f"{'feature':<16}{'S1':>9}{'+-':>8}{'ST':>9}{'+-':>8}")
    for row in report["features"]:
        print(f"{row['name']:<16}{row['S1']:>9.3f}{row['S1_conf']:>8.3f}{row['ST']:>9.3f}{row['ST_conf']:>8.3f}")
    if len(trained) > 1:
        _print_ensemble(ensemble)
    t = report["timings_s"]
    print(f"time: sampling {t['sampling']:.2f} s, evaluation {t['evaluation']:.2f} s, analysis {t['analysis']:.2f} s")
    if args.out:
        print(f"files in {Path(args.out)}")
    return 0


def cmd_sensitivity(args) -> int:
    from engine.app.tabular import MethodComparison, write_comparison_files, write_ensemble_files

    if args.out:
        check_output_folder(args.out)
    data = _load_data(args)
    trained = _networks(args, data)
    ensembles = [_ensemble_run(args, trained, data, method) for method in args.method]
    comparison = MethodComparison.from_ensembles(ensembles) if len(ensembles) > 1 else None
    report = {
        "output": ensembles[0].runs[0].output_name,
        "distribution": args.dist,
        "metrics": _mean_metrics(trained),
        "methods": {e.method: {k: v for k, v in e.to_dict().items() if k != "sobol"} for e in ensembles},
        "comparison": comparison.to_dict() if comparison else None,
    }
    if args.out:
        report["files"] = {}
        for e in ensembles:
            report["files"] |= write_ensemble_files(e, args.out)
        if comparison:
            report["files"] |= write_comparison_files(comparison, args.out)
    if args.json:
        _print_json(report)
        return 0
    print(f"Sensitivity of {report['output']}; sampled inputs: {args.dist}; delta and PAWN: the {len(data.x)} observed rows")
    for e in ensembles:
        print()
        _print_ensemble(e)
        for note in e.runs[0].notes:
            print(f"  note: {note}")
    if comparison:
        print()
        _print_comparison(comparison)
    if args.out:
        print(f"files in {Path(args.out)}")
    return 0


def _print_comparison(comparison) -> None:
    table = comparison.rank_table()
    width = max(9, *(len(m) + 2 for m in comparison.methods))
    print("rank of each input by method (ensemble means; 1 = most influential)")
    print(f"{'feature':<16}" + "".join(f"{m:>{width}}" for m in comparison.methods))
    order = sorted(range(len(comparison.names)), key=lambda i: sum(table[m][i] for m in comparison.methods))
    for i in order:
        print(f"{comparison.names[i]:<16}" + "".join(f"{table[m][i]:>{width}g}" for m in comparison.methods))
    print(f"{'networks W':<16}" + "".join(f"{comparison.network_w[m]:>{width}.2f}" for m in comparison.methods))
    print(f"Kendall's W across the {len(comparison.methods)} methods: {comparison.kendall_w:.2f}")


def cmd_reduce(args) -> int:
    from engine.app.tabular import default_workers, input_reduction, ranking_names, write_reduction_files

    if args.seeds < 1:
        raise UserError("--seeds must be at least 1")
    if args.out:
        check_output_folder(args.out)  # before the work, not after it
    data = _load_data(args)
    args.model = None
    trained = _networks(args, data)
    ensemble = _ensemble_run(args, trained, data, "sobol")
    scores = {key: ensemble.mean_of(key) for key in ("S1", "ST")}
    ranking = ranking_names(data.names, scores[args.rank_by])
    workers = args.workers or default_workers()
    _log(f"ranking by the mean {args.rank_by} of {len(trained)} network(s): {', '.join(ranking)}")
    trainings = len(ranking) * args.seeds * (1 if args.no_random else 2) - (0 if args.no_random else args.seeds)
    _log(f"input reduction: {trainings} trainings ({len(ranking)} sizes x {args.seeds} seeds{'' if args.no_random else ' x ranked and random'}) in {workers} process(es)")
    result = input_reduction(
        data, ranking, rank_by=args.rank_by, config=_config(args), seeds=args.seeds, tolerance=args.tolerance, random_baseline=not args.no_random, progress=_progress(args, "reduce "), workers=workers
    )
    _end_progress(args)
    sobol = {"names": data.names, "S1": scores["S1"].tolist(), "ST": scores["ST"].tolist(), "networks": len(trained), "kendall_w": ensemble.kendall_w}
    report = result.to_dict() | {"sobol": sobol, "workers": workers}
    if args.out:
        report["files"] = write_reduction_files(result, args.out)
    if args.json:
        _print_json(report)
        return 0
    print(f"{result.metric} of the full model ({len(ranking)} inputs): {result.full_score:.3f}; tolerance {result.tolerance:g}")
    print(f"{'k':>3}  {'selection':<9}{result.metric + ' mean':>16}{'std':>8}  features (first seed)")
    for row in result.rows:
        mean, std = row.metrics[result.metric]
        print(f"{row.k:>3}  {row.selection:<9}{mean:>16.3f}{std:>8.3f}  {', '.join(row.features[0])}")
    print(f"recommended k = {result.recommended_k}: {', '.join(ranking[: result.recommended_k])} ({result.elapsed_s:.1f} s, {workers} process(es))")
    return 0


COMMANDS = {"train": cmd_train, "sobol": cmd_sobol, "sensitivity": cmd_sensitivity, "reduce": cmd_reduce}
