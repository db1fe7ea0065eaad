"""The headless command line: `info` and `explain` (the GUI entry lives in main.py)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import Cancelled, UserError

EXIT_USER_ERROR = 2


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are one line on stderr with exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UserError(f"{self.prog}: {message} (see --help)")


def _size(text: str) -> int | None:
    if text.strip().lower() in ("none", "0", ""):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size in pixels or 'none'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{text}' is not a positive size")
    return value


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers") from None


def _target(text: str) -> int | None:
    if text.strip().lower() in ("pred", "predicted"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"target must be 'pred' or a class index, not '{text}'") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"target must be a class index of 0 or more, not {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="main.py", description="Sensiscope: sensitivity analysis of neural networks. With no command, the GUI opens.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument("--self-check", action="store_true", help="check the installation headlessly and exit")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)

    commands.add_parser("gui", help="open the desktop application (the default)")

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
    ex.add_argument("--num-classes", type=int, help="output classes of a randomly initialised architecture")
    ex.add_argument("--input", required=True, help="an image, a folder or ImageFolder of images, or a preprocessed C x H x W .npy")
    ex.add_argument("--method", nargs="+", action="extend", default=None, metavar="NAME", help="explanation method(s), several allowed (see info); default saliency")
    ex.add_argument("--compare", action="store_true", help="with several methods, write DIR/<stem>.compare.json with their pairwise agreement")
    ex.add_argument("--compare-top", type=float, default=10.0, metavar="PERCENT", help="top-percent of pixels whose overlap (IoU) --compare reports (default 10)")
    ex.add_argument("--target", type=_target, default=None, help="'pred' (default) or a class index")
    ex.add_argument("--layer", help="layer name for methods that take one")
    ex.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a method parameter, repeatable; METHOD.KEY=VALUE sets it for one method only")
    ex.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    ex.add_argument("--seed", type=int, default=0, help="seed for random initialisation and random methods")
    ex.add_argument("--out", default="sensiscope-out", help="folder for the .npy, .png and .json results")
    ex.add_argument("--json", action="store_true", help="print the JSON records to stdout and nothing else")
    from .cli_images import add_parsers as add_image_parsers
    from .cli_tabular import add_parsers

    add_parsers(commands)
    add_image_parsers(commands)
    pre = ex.add_argument_group("preprocessing (defaults come from the weights or ImageNet)")
    pre.add_argument("--resize", type=_size, default=argparse.SUPPRESS, help="shorter side in pixels, or none")
    pre.add_argument("--crop", type=_size, default=argparse.SUPPRESS, help="centre crop size, or none")
    pre.add_argument("--mean", type=_floats, default=argparse.SUPPRESS, help="per-channel mean, e.g. 0.5,0.5,0.5")
    pre.add_argument("--std", type=_floats, default=argparse.SUPPRESS, help="per-channel std")
    pre.add_argument("--channels", type=int, choices=(1, 3), default=argparse.SUPPRESS, help="channels the model takes")
    return parser


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _emit(data, as_json: bool, text: str) -> None:
    if as_json:
        json.dump(data, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        print(text)


def cmd_info(args) -> int:
    from . import available_methods, classification_models, find_cached_weights, list_devices, versions
    from .device import select_device

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
        from .models import load_model
        from .summary import summarize

        loaded = load_model(args.model, args.weights, trust=args.trust)
        pre = loaded.preprocess
        size = pre.crop or pre.resize or 224
        layers = summarize(loaded.module, (pre.channels, size, size))
        data["model"] = loaded.to_dict() | {"layers": [layer.to_dict() for layer in layers]}
        lines.append(f"model {loaded.spec}: {loaded.source}")
        for layer in layers:
            shape = "x".join(map(str, layer.output_shape)) if layer.output_shape else "-"
            lines.append(f"  {'  ' * layer.depth}{layer.name or '(model)'}  {layer.type}  {shape}  {layer.parameters} params")
    _emit(data, args.json, "\n".join(lines))
    return 0


def _preprocess_overrides(args) -> dict:
    return {name: getattr(args, name) for name in ("resize", "crop", "mean", "std", "channels") if hasattr(args, name)}


def _method_params(method_names: list[str], assignments: dict[str, str], layer: str | None) -> dict:
    """Parameter objects per method. KEY=VALUE goes to every method that has KEY (and must fit at
    least one); METHOD.KEY=VALUE to that method only; --layer to every method with a layer."""
    from .methods import get_method
    from .params import build_params

    specs = {name: get_method(name) for name in method_names}
    fields = {name: {f.name for f in dataclasses.fields(spec.params_cls)} for name, spec in specs.items()}
    values: dict[str, dict] = {name: {} for name in specs}
    for key, value in assignments.items():
        scope, dot, field = key.rpartition(".")
        if dot and scope in specs:
            values[scope][field] = value
        elif dot:
            raise UserError(f"parameter '{key}' is scoped to method '{scope}', which is not among --method {' '.join(specs)}")
        else:
            takers = [name for name in specs if key in fields[name]]
            if not takers:
                raise UserError(f"unknown parameter '{key}' for {', '.join(specs)}; `main.py info` lists each method's parameters")
            for name in takers:
                values[name][key] = value
    if layer is not None:
        takers = [name for name in specs if "layer" in fields[name]]
        if not takers:
            raise UserError(f"method {', '.join(specs)} takes no layer")
        for name in takers:
            values[name].setdefault("layer", layer)
    return {name: build_params(spec.params_cls, values[name]) for name, spec in specs.items()}


def cmd_explain(args) -> int:
    from .api import explain
    from .compare import pairwise_agreement
    from .data import load_input, scan_inputs
    from .device import select_device
    from .models import load_model
    from .output import write_comparison, write_result
    from .params import parse_assignments

    method_names = list(dict.fromkeys(args.method or ["saliency"]))
    params = _method_params(method_names, parse_assignments(args.param), args.layer)
    if args.compare and len(method_names) < 2:
        raise UserError("--compare needs at least two methods, e.g. --method gradcam local")
    if not 0 < args.compare_top <= 100:
        raise UserError(f"--compare-top must be a percentage in (0, 100], not {args.compare_top}")
    device = select_device(args.device)
    from .demos import resolve_image_data

    scan = scan_inputs(resolve_image_data(args.input))
    loaded = load_model(args.model, args.weights, args.labels, trust=args.trust, seed=args.seed, num_classes=args.num_classes, allow_download=args.allow_download)
    overrides = _preprocess_overrides(args)
    if overrides:
        from .preprocess import Preprocess

        loaded.preprocess = Preprocess(**(loaded.preprocess.to_dict() | overrides))
    for note in loaded.notes:
        _log(f"note: {note}")
    loaded.module.to(device)
    out = Path(args.out)
    records, failures = [], list(scan.skipped)
    for path, reason in scan.skipped:
        _log(f"skipped {path}: {reason}")
    total = len(scan.items)
    context = {"model": args.model, "weights": args.weights}
    for index, item in enumerate(scan.items, start=1):
        try:
            tensor, display = load_input(item, loaded.preprocess)
            results = [explain(loaded, tensor, name, args.target, params[name], seed=args.seed) for name in method_names]
        except UserError as exc:
            if scan.layout == "file":
                raise
            failures.append((item.path, str(exc)))
            _log(f"skipped {item.path}: {exc}")
            continue
        item_records = [write_result(result, display, out, item, loaded, context=context | {"input": str(item.path)}) for result in results]
        if args.compare:
            comparisons = pairwise_agreement({r.method: r.map for r in results}, args.compare_top)
            compare_file = write_comparison(comparisons, out, item, context | {"input": str(item.path), "top_percent": args.compare_top})
            for record in item_records:
                record["compare_file"] = compare_file
        records += item_records
        first = results[0]
        timings = ", ".join(f"{r.method} {r.elapsed_s:.3f} s" for r in results)
        _log(f"[{index}/{total}] {item.path}: predicted {loaded.label(first.predicted)} ({first.probability:.3f}); {timings}")
    if not records:
        raise UserError(f"no input could be explained ({len(failures)} skipped)")
    if args.json:
        json.dump(records, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    elif failures:
        _log(f"{total - len(failures) + len(scan.skipped)} explained, {len(failures)} skipped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run a headless command; returns the exit status."""
    try:
        args = build_parser().parse_args(argv)
        if args.version:
            from .versions import app_version

            print(f"Sensiscope {app_version()}")
            return 0
        if args.self_check:
            from .selfcheck import self_check

            return self_check()
        if args.command == "info":
            return cmd_info(args)
        if args.command == "explain":
            return cmd_explain(args)
        from .cli_images import COMMANDS as IMAGE_COMMANDS
        from .cli_tabular import COMMANDS

        if args.command in COMMANDS:
            return COMMANDS[args.command](args)
        if args.command in IMAGE_COMMANDS:
            return IMAGE_COMMANDS[args.command](args)
        raise UserError("no command given; use info, explain, train, sobol, reduce, phantom, train-images or evaluate (or no arguments for the GUI)")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Cancelled:
        print("cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
