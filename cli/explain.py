"""The ``info`` and ``explain`` commands."""

from __future__ import annotations

import sys

from cli._common import SEED_HELP, _emit, _log, _method_params, _progress_printer, number, seed
from cli.options import add_layer_option, add_model_options, add_preprocess_options, add_run_options, add_target_option, model_spec, run_settings
from engine.core.errors import UserError
from engine.core.jsonable import dumps


def add_parsers(commands) -> None:
    info = commands.add_parser("info", help="versions, devices, methods and model names; with --model, that model's layers, preprocessing and sidecar")
    info.add_argument("--json", action="store_true", help="print JSON to stdout")
    add_model_options(info, required=False)
    add_preprocess_options(info)
    info.add_argument("--write-sidecar", nargs="?", const="", default=None, metavar="PATH",
                      help="write what Sensiscope inferred about --model (class arguments, channels, input size, labels, preprocessing) as a sidecar JSON "
                      "beside its weights or model file (or at PATH), for you to check and edit")
    info.add_argument("--overwrite", action="store_true", help="with --write-sidecar: replace a sidecar that Sensiscope did not write")

    ex = commands.add_parser("explain", help="explain images with a method and write maps")
    add_model_options(ex)
    add_preprocess_options(ex)
    ex.add_argument("--input", required=True, help="an image, a folder or ImageFolder of images, or a preprocessed C x H x W .npy")
    ex.add_argument("--method", nargs="+", action="extend", default=None, metavar="NAME", help="explanation method(s), several allowed (see info); default saliency")
    ex.add_argument("--compare", action="store_true", help="with several methods, write DIR/<stem>.compare.json with their pairwise agreement")
    ex.add_argument("--compare-top", type=number(0, 100, low_open=True), default=10.0, metavar="PERCENT", help="top-percent of pixels whose overlap (IoU) --compare reports (default 10)")
    add_target_option(ex)
    add_layer_option(ex)
    ex.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a method parameter, repeatable; METHOD.KEY=VALUE sets it for one method only")
    ex.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    add_run_options(ex)
    ex.add_argument("--seed", type=seed, default=0, help=f"seed for random initialisation and random methods {SEED_HELP}")
    ex.add_argument("--out", default="sensiscope-out", help="folder for the .npy, .png and .json results")
    ex.add_argument("--json", action="store_true", help="print the JSON records to stdout and nothing else")
    ex.add_argument("--overwrite", action="store_true", help="replace existing result files that Sensiscope did not write (refused otherwise)")


def cmd_info(args) -> int:
    from engine.app.explain import available_methods
    from engine.app.models import classification_models, find_cached_weights
    from engine.app.system import list_devices, select_device
    from engine.core.versions import versions

    data = {
        "versions": versions(),
        "devices": [d.to_dict() for d in list_devices()],
        "auto_device": str(select_device("auto")),
        "methods": [m.to_dict() for m in available_methods()],
        "models": {"architectures": list(classification_models()), "cached_weights": [c.spec for c in find_cached_weights()], "demo": []},
    }
    lines = ["Sensiscope " + data["versions"]["sensiscope"], "versions: " + ", ".join(f"{k} {v}" for k, v in data["versions"].items())]
    lines.append("devices (auto picks " + data["auto_device"] + "):")
    lines += [f"  {d.label()}" for d in list_devices()]
    lines.append("methods:")
    for method in available_methods():
        lines.append(f"  {method.name}: {method.summary}")
        for p in method.params():
            limits = f" one of {', '.join(map(str, p.choices))}" if p.choices else ""
            if p.low is not None or p.high is not None:
                limits += f" in [{p.low}, {p.high}]"
            lines.append(f"    {p.name} ({p.type.__name__}, default {p.default}{limits}): {p.help}")
    lines.append(f"architectures ({len(data['models']['architectures'])}): " + ", ".join(data["models"]["architectures"]))
    cached = data["models"]["cached_weights"]
    lines.append("weights in the hub cache: " + (", ".join(cached) if cached else "none"))
    if args.write_sidecar is not None and not args.model:
        raise UserError("--write-sidecar needs --model (and its --weights)")
    if args.model:
        from engine.app.models import load, sidecar_for, summarize, write_sidecar

        spec = model_spec(args)
        loaded = load(spec)
        pre = loaded.preprocess
        size = pre.crop or pre.resize or 224
        layers = summarize(loaded.module, (pre.channels, size, size))
        data["model"] = loaded.to_dict() | {"layers": [layer.to_dict() for layer in layers], "sidecar": sidecar_for(loaded, spec), "notes": list(loaded.notes)}
        lines = [lines[0]]  # with --model the text is about the model (--json still carries everything)
        lines.append(f"model {loaded.spec}: {loaded.source}")
        lines.append(f"  preprocessing: {_describe_preprocess(pre)}")
        if loaded.num_classes == 1:
            lines.append("  one output: probability means the sigmoid of it")
        for note in loaded.notes:
            lines.append(f"  note: {note}")
        if args.write_sidecar is not None:
            written = write_sidecar(loaded, spec, args.write_sidecar or None, args.overwrite)
            data["model"]["sidecar_file"] = str(written)
            lines.append(f"  sidecar written: {written} (check it, then edit what Sensiscope could not know)")
        for layer in layers:
            shape = "x".join(map(str, layer.output_shape)) if layer.output_shape else "-"
            grid = f"  [{layer.grid}]" if layer.grid else ""
            lines.append(f"  {'  ' * layer.depth}{layer.name or '(model)'}  {layer.type}  {shape}  {layer.parameters} params{grid}")
        lines.append("layer names go to --layer; `main.py info` without --model lists the methods and their parameters")
    _emit(data, args.json, "\n".join(lines))
    return 0


def _describe_preprocess(pre) -> str:
    size = "kept" if not (pre.resize or pre.crop) else f"resize {pre.resize or 'none'}, crop {pre.crop or 'none'}"
    return f"{pre.channels} channel(s), {size}, mean {','.join(f'{v:g}' for v in pre.mean)}, std {','.join(f'{v:g}' for v in pre.std)}"


# Runs with more model passes than this are announced, and show a progress line with the time left.
LONG_RUN_PASSES = 500


def _announce_cost(method: str, params, size: tuple[int, int], announced: set[str]) -> bool:
    """Say before a long run what it will cost (once per method and input size); True when long."""
    from engine.app.explain import get_method

    cost = get_method(method).estimate(params, *size)
    long_run = cost.forward + cost.backward > LONG_RUN_PASSES
    key = f"{method}{size}"
    if long_run and key not in announced:
        announced.add(key)
        _log(f"{method} on {size[0]} x {size[1]}: {cost.describe()} per input")
    return long_run


def _params_and_settings(args, method_names: list[str]) -> tuple[dict, dict[str, int]]:
    """Each method's parameters, and the run settings (--batch-size, --memory-budget, or the
    former parameters --param batch_size=N and memory_budget_mb=MB where no method takes them)."""
    from engine.core.params import parse_assignments

    settings = run_settings(args)
    return _method_params(method_names, parse_assignments(args.param), args.layer, settings), settings


def cmd_explain(args) -> int:
    from engine.app.data import channel_note, load_input, resolve_image_data, scan_inputs
    from engine.app.explain import check_result_files, explain, pairwise_agreement, write_comparison, write_optimised_images, write_result
    from engine.app.models import check_layers, load, resolve_target
    from engine.app.system import select_device
    from engine.core.files import check_output_folder

    method_names = list(dict.fromkeys(args.method or ["saliency"]))
    params, settings = _params_and_settings(args, method_names)
    spec = model_spec(args)
    if args.compare and len(method_names) < 2:
        raise UserError("--compare needs at least two methods, e.g. --method gradcam local")
    if not 0 < args.compare_top <= 100:
        raise UserError(f"--compare-top must be a percentage in (0, 100], not {args.compare_top}")
    device = select_device(args.device)
    scan = scan_inputs(resolve_image_data(args.input))
    loaded = load(spec)  # the model, its preprocessing, the target and the layers are checked before the output folder is made
    target = resolve_target(args.target, loaded)
    check_layers(loaded, params)
    out = check_output_folder(args.out)
    for item in scan.items:  # before any work: no result may replace a file Sensiscope did not write
        for name in method_names:
            check_result_files(out, item, name, args.overwrite)
    for note in loaded.notes:
        _log(f"note: {note}")
    loaded.module.to(device)
    records, failures = [], list(scan.skipped)
    for path, reason in scan.skipped:
        _log(f"skipped {path}: {reason}")
    for note in scan.notes:
        _log(f"note: {note}")
    colour = channel_note(scan.items, loaded.preprocess.channels)
    if colour:
        _log(f"note: {colour}")
    total = len(scan.items)
    context = {"model": args.model, "weights": args.weights} | ({"model_args": spec.model_args} if spec.model_args else {})
    announced: set[str] = set()
    for index, item in enumerate(scan.items, start=1):
        try:
            tensor, display = load_input(item, loaded.preprocess)
            results = []
            for name in method_names:
                long_run = _announce_cost(name, params[name], tuple(tensor.shape[-2:]), announced)
                progress = _progress_printer(f"{item.path.name} {name} ") if long_run and not args.json else None
                results.append(explain(loaded, tensor, name, target, params[name], seed=args.seed, progress=progress, **settings))
                if progress is not None:
                    print(file=sys.stderr)
        except UserError as exc:
            if scan.layout == "file":
                raise
            failures.append((item.path, str(exc)))
            _log(f"skipped {item.source}: {exc}")
            continue
        for result in results:
            for note in result.extras.get("notes", []):
                _log(f"note ({result.method}, {item.path.name}): {note}")
        item_records = [write_result(result, display, out, item, loaded, context=context | {"input": str(item.path)}, overwrite=args.overwrite) for result in results]
        for record, result in zip(item_records, results, strict=True):
            optimised = write_optimised_images(result, out, item, args.overwrite)  # actmax: the images themselves too
            if optimised:
                record["optimised_images"] = optimised
        if args.compare:
            comparisons = pairwise_agreement({r.method: r.map for r in results}, args.compare_top)
            compare_file = write_comparison(comparisons, out, item, context | {"input": str(item.path), "top_percent": args.compare_top}, overwrite=args.overwrite)
            for record in item_records:
                record["compare_file"] = compare_file
        records += item_records
        first = results[0]
        timings = ", ".join(f"{r.method} {r.elapsed_s:.3f} s" for r in results)
        explained = "" if first.target == first.predicted else f", explained {loaded.label(first.target)}"
        _log(f"[{index}/{total}] {item.source}: predicted {loaded.label(first.predicted)} ({first.probability:.3f}){explained}; {timings}")
    if not records:
        raise UserError(f"no input could be explained ({len(failures)} skipped)")
    if failures:  # on stderr, so it is said under --json too
        _log(f"{total - len(failures) + len(scan.skipped)} explained, {len(failures)} skipped")
    if args.json:
        sys.stdout.write(dumps(records))
        sys.stdout.write("\n")
    return 0


COMMANDS = {"info": cmd_info, "explain": cmd_explain}
