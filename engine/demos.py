"""The embedded demos: the ultrasound phantom data and the models trained on it.

``demo:ultrasound`` is a small CNN shipped in resources/models/. ``demo:ultrasound-resnet18`` (the
paper's architecture) is trained on first use by the same command and cached in the user's data
folder. Demo data are generated deterministically from the phantom, never downloaded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from .errors import UserError
from .resources import RESOURCES

# How each demo model is made: `main.py train-images` with these arguments reproduces it.
DEMO_RECIPES = {
    "ultrasound": {"arch": "sonocnn", "n": 900, "size": 128, "epochs": 30, "lr": 3e-3, "batch": 32, "seed": 0},
    "ultrasound-resnet18": {"arch": "resnet18", "n": 900, "size": 128, "epochs": 12, "lr": 1e-3, "batch": 32, "seed": 0},
}
# Images for evaluating and browsing come from another seed than the training images.
DEMO_DATA = {"ultrasound": {"n": 60, "size": 128, "seed": 1000}}


def user_data_dir() -> Path:
    """Per-user data folder: $SENSISCOPE_DATA, else the platform's usual place."""
    if os.environ.get("SENSISCOPE_DATA"):
        return Path(os.environ["SENSISCOPE_DATA"])
    if sys.platform == "win32":
        return Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local")) / "Sensiscope"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "Sensiscope"
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "sensiscope"


def shipped_model(name: str) -> Path:
    return RESOURCES / "models" / f"{name}.safetensors"


def cached_model(name: str) -> Path:
    return user_data_dir() / "models" / f"{name}.safetensors"


def recipe_command(name: str, out: str | Path) -> str:
    recipe = DEMO_RECIPES[name]
    return (
        f"python main.py train-images --arch {recipe['arch']} --data demo:ultrasound --n {recipe['n']} --size {recipe['size']} "
        f"--epochs {recipe['epochs']} --lr {recipe['lr']} --batch {recipe['batch']} --seed {recipe['seed']} --out {out}"
    )


def demo_model_file(spec: str, progress=None) -> Path:
    """The weights file of a demo model; the cached ones are trained here on first use."""
    name = spec[len("demo:"):] if spec.startswith("demo:") else spec
    if name not in DEMO_RECIPES:
        raise UserError(f"unknown demo model '{spec}'; available: {', '.join('demo:' + n for n in DEMO_RECIPES)}")
    shipped = shipped_model(name)
    if shipped.is_file():
        return shipped
    cached = cached_model(name)
    if cached.is_file():
        return cached
    if name == "ultrasound":
        raise UserError(f"the demo model {shipped} is missing from this installation; rebuild it with: {recipe_command(name, shipped)}")
    from .imagetrain import train_demo_model

    report = progress or (lambda fraction, message: print(f"\r[{fraction:4.0%}] {message}".ljust(70), end="", file=sys.stderr, flush=True))
    print(f"{spec} is not cached yet; training it once (same as: {recipe_command(name, cached)})", file=sys.stderr)
    train_demo_model(name, cached, progress=report)
    print(file=sys.stderr)
    return cached


def demo_data_dir(name: str = "ultrasound") -> Path:
    """A folder with the demo's evaluation images and masks (an ImageFolder), written on first use."""
    if name not in DEMO_DATA:
        raise UserError(f"unknown demo data 'demo:{name}'; available: {', '.join('demo:' + n for n in DEMO_DATA)}")
    from .phantom import PHANTOM_VERSION, write_imagefolder

    settings = DEMO_DATA[name]
    folder = user_data_dir() / "data" / f"{name}-v{PHANTOM_VERSION}-n{settings['n']}-s{settings['size']}-seed{settings['seed']}"
    if not (folder / "phantom.json").is_file():
        write_imagefolder(folder, n=settings["n"], size=settings["size"], seed=settings["seed"])
    return folder


def resolve_image_data(spec: str) -> Path:
    """A folder or image path, or ``demo:ultrasound`` for the demo's evaluation images."""
    if spec.startswith("demo:"):
        return demo_data_dir(spec[len("demo:"):])
    return Path(spec)
