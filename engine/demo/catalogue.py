"""The embedded demos: what they are called (``demo:NAME``), where their files live, how each demo
model is made. Pure data and paths, no torch: the model resolver (engine.models.demo) and the
front-ends all read the catalogue from here, so a ``demo:`` spec is parsed in one place.

``demo:ultrasound`` is a small CNN shipped in resources/models/. ``demo:ultrasound-resnet18`` (the
paper's architecture) is trained on first use and cached in the user's data folder. Demo data are
generated deterministically from the phantom, never downloaded.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from engine.core.errors import UserError
from engine.core.resources import DEMO_TABLES, RESOURCES

PREFIX = "demo:"

# How each demo model is made: `main.py train-images` with these arguments reproduces it.
DEMO_RECIPES = {
    "ultrasound": {"arch": "sonocnn", "n": 900, "size": 128, "epochs": 30, "lr": 3e-3, "batch": 32, "seed": 0},
    "ultrasound-resnet18": {"arch": "resnet18", "n": 900, "size": 128, "epochs": 12, "lr": 1e-3, "batch": 32, "seed": 0},
}
# Demo models that ship with the application (the others are trained on first use).
SHIPPED_MODELS = ("ultrasound",)
# Images for evaluating and browsing come from another seed than the training images.
DEMO_DATA = {"ultrasound": {"n": 60, "size": 128, "seed": 1000}}


def demo_name(spec: str) -> str | None:
    """The NAME of a ``demo:NAME`` spec, or None when ``spec`` is not a demo spec."""
    spec = spec.strip()
    return spec[len(PREFIX):] if spec.startswith(PREFIX) else None


def _known(name: str | None, catalogue, what: str, spec: str) -> str:
    if name not in catalogue:
        raise UserError(f"unknown demo {what} '{spec}'; available: {', '.join(PREFIX + n for n in catalogue)}")
    return name


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


def demo_model_name(spec: str) -> str:
    """The catalogue name of a demo model spec (``demo:ultrasound`` or a bare ``ultrasound``)."""
    name = demo_name(spec)
    return _known(spec.strip() if name is None else name, DEMO_RECIPES, "model", spec)


def recipe_command(name: str, out: str | Path) -> str:
    recipe = DEMO_RECIPES[name]
    return (
        f"python main.py train-images --arch {recipe['arch']} --data demo:ultrasound --n {recipe['n']} --size {recipe['size']} "
        f"--epochs {recipe['epochs']} --lr {recipe['lr']} --batch {recipe['batch']} --seed {recipe['seed']} --out {out}"
    )


def demo_data_dir(name: str = "ultrasound") -> Path:
    """A folder with the demo's evaluation images and masks (an ImageFolder), written on first use."""
    from engine.demo.phantom import PHANTOM_VERSION, write_imagefolder  # numpy and scipy only when demo data is asked for

    _known(name, DEMO_DATA, "data", PREFIX + name)
    settings = DEMO_DATA[name]
    folder = user_data_dir() / "data" / f"{name}-v{PHANTOM_VERSION}-n{settings['n']}-s{settings['size']}-seed{settings['seed']}"
    if not (folder / "phantom.json").is_file():
        write_imagefolder(folder, n=settings["n"], size=settings["size"], seed=settings["seed"])
    return folder


def resolve_image_data(spec: str) -> Path:
    """A folder or image path, or ``demo:ultrasound`` for the demo's evaluation images."""
    name = demo_name(spec)
    return Path(spec) if name is None else demo_data_dir(name)


def resolve_table(spec: str) -> Path:
    """A CSV path, or ``demo:pima`` for the embedded Pima Indians diabetes table."""
    name = demo_name(spec)
    if name is None:
        return Path(spec)
    path = DEMO_TABLES[_known(name, DEMO_TABLES, "table", spec)]
    if not path.is_file():
        raise UserError(f"the demo table {path} is missing from this installation")
    return path
