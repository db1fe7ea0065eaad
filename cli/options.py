"""One argparse option group per request type, shared by every command that takes a model, so
``info``, ``explain``, ``batch`` and ``evaluate`` accept the same model, preprocessing, target and
layer options, and each turns them into the same request objects."""

from __future__ import annotations

import argparse
import math

from engine.core.requests import MAX_SIDE, NO_SIZE, ModelSpec, PreprocessOptions, TargetSpec
from engine.core.vocab import MAX_CLASSES

MODEL_HELP = (
    "the model: a torchvision architecture (resnet18), arch:WEIGHTS from the hub cache, demo:ultrasound, timm:NAME, hf:DIR, "
    "a model file (.onnx, .pt2 from torch.export, TorchScript, a trusted pickle), or your own class as path/to/net.py:ClassName "
    "or package.module:ClassName (that file is run to build the model, as running your script would)"
)


def _whole(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is outside {low} to {high}")
        return value

    return parse


def _size(text: str) -> int:
    if text.strip().lower() in ("none", "0", ""):
        return NO_SIZE
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a size is a number of pixels from 1 to {MAX_SIDE}, or 'none' (or 0) to skip the step; not '{text}'") from None
    if not 1 <= value <= MAX_SIDE:
        raise argparse.ArgumentTypeError(f"a size is a number of pixels from 1 to {MAX_SIDE}, or 'none' (or 0) to skip the step; not {value}")
    return value


def _floats(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a comma-separated list of numbers") from None
    if not all(math.isfinite(v) for v in values):
        raise argparse.ArgumentTypeError(f"'{text}' holds a value that is not a finite number")
    return values


def _target(text: str) -> TargetSpec:
    from engine.core.errors import UserError

    try:
        return TargetSpec.parse(text)
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_model_options(parser, *, required: bool = True) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--model", required=required, help=MODEL_HELP)
    group.add_argument(
        "--weights",
        help="weights for an architecture or your class: a state dict or checkpoint (.pt/.pth, read with weights_only=True) or .safetensors; "
        "or torchvision weights (DEFAULT, IMAGENET1K_V1) in the hub cache",
    )
    group.add_argument("--model-args", metavar="JSON", help="constructor arguments of your class, e.g. '{\"classes\": 4}' (default: the sidecar's model_args)")
    group.add_argument("--labels", help="class names: one per line, or JSON")
    group.add_argument("--trust", action="store_true", help="allow unpickling a whole-model file (it can run arbitrary code)")
    group.add_argument("--num-classes", type=_whole(1, MAX_CLASSES), help="output classes of a randomly initialised architecture")
    group.add_argument("--allow-download", action="store_true", help="allow torchvision to download named weights that are not cached")


def add_preprocess_options(parser) -> None:
    group = parser.add_argument_group("preprocessing (default: what the weights' sidecar or the model states, else ImageNet's)")
    group.add_argument("--resize", type=_size, help="shorter side in pixels, or none (0 also means none)")
    group.add_argument("--crop", type=_size, help="centre crop size, no larger than --resize, or none (0 also means none)")
    group.add_argument("--mean", type=_floats, help="per-channel mean, e.g. 0.5 or 0.485,0.456,0.406")
    group.add_argument("--std", type=_floats, help="per-channel std")
    group.add_argument("--channels", type=int, choices=(1, 3), help="channels the model takes: images are converted (RGB to grey by luma, grey repeated to RGB)")


def add_target_option(parser) -> None:
    parser.add_argument("--target", type=_target, default=TargetSpec(), help="what to explain: 'pred' (each image's predicted class, the default), a class index, or a class name")


def add_layer_option(parser) -> None:
    parser.add_argument("--layer", help="layer for the methods that take one, by its dotted name (see `main.py info --model ...`), e.g. layer4 or body.2.conv")


def add_run_options(parser) -> None:
    """How a run computes, never what: the same maps whatever they are (up to float rounding)."""
    group = parser.add_argument_group("run settings (how the batched methods compute; the maps do not depend on them)")
    group.add_argument("--batch-size", type=_whole(0, 1_000_000), default=0, metavar="N",
                       help="inputs a method evaluates at once (perturbed images, masks, path points); 0 = measured: the batch grows while it pays (default)")  # fmt: skip
    group.add_argument("--memory-budget", type=_whole(0, 2**30), default=0, metavar="MB",
                       help="memory a batch may use, in MiB; 0 = a quarter of the available RAM on a CPU, 80%% of free GPU memory (default)")  # fmt: skip


def run_settings(args) -> dict[str, int]:
    """The run settings of the options of :func:`add_run_options`, as ``explain`` takes them."""
    return {"batch_size": getattr(args, "batch_size", 0) or 0, "memory_budget_mb": getattr(args, "memory_budget", 0) or 0}


def add_all(parser, *, model_required: bool = True, target: bool = True, layer: bool = True) -> None:
    """The model, preprocessing, target and layer options, in that order."""
    add_model_options(parser, required=model_required)
    add_preprocess_options(parser)
    if target:
        add_target_option(parser)
    if layer:
        add_layer_option(parser)


def preprocess_options(args) -> PreprocessOptions:
    return PreprocessOptions(**{name: getattr(args, name, None) for name in ("resize", "crop", "mean", "std", "channels")})


def model_spec(args) -> ModelSpec:
    """The ModelSpec the model and preprocessing options describe (checked: one line if not)."""
    from engine.app.models import parse_model_args

    return ModelSpec(
        args.model,
        args.weights,
        args.labels,
        bool(args.trust),
        parse_model_args(args.model_args),
        getattr(args, "num_classes", None),
        bool(getattr(args, "allow_download", False)),
        int(getattr(args, "seed", 0) or 0),
        preprocess_options(args),
    )
