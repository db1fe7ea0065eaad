"""The ``phantom`` command: write a synthetic ultrasound set as an ImageFolder with masks."""

from __future__ import annotations

from cli._common import integer, seed
from engine.app.data import PHANTOM_CLASSES as CLASSES
from engine.app.data import PHANTOM_MAX_SIZE as MAX_SIZE
from engine.app.data import PHANTOM_MIN_SIZE as MIN_SIZE
from engine.app.data import write_imagefolder
from engine.core.errors import UserError
from engine.core.files import check_output_folder


def add_parsers(commands) -> None:
    """Add the ``phantom`` sub-command to an argparse sub-parsers object."""
    parser = commands.add_parser("phantom", help="write a synthetic breast-ultrasound set (normal, benign, malignant) as an ImageFolder with masks")
    parser.add_argument("--out", required=True, help="folder for OUT/normal, OUT/benign, OUT/malignant (NAME.png and NAME_mask.png)")
    parser.add_argument("--n", type=integer(1, 1_000_000), default=300, help="number of images, classes in turn (default 300: 100 per class)")
    parser.add_argument("--size", type=int, default=128, help=f"image height and width in pixels ({MIN_SIZE}-{MAX_SIZE}, default 128)")
    parser.add_argument("--seed", type=seed, default=0, help="seed; image i depends only on (seed, i, size)")


def cmd_phantom(args) -> int:
    if args.n < len(CLASSES):
        raise UserError(f"--n must be at least {len(CLASSES)} (one image per class), got {args.n}")
    if not MIN_SIZE <= args.size <= MAX_SIZE:
        raise UserError(f"--size must be from {MIN_SIZE} to {MAX_SIZE} pixels, got {args.size}")
    if args.seed < 0:
        raise UserError(f"--seed must be a non-negative integer, got {args.seed}")
    check_output_folder(args.out)  # before the work, not after it
    counts = write_imagefolder(args.out, args.n, args.size, args.seed)
    per_class = ", ".join(f"{counts[name]} {name}" for name in CLASSES)
    print(f"wrote {sum(counts.values())} phantom images ({per_class}), {args.size} x {args.size}, seed {args.seed}, with masks, to {args.out}")
    return 0


COMMANDS = {"phantom": cmd_phantom}
