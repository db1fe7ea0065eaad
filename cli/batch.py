"""The `batch` command: every (image, method) pair of a data set explained and scored into a
result store (Parquet records, Zarr maps, a JSON manifest), resumable, locally or on Ray. The
run options here are shared with `evaluate --store`."""

from __future__ import annotations

from pathlib import Path

from cli._common import _log, _method_params, _print_json, _ProgressBar, integer, number, seed
from cli.options import add_layer_option, add_model_options, add_preprocess_options, add_target_option, model_spec
from engine.core.errors import UserError


def add_run_arguments(parser, *, store_required: bool) -> None:
    """The store, resume, metric and backend options of batch (and of evaluate)."""
    parser.add_argument("--store", required=store_required, help="folder of the result store (new or empty; an existing store with --resume)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --store: finished (image, method) pairs are skipped; the settings must be the same")
    parser.add_argument("--tolerance", type=number(0, 10_000), default=0.0, help="pointing-game tolerance in pixels (default 0; benchmarks on 224-px images use 15)")
    parser.add_argument("--road", action="store_true", help="also score ROAD (remove and debias, MoRF and LeRF with noisy linear imputation; about 2 s per map at 128 px)")
    parser.add_argument("--map-dtype", choices=("float32", "float16"), default="float32", help="how maps are stored in the Zarr array")
    parser.add_argument("--backend", choices=("local", "ray"), default="local", help="local: this process; ray: actors on a local Ray (--workers) or a cluster (--address)")
    parser.add_argument("--workers", type=integer(1, 4096), default=2, help="with --backend ray: number of workers (each loads the model once)")
    parser.add_argument("--address", help="with --backend ray: join this Ray cluster (e.g. auto, HEAD:6379 or ray://HEAD:10001) instead of starting a local one")
    parser.add_argument("--gpus-per-worker", type=number(0, 64), default=0.0, help="with --backend ray: GPUs each worker asks Ray for (e.g. 1, or 0.5 to share one)")
    parser.add_argument("--threads", type=integer(1, 1024), default=None, help="torch CPU threads per worker (default: torch's choice locally, one per CPU of a Ray worker)")
    parser.add_argument(
        "--batch",
        type=integer(1, 100_000),
        default=16,
        help="images explained and scored together (default 16): saliency, inputxgrad and the one-pass CAMs explain them in one pass, "
        "their deletion and insertion curves share forwards; 1 = one by one",
    )
    parser.add_argument("--retry-failed", action="store_true", help="with --resume: compute again the pairs that failed before (an unreadable image); they are skipped otherwise")
    parser.add_argument("--repair", action="store_true", help="with --resume: set a damaged store's damaged records and maps aside (into STORE/damaged-TIME/) and compute them again")
    parser.add_argument("--max-pairs", type=integer(0, 10**9), default=None, help="stop after this many pairs (continue later with --resume)")


def add_parsers(commands) -> None:
    batch = commands.add_parser("batch", help="explain and score a data set into a resumable result store (Parquet, Zarr), locally or on Ray")
    add_model_options(batch)
    add_preprocess_options(batch)
    batch.add_argument("--data", required=True, help="a folder or ImageFolder of images (NAME_mask.png beside an image adds localisation), or demo:ultrasound")
    batch.add_argument("--methods", required=True, help="comma-separated methods, e.g. gradcam,local")
    add_target_option(batch)
    add_layer_option(batch)
    batch.add_argument("--param", action="append", default=[], metavar="[METHOD.]KEY=VALUE", help="method parameter, repeatable (as for explain)")
    batch.add_argument("--n", type=integer(1, 10**9), default=None, help="use only this many images (taken in turn from each class); default all")
    batch.add_argument("--steps", type=integer(2, 10_000), default=50, help="steps of the deletion and insertion curves")
    batch.add_argument("--baseline", choices=("blur", "zero"), default="blur", help="what deleted pixels become")
    batch.add_argument("--seed", type=seed, default=0)
    batch.add_argument("--device", default="auto", help="device of the local backend and of each Ray worker")
    add_run_arguments(batch, store_required=True)
    batch.add_argument("--json", action="store_true", help="print the run summary as JSON and nothing else")


def method_list(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise UserError("--methods needs at least one method")
    if len(set(methods)) != len(methods):
        raise UserError("--methods names a method twice")
    return methods


def build_job(args, methods: list[str]):
    """The run's Job and its loaded model, from the command line (the evaluate defaults, then the
    user's --param and --layer; the model with the user's preprocessing, checked before any
    store or output is made)."""
    from engine.app.models import check_layers, fingerprint, load, resolve_target
    from engine.app.runs import EVALUATE_DEFAULTS, Job, MetricSettings
    from engine.core.params import parse_assignments

    given = parse_assignments(args.param)
    assignments = {f"{m}.{k}": str(v) for m in methods for k, v in EVALUATE_DEFAULTS.get(m, {}).items()} | given
    params = _method_params(methods, assignments, args.layer)
    metrics = MetricSettings(steps=args.steps, baseline=args.baseline, tolerance=args.tolerance, road=args.road)
    spec = model_spec(args)
    loaded = load(spec)
    for note in loaded.notes:
        _log(f"note: {note}")
    target = resolve_target(args.target, loaded)
    check_layers(loaded, params)
    job = Job(spec, params, metrics, args.seed, args.device, args.threads, batch=args.batch, target=target, fingerprint=fingerprint(spec, loaded))
    return job, loaded


def data_items(data: str, n: int | None):
    """The images of --data (files, not .npy tensors), in turn from each class when ``n`` is given."""
    from engine.app.data import pick_in_turn, resolve_image_data, scan_inputs

    folder = resolve_image_data(data)
    scan = scan_inputs(folder)
    for note in scan.notes:
        _log(f"note: {note}")
    items = [i for i in scan.items if not i.is_tensor]
    if not items:
        raise UserError(f"{data}: holds no images")
    return folder, (pick_in_turn(items, n) if n else items)


def note_colour(items, loaded) -> None:
    from engine.app.data import channel_note

    note = channel_note(items, loaded.preprocess.channels)
    if note:
        _log(f"note: {note}")


def report_failures(summary) -> None:
    """The images a run could not use, one line each (on stderr, so they are said under --json too)."""
    seen = set()
    for image, _method, reason in summary.failures:
        if image not in seen:
            seen.add(image)
            _log(f"skipped {image}: {reason}")


def ray_options(args):
    """The Ray options of --backend ray (refused with the local backend); also checks that the
    resume-only options come with --resume."""
    from engine.app.runs import RayOptions

    for flag, given in (("--retry-failed", args.retry_failed), ("--repair", args.repair)):
        if given and not args.resume:
            raise UserError(f"{flag} goes with --resume (it changes how an existing store is continued)")
    if args.backend == "local" and (args.address or args.gpus_per_worker):
        raise UserError("--address and --gpus-per-worker need --backend ray")
    return RayOptions(workers=args.workers, address=args.address, gpus_per_worker=args.gpus_per_worker)


def run_into_store(args, job, folder, items):
    """Run the job into --store with a progress bar (quiet under --json); returns the summary."""
    from engine.app.runs import run_batch

    ray = ray_options(args)
    with _ProgressBar("pairs", quiet=args.json) as progress:
        return run_batch(
            job, args.store, items, data=str(Path(folder).resolve()), resume=args.resume, backend=args.backend, ray=ray, map_dtype=args.map_dtype,
            limit=args.max_pairs, retry_failed=args.retry_failed, repair=args.repair, progress=progress,
        )


def cmd_batch(args) -> int:
    methods = method_list(args.methods)
    job, loaded = build_job(args, methods)  # a bad spec, size, layer or target fails here, before any store is made
    folder, items = data_items(args.data, args.n)
    note_colour(items, loaded)
    summary = run_into_store(args, job, folder, items)
    if summary.computed and summary.failed == summary.computed and not summary.skipped:
        report_failures(summary)
        raise UserError(f"no pair could be computed: all {summary.failed} failed (reasons above); the store keeps them as failed records")
    data = summary.to_dict() | {"images": len(items), "methods": methods}
    if args.json:
        _print_json(data)
        return 0
    report_failures(summary)
    state = "complete" if summary.complete else f"incomplete ({summary.skipped + summary.computed} of {summary.total} pairs; continue with --resume)"
    failed = f" ({summary.failed} failed, listed above; --resume --retry-failed computes them again)" if summary.failed else ""
    if summary.skipped and not args.retry_failed:
        from engine.app.runs import Store

        earlier = len(Store.open(summary.store).failures()) - summary.failed
        failed += f"; {earlier} failed pairs from earlier runs are skipped (--retry-failed computes them again)" if earlier > 0 else ""
    print(f"{summary.store}: {summary.computed} pairs computed{failed}, {summary.skipped} already there, {summary.total} in all, {state}; {summary.elapsed_s:.1f} s on the {summary.backend} backend")
    print(f"records: pandas.read_parquet('{summary.store}/records'); maps: zarr.open_group('{summary.store}/maps.zarr')")
    return 0


COMMANDS = {"batch": cmd_batch}
