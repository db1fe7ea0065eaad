"""Command-line sub-commands for image models: train-images, evaluate."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

from cli._common import _log, _progress_printer, _ProgressBar, integer, number, seed
from cli.batch import add_run_arguments, build_job, data_items, method_list, note_colour, ray_options, report_failures
from cli.options import add_layer_option, add_model_options, add_preprocess_options, add_target_option
from engine.core.errors import UserError
from engine.core.jsonable import dumps


def add_parsers(commands) -> None:
    train = commands.add_parser("train-images", help="train or fine-tune an image classifier on an ImageFolder or the ultrasound phantom")
    train.add_argument("--arch", default="sonocnn", help="sonocnn (the small demo CNN) or a torchvision architecture (resnet18, vgg16, ...)")
    train.add_argument("--data", required=True, help="an ImageFolder (class sub-folders), or demo:ultrasound to train on generated phantom images")
    train.add_argument("--n", type=integer(3, 1_000_000), default=900, help="with demo:ultrasound: how many phantom images (classes in turn)")
    train.add_argument("--size", type=integer(8, 2048), default=128, help="images are resized and centre-cropped to size x size")
    train.add_argument("--epochs", type=integer(1, 100_000), default=30)
    train.add_argument("--lr", type=number(0, 10, low_open=True), default=3e-3, help="peak learning rate (one-cycle schedule)")
    train.add_argument("--batch", type=integer(1, 65536), default=32)
    train.add_argument("--seed", type=seed, default=0, help="seed for the split, the initialisation, the augmentation and the phantom")
    train.add_argument("--no-augment", action="store_true", help="train without flips, shifts and gain changes")
    train.add_argument("--device", default="auto")
    train.add_argument("--out", required=True, help="OUT.safetensors and OUT.json (architecture, classes, preprocessing) are written")
    train.add_argument("--overwrite", action="store_true", help="replace model files that Sensiscope did not write (refused otherwise)")
    train.add_argument("--json", action="store_true", help="print a JSON result to stdout and nothing else")

    ev = commands.add_parser("evaluate", help="score explanation methods on images with masks: localisation, faithfulness, sanity, time")
    add_model_options(ev)
    add_preprocess_options(ev)
    ev.add_argument("--data", required=True, help="an ImageFolder with NAME_mask.png beside the images, or demo:ultrasound")
    ev.add_argument("--methods", default="gradcam,local,actmax,pertmap", help="comma-separated methods (default: gradcam,local,actmax,pertmap)")
    add_target_option(ev)
    add_layer_option(ev)
    ev.add_argument("--param", action="append", default=[], metavar="[METHOD.]KEY=VALUE", help="method parameter, repeatable (as for explain)")
    ev.add_argument("--n", type=integer(1, 1_000_000), default=12, help="how many images (taken in turn from each class)")
    ev.add_argument("--steps", type=integer(2, 10_000), default=50, help="steps of the deletion and insertion curves")
    ev.add_argument("--baseline", choices=("blur", "zero"), default="blur", help="what deleted pixels become")
    ev.add_argument("--sanity-images", type=integer(0, 1_000_000), default=1, help="images on which the model-randomisation check runs (0 = skip)")
    ev.add_argument("--seed", type=seed, default=0)
    ev.add_argument("--device", default="auto")
    ev.add_argument("--out", help="folder for evaluation.csv, curves.png and evaluation.json")
    add_run_arguments(ev, store_required=False)
    ev.add_argument("--json", action="store_true", help="print the JSON report to stdout and nothing else")


def cmd_train_images(args) -> int:
    from engine.app.data import demo_name
    from engine.app.models import ImageTrainConfig, check_image_model_output, classification_models, folder_dataset, phantom_dataset, train_image_model

    config = ImageTrainConfig(arch=args.arch, size=args.size, epochs=args.epochs, lr=args.lr, batch=args.batch, seed=args.seed, augment=not args.no_augment)
    check_image_model_output(args.out, args.overwrite)  # before training, not after
    if args.arch not in classification_models():
        raise UserError(f"unknown architecture '{args.arch}'; `main.py info` lists them")
    demo = demo_name(args.data)
    if demo == "ultrasound":
        if args.n < 30:
            raise UserError("--n must be at least 30 to train on the phantom")
        dataset = phantom_dataset(args.n, args.size, args.seed)
    elif demo is not None:
        raise UserError(f"unknown demo data '{args.data}'; use demo:ultrasound or an ImageFolder")
    else:
        dataset = folder_dataset(args.data, args.size)
    for path, reason in dataset.skipped:
        _log(f"skipped {path}: {reason}")
    result = train_image_model(dataset, config, device=args.device, progress=None if args.json else _progress_printer())
    if not args.json:
        print(file=sys.stderr)
    weights, sidecar = result.save(args.out, args.overwrite)
    summary = {
        "model": str(weights),
        "metadata": str(sidecar),
        "arch": args.arch,
        "classes": result.classes,
        "data": result.source,
        "metrics": result.metrics,
        "elapsed_s": result.elapsed_s,
        "epochs_run": len(result.history["train_loss"]),
    }
    if args.json:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    metrics = result.metrics
    print(f"{args.arch} on {result.source}: test accuracy {metrics['accuracy']:.3f} (balanced {metrics['balanced_accuracy']:.3f}) on {metrics['n_test']} images, {result.elapsed_s:.0f} s")
    print("confusion matrix (rows: true " + ", ".join(result.classes) + "):")
    for name, row in zip(result.classes, metrics["confusion_matrix"], strict=True):
        print(f"  {name:<10} {row}")
    print(f"saved {weights} and {sidecar}")
    return 0


def cmd_evaluate(args) -> int:
    """One pipeline: the pairs run into a result store (--store, resumable; in memory otherwise)
    and the report is read from it."""
    from engine.app.runs import evaluate_dataset
    from engine.app.system import select_device
    from engine.core.files import check_output_folder

    if args.out:
        check_output_folder(args.out)  # before the work, not after it
    if args.resume and not args.store:
        raise UserError("--resume needs --store (the store to continue)")
    methods = method_list(args.methods)
    job, loaded = build_job(args, methods)
    loaded.module.to(select_device(args.device))
    folder, items = data_items(args.data, args.n)
    note_colour(items, loaded)
    with _ProgressBar("pairs", quiet=args.json) as progress:
        report, summary = evaluate_dataset(
            job, items, loaded=loaded if args.backend == "local" else None, store=args.store, data=str(Path(folder).resolve()), resume=args.resume,
            backend=args.backend, ray=ray_options(args), map_dtype=args.map_dtype, limit=args.max_pairs, retry_failed=args.retry_failed, repair=args.repair,
            sanity_images=args.sanity_images, progress=progress,
        )
    report_failures(summary)
    if not summary.complete:
        _log(f"{summary.store}: stopped after {summary.computed} pairs; the report covers the pairs stored so far (continue with --resume)")
    data = report.to_dict()
    if args.out:
        data["files"] = write_evaluation_files(report, args.out)
    if args.json:
        sys.stdout.write(dumps(data))
        sys.stdout.write("\n")
        return 0
    print(format_table(report))
    return 0


def _cell(stat: dict, digits: int = 2) -> str:
    if stat["mean"] is None:
        return "-"
    if stat.get("ci_low") is None:
        return f"{stat['mean']:.{digits}f}"
    return f"{stat['mean']:.{digits}f} [{stat['ci_low']:.{digits}f}, {stat['ci_high']:.{digits}f}]"


_COLUMNS = (
    ("pointing", "pointing"),
    ("energy", "energy in mask"),
    ("iou", "IoU top-q"),
    ("deletion_auc", "deletion AUC"),
    ("insertion_auc", "insertion AUC"),
    ("road_morf", "ROAD MoRF"),
    ("road_lerf", "ROAD LeRF"),
    ("stability", "stability"),
    ("time_s", "s / image"),
)


def format_table(report) -> str:
    accuracy = "n/a" if report.accuracy is None else f"{report.accuracy:.3f}"
    lines = [f"model {report.model}: accuracy {accuracy} on {report.n_images} images ({report.elapsed_s:.0f} s in all)", ""]
    stats = {summary.method: summary.stats() for summary in report.methods}
    shown = [(key, title) for key, title in _COLUMNS if any(s[key]["n"] for s in stats.values())]
    width = max([12] + [len(summary.method) + 1 for summary in report.methods])
    header = f"{'method':<{width}}" + "".join(f" {title:>21}" for _, title in shown) + "  sanity check"
    lines += [header, "-" * len(header)]
    for summary in report.methods:
        cells = "".join(f" {_cell(stats[summary.method][key]):>21}" for key, _ in shown)
        lines.append(f"{summary.method:<{width}}{cells}  {summary.sanity_verdict()}")
    lines += [
        "",
        "mean [bootstrap 95% interval]. pointing, energy and IoU on images with a lesion (higher is better); deletion AUC and ROAD MoRF lower is better, insertion AUC and ROAD LeRF higher is better;",
        "stability (methods run with repeats >= 2) is the Spearman correlation of a map's runs.",
    ]
    comparisons = [c for c in report.comparisons() if c.metric != "time_s"]
    if comparisons:
        lines += ["", "paired differences on the same images (Wilcoxon signed-rank, Holm-corrected within each metric; * = holds at 0.05):"]
        for c in comparisons:
            p = "-" if c.p_holm is None else f"{c.p_holm:.3g}"
            verdict = f"* {c.better} better" if c.holds and c.better else ("*" if c.holds else "")
            lines.append(f"  {c.metric:<14}{c.a + ' - ' + c.b:<28} n={c.n:<5} mean diff {c.mean_difference:+.3f}  p(Holm) {p:<8} {verdict}")
    return "\n".join(lines)


def write_evaluation_files(report, out_dir) -> dict[str, str]:
    import numpy as np

    from engine.app.tabular import pyplot as _pyplot
    from engine.app.tabular import save_figure
    from engine.core.csvsafe import safe_row
    from engine.core.files import atomic_path, write_text

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        files = {"table_csv": str(out / "evaluation.csv"), "curves_png": str(out / "curves.png"), "report_json": str(out / "evaluation.json")}
        with atomic_path(files["table_csv"]) as temporary, open(temporary, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            names = [key for key, _ in _COLUMNS]
            parts = ("mean", "std", "ci_low", "ci_high")
            writer.writerow(safe_row(["method", *[f"{n}_{s}" for n in names for s in parts], "sanity"]))
            for summary in report.methods:
                stats = summary.stats()
                writer.writerow(safe_row([summary.method, *["" if stats[n][s] is None else f"{stats[n][s]:.6f}" for n in names for s in parts], summary.sanity_verdict()]))
        write_text(files["report_json"], dumps(report.to_dict()))
        plt = _pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
        for summary in report.methods:
            if summary.fractions is None:
                continue
            axes[0].plot(summary.fractions, np.mean(summary.deletion_curves, axis=0), label=summary.method)
            axes[1].plot(summary.fractions, np.mean(summary.insertion_curves, axis=0), label=summary.method)
        for ax, title in zip(axes, ("deletion (lower is better)", "insertion (higher is better)"), strict=True):
            ax.set_title(title)
            ax.set_xlabel("fraction of pixels")
            ax.set_ylabel("probability of the target")
            ax.legend(fontsize=8)
        fig.tight_layout()
        save_figure(fig, files["curves_png"])
        plt.close(fig)
    except OSError as exc:
        raise UserError(f"cannot write the evaluation to {out}: {exc}") from None
    return files


COMMANDS = {"train-images": cmd_train_images, "evaluate": cmd_evaluate}
