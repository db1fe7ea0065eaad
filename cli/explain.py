"""The ``info`` and ``explain`` commands."""

from __future__ import annotations

import argparse
import sys

from cli._common import SEED_HELP, _emit, _floats, _log, _method_params, _preprocess_overrides, _progress_printer, _size, _target, integer, number, seed
from engine.core.errors import UserError
from engine.core.jsonable import dumps
from engine.core.vocab import MAX_CLASSES


def add_parsers(commands) -> None:
    info = commands.add_parser("info", help="versions, devices, methods and model names")
    info.add_argument("--json", action="store_true", help="print JSON to stdout")
    info.add_argument("--model", help="also summarise this model's layers (a spec as for explain)")
    info.add_argument("--weights", help="weights for --model")
    info.add_argument("--trust", action="store_true", help="allow a pickled model file for --model")

    ex = commands.add_parser("explain", help="explain images with a method and write maps")
    ex.add_argument("--model", required=True, help="torchvision architecture (resnet18), arch:WEIGHTS from the hub cache, or a TorchScript/model file")
    ex.add_argument("--weights", help="state dict (.pt/.pth) or .safetensors file, or torchvision weights name (DEFAULT, IMAGENET1K_V1) found in the hub cache")
    ex.add_argument("--labels", help="class names: one per line, or JSON")
    ex.add_argument("--trust", action="store_true", help="allow unpickling a whole-model file (it can run arbitrary code)")
    ex.add_argument("--allow-download", action="store_true", help="allow torchvision to download named weights that are not cached")
    ex.add_argument("--num-classes", type=integer(1, MAX_CLASSES), help="output classes of a randomly initialised architecture")
    ex.add_argument("--input", required=True, help="an image, a folder or ImageFolder of images, or a preprocessed C x H x W .npy")
    ex.add_argument("--method", nargs="+", action="extend", default=None, metavar="NAME", help="explanation method(s), several allowed (see info); default saliency")
    ex.add_argument("--compare", action="store_true", help="with several methods, write DIR/<stem>.compare.json with their pairwise agreement")
    ex.add_argument("--compare-top", type=number(0, 100, low_open=True), default=10.0, metavar="PERCENT", help="top-percent of pixels whose overlap (IoU) --compare reports (default 10)")
    ex.add_argument("--target", type=_target, default=None, help="'pred' (default) or a class index")
    ex.add_argument("--layer", help="layer name for methods that take one")
    ex.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a method parameter, repeatable; METHOD.KEY=VALUE sets it for one method only")
    ex.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    ex.add_argument("--seed", type=seed, default=0, help=f"seed for random initialisation and random methods {SEED_HELP}")
    ex.add_argument("--out", default="sensiscope-out", help="folder for the .npy, .png and .json results")
    ex.add_argument("--json", action="store_true", help="print the JSON records to stdout and nothing else")
    ex.add_argument("--overwrite", action="store_true", help="replace existing result files that Sensiscope did not write (refused otherwise)")
    pre = ex.add_argument_group("preprocessing (defaults come from the weights or ImageNet)")
    pre.add_argument("--resize", type=_size, default=argparse.SUPPRESS, help="shorter side in pixels, or none")
    pre.add_argument("--crop", type=_size, default=argparse.SUPPRESS, help="centre crop size, or none")
    pre.add_argument("--mean", type=_floats, default=argparse.SUPPRESS, help="per-channel mean, e.g. 0.5,0.5,0.5")
    pre.add_argument("--std", type=_floats, default=argparse.SUPPRESS, help="per-channel std")
    pre.add_argument("--channels", type=int, choices=(1, 3), default=argparse.SUPPRESS, help="channels the model takes")


def cmd_info(args) -> int:
    from engine import available_methods, classification_models, find_cached_weights, list_devices, versions
    from engine.runtime.device import select_device

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
    if args.model:
        from engine.models.loading import load_model
        from engine.models.summary import summarize

        loaded = load_model(args.model, args.weights, trust=args.trust)
        pre = loaded.preprocess
        size = pre.crop or pre.resize or 224
        layers = summarize(loaded.module, (pre.channels, size, size))
        data["model"] = loaded.to_dict() | {"layers": [layer.to_dict() for layer in layers]}
        lines.append(f"model {loaded.spec}: {loaded.source}")
        for layer in layers:
            shape = "x".join(map(str, layer.output_shape)) if layer.output_shape else "-"
            grid = f"  [{layer.grid}]" if layer.grid else ""
            lines.append(f"  {'  ' * layer.depth}{layer.name or '(model)'}  {layer.type}  {shape}  {layer.parameters} params{grid}")
    _emit(data, args.json, "\n".join(lines))
    return 0


# Runs with more model passes than this are announced, and show a progress line with the time left.
LONG_RUN_PASSES = 500


def _announce_cost(method: str, params, size: tuple[int, int], announced: set[str]) -> bool:
    """Say before a long run what it will cost (once per method and input size); True when long."""
    from engine.methods._registry import get_method

    cost = get_method(method).estimate(params, *size)
    long_run = cost.forward + cost.backward > LONG_RUN_PASSES
    key = f"{method}{size}"
    if long_run and key not in announced:
        announced.add(key)
        _log(f"{method} on {size[0]} x {size[1]}: {cost.describe()} per input")
    return long_run


def cmd_explain(args) -> int:
    from engine.core.files import check_output_folder
    from engine.core.params import parse_assignments
    from engine.demo.catalogue import resolve_image_data
    from engine.io.images import load_input, scan_inputs
    from engine.io.preprocess import Preprocess
    from engine.io.writers import check_result_files, write_comparison, write_optimised_images, write_result
    from engine.methods.runner import explain
    from engine.metrics.agreement import pairwise_agreement
    from engine.models.loading import load_model
    from engine.runtime.device import select_device

    method_names = list(dict.fromkeys(args.method or ["saliency"]))
    params = _method_params(method_names, parse_assignments(args.param), args.layer)
    if args.compare and len(method_names) < 2:
        raise UserError("--compare needs at least two methods, e.g. --method gradcam local")
    if not 0 < args.compare_top <= 100:
        raise UserError(f"--compare-top must be a percentage in (0, 100], not {args.compare_top}")
    device = select_device(args.device)
    scan = scan_inputs(resolve_image_data(args.input))
    out = check_output_folder(args.out)
    for item in scan.items:  # before any work: no result may replace a file Sensiscope did not write
        for name in method_names:
            check_result_files(out, item, name, args.overwrite)
    loaded = load_model(args.model, args.weights, args.labels, trust=args.trust, seed=args.seed, num_classes=args.num_classes, allow_download=args.allow_download)
    overrides = _preprocess_overrides(args)
    if overrides:
        loaded.preprocess = Preprocess(**(loaded.preprocess.to_dict() | overrides))
    for note in loaded.notes:
        _log(f"note: {note}")
    loaded.module.to(device)
    records, failures = [], list(scan.skipped)
    for path, reason in scan.skipped:
        _log(f"skipped {path}: {reason}")
    total = len(scan.items)
    context = {"model": args.model, "weights": args.weights}
    announced: set[str] = set()
    for index, item in enumerate(scan.items, start=1):
        try:
            tensor, display = load_input(item, loaded.preprocess)
            results = []
            for name in method_names:
                long_run = _announce_cost(name, params[name], tuple(tensor.shape[-2:]), announced)
                progress = _progress_printer(f"{item.path.name} {name} ") if long_run and not args.json else None
                results.append(explain(loaded, tensor, name, args.target, params[name], seed=args.seed, progress=progress))
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
        _log(f"[{index}/{total}] {item.source}: predicted {loaded.label(first.predicted)} ({first.probability:.3f}); {timings}")
    if not records:
        raise UserError(f"no input could be explained ({len(failures)} skipped)")
    if failures:  # on stderr, so it is said under --json too
        _log(f"{total - len(failures) + len(scan.skipped)} explained, {len(failures)} skipped")
    if args.json:
        sys.stdout.write(dumps(records))
        sys.stdout.write("\n")
    return 0


COMMANDS = {"info": cmd_info, "explain": cmd_explain}
