"""Reading a ``.pt2`` archive safely: what it holds is checked before ``torch.export.load``
touches it (see engine.models.exported for why), its input signature and training mode are read
from the program."""

from __future__ import annotations

import io
import json
import logging
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils import _pytree as pytree

from engine.core.errors import UntrustedFile, UserError

_ONE_TENSOR = pytree.tree_structure(((0,), {}))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# --- the archive, before anything in it is unpickled ---------------------------------------------


def _untrusted(path: Path, what: str) -> UntrustedFile:
    return UntrustedFile(
        path,
        f"{path}: refused to load: the program holds pickled Python objects ({what}); unpickling them could run "
        "arbitrary code. If you made this file yourself or trust its author, pass --trust (GUI: confirm the warning)",
    )


def _refuses_weights_only(data: bytes) -> bool:
    """Whether ``torch.load(weights_only=True)`` fails on ``data`` (torch then retries without it)."""
    if not data:
        return False
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:  # any failure sends torch.export.load to an unrestricted unpickling
        return True
    return False


def _check_archive(path: Path, trust: bool) -> None:
    """Refuse, with one line, a file that is not a ``torch.export.save`` archive, an AOTInductor
    package, and (unless trusted) one whose loading would unpickle Python objects."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if not n.endswith("/")]
            roots = {n.split("/", 1)[0] for n in names}
            if len(roots) != 1 or not all("/" in n for n in names):
                raise UserError(f"{path}: not a torch.export program (a .pt2 written by torch.export.save)")
            root = roots.pop() + "/"
            members = {n[len(root) :]: n for n in names}

            def read(name: str) -> bytes:
                return archive.read(members[name])

            if "archive_format" not in members:
                if "data.pkl" in members:
                    raise UserError(f"{path}: was written by torch.save, not torch.export.save; give a weights file with --weights and the architecture, or export the model")
                if "constants.pkl" in members or any(m.startswith("code/") for m in members):
                    raise UserError(f"{path}: is a TorchScript archive, not a torch.export program; rename it to .pt to load it as TorchScript")
                if "serialized_exported_program.json" in members:
                    if not trust:
                        raise _untrusted(path, "the pre-2.8 torch.export format pickles its weights")
                    return
                raise UserError(f"{path}: not a torch.export program (a .pt2 written by torch.export.save)")
            if read("archive_format").decode(errors="replace").strip() != "pt2":
                raise UserError(f"{path}: not a torch.export program (a .pt2 written by torch.export.save)")
            if any(m.startswith("data/aotinductor/") for m in members):
                raise UserError(f"{path}: is an AOTInductor package (compiled code); Sensiscope explains programs written by torch.export.save")
            if "models/model.json" not in members:
                raise UserError(f"{path}: holds no exported program named 'model' (torch.export.save writes one)")
            if trust:
                return
            for legacy in ("data/weights/model.pt", "data/constants/model.pt", "data/sample_inputs/model.pt"):
                if legacy in members and _refuses_weights_only(read(legacy)):
                    raise _untrusted(path, legacy.split("/")[1].replace("_", " ") + " that only a full unpickling can read")
            for config_name in ("data/weights/model_weights_config.json", "data/constants/model_constants_config.json"):
                if config_name not in members:
                    continue
                config = json.loads(read(config_name)).get("config", {})
                for fqn, entry in config.items():
                    name = str(entry.get("path_name", ""))
                    if entry.get("use_pickle") or name.startswith(("custom_obj_", "opaque_obj_")):
                        raise _untrusted(path, f"'{fqn}' is stored as a pickle")
    except UserError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, KeyError, ValueError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not a readable .pt2 archive, it may be truncated or corrupt ({_first_line(exc)})") from None


def _read_program(path: Path) -> torch.export.ExportedProgram:
    logger = logging.getLogger("torch.export")
    level = logger.level
    logger.setLevel(logging.CRITICAL)  # torch logs a traceback before its own fallbacks
    try:
        program = torch.export.load(str(path))
    except Exception as exc:  # zip, JSON, schema-version and deserialisation errors of every kind
        raise UserError(f"{path}: not a loadable torch.export program ({_first_line(exc)})") from None
    finally:
        logger.setLevel(level)
    if not isinstance(program, torch.export.ExportedProgram):
        raise UserError(f"{path}: holds a {type(program).__name__}, not an ExportedProgram")
    return program


# --- what the program takes and gives --------------------------------------------------------------


@dataclass(frozen=True)
class _Signature:
    """The program's one image input: its example shape (None where a dimension is dynamic), the
    batch sizes it runs (``high`` None: unbounded), its dtype, and its output's class count."""

    shape: tuple[int | None, ...]
    low: int
    high: int | None
    dtype: torch.dtype
    classes: int | None

    def runs(self, batch: int) -> bool:
        return self.low <= batch and (self.high is None or batch <= self.high)

    def slice_size(self, batch: int) -> int:
        return self.low if batch < self.low else int(self.high)

    def describe(self) -> str:
        size = " x ".join("?" if d is None else str(d) for d in self.shape[1:])
        if self.high == self.low:
            return f"input {size}, batch {self.low}"
        return f"input {size}, batch {self.low} to {self.high or 'any'}"


def _bound(value) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if math.isfinite(number) else None


def _signature(program: torch.export.ExportedProgram, path: Path) -> _Signature:
    user_inputs = set(program.graph_signature.user_inputs)
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in user_inputs]
    if len(placeholders) != 1:
        raise UserError(f"{path}: the program takes {len(placeholders)} inputs; Sensiscope explains models with one image input")
    if program.module_call_graph[0].signature.in_spec != _ONE_TENSOR:
        raise UserError(f"{path}: the program takes its input as a keyword or in a container; export it as model(x) with one positional tensor")
    value = placeholders[0].meta.get("val")
    if not isinstance(value, torch.Tensor) or value.ndim != 4:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise UserError(f"{path}: the program's input has shape {shape}; an image model takes N x C x H x W")
    if not value.is_floating_point():
        raise UserError(f"{path}: the program's input is {value.dtype}; Sensiscope feeds floating-point images")
    shape = tuple(d if isinstance(d, int) else None for d in value.shape)
    batch = value.shape[0]
    if isinstance(batch, int):
        low = high = batch
    else:
        ranges = program.range_constraints.get(batch.node.expr)
        low = _bound(ranges.lower) or 1 if ranges is not None else 1
        low = low if low > 2 else 1  # torch lets a dynamic dimension be 0 or 1 whatever its range
        high = _bound(ranges.upper) if ranges is not None else None
    outputs = [n for n in program.graph.nodes if n.op == "output"][0].args[0]
    first = outputs[0].meta.get("val") if outputs and isinstance(outputs[0], torch.fx.Node) else None
    classes = first.shape[-1] if isinstance(first, torch.Tensor) and first.ndim == 2 else None
    return _Signature(shape, low, high, value.dtype, classes if isinstance(classes, int) else None)


def _training_mode(program: torch.export.ExportedProgram) -> str | None:
    """The first operation that runs in training mode (batch norm on the batch's statistics,
    dropout on), or the buffers the program updates; None for a program exported in eval mode."""
    for node in program.graph.nodes:
        schema = getattr(node.target, "_schema", None)
        if node.op != "call_function" or schema is None:
            continue
        for index, argument in enumerate(schema.arguments):
            if argument.name in ("training", "train"):
                value = node.args[index] if index < len(node.args) else node.kwargs.get(argument.name)
                if value is True:
                    return f"{schema.name.split('::')[-1]} with {argument.name}=True"
    mutated = program.graph_signature.buffers_to_mutate
    return f"it updates {', '.join(sorted(mutated.values()))}" if mutated else None


# --- running a batch in slices of the exported size ---------------------------------------------
