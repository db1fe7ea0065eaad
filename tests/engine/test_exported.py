"""torch.export programs (``.pt2``) as models: loaded with their original layer names, the same maps
as the eager module (Grad-CAM on a named inner layer, gradients, occlusion, guided backpropagation,
Ablation-CAM), batches on a program exported for one image, and one-line refusals of damaged,
foreign or unsafe archives and of programs exported in training mode."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import engine
from engine.core.errors import UntrustedFile, UserError
from engine.methods.runner import explain_many

ROOT = Path(__file__).resolve().parents[2]
SIZE = 32


class Block(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.bn = nn.BatchNorm2d(channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.bn(self.conv(x))) + x


class Net(nn.Module):
    """A grey-scale CNN whose inner convolution is ``body.2.conv``."""

    def __init__(self, classes: int = 5) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), Block(8), nn.MaxPool2d(2))
        self.head = nn.Linear(8, classes)

    def forward(self, x):
        return self.head(self.body(x).mean(dim=(2, 3)))


class TwoInputs(nn.Module):
    def forward(self, x, y):
        return (x + y).flatten(1)


def _net(seed: int = 0) -> Net:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Net()
        bn = model.body[2].bn
        bn.running_mean.uniform_(-0.2, 0.2)
        bn.running_var.uniform_(0.5, 1.5)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def _export(model: nn.Module, path: Path, batch: int = 1, dynamic: bool = False) -> Path:
    shapes = {"x": {0: torch.export.Dim.DYNAMIC}} if dynamic else None
    program = torch.export.export(model, (torch.zeros(batch, 1, SIZE, SIZE),), dynamic_shapes=shapes)
    torch.export.save(program, str(path))
    return path


def _images(count: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(count, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])


def _gradcam(layer: str = "body.2.conv"):
    return engine.get_method("gradcam").params_cls(layer=layer)


@pytest.fixture(scope="module")
def model() -> Net:
    return _net()


@pytest.fixture(scope="module")
def program(model, tmp_path_factory) -> Path:
    """The model exported the default way: static shapes, one image."""
    return _export(model, tmp_path_factory.mktemp("pt2") / "net.pt2")


@pytest.fixture(scope="module")
def loaded(program):
    return engine.load_model(str(program))


def test_loads_with_the_original_layer_names_and_predictions(loaded, model):
    names = dict(loaded.module.named_modules())
    assert {"body", "body.2", "body.2.conv", "body.2.bn", "head"} <= set(names)
    assert loaded.source.startswith("torch.export program net.pt2")
    assert not loaded.module.training
    assert loaded.preprocess.channels == 1 and loaded.preprocess.crop == SIZE  # read from the program's input
    x = _images(1)
    with torch.no_grad():
        assert torch.allclose(loaded.module(x), model(x), atol=1e-5)


def test_gradcam_on_a_named_inner_layer_equals_the_original(loaded, model):
    x = _images(1)[0]
    ours = engine.explain(loaded, x, "gradcam", target=3, params=_gradcam())
    reference = engine.explain(model, x, "gradcam", target=3, params=_gradcam())
    assert reference.map.std() > 0  # a map with structure, so the correlation means something
    assert ours.extras["layer"] == "body.2.conv"
    assert _pearson(ours.map, reference.map) >= 0.999
    assert np.allclose(ours.map, reference.map, rtol=1e-4, atol=1e-6)
    assert (ours.predicted, ours.probability) == pytest.approx((reference.predicted, reference.probability))


def test_hooks_fire_and_gradients_reach_the_input(loaded):
    layer = dict(loaded.module.named_modules())["body.2.conv"]
    seen = []
    handle = layer.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        x = _images(1).requires_grad_(True)
        score = loaded.module(x)[0, 2]
        (to_layer,) = torch.autograd.grad(score, seen[0], retain_graph=True)
        (to_input,) = torch.autograd.grad(score, x)
    finally:
        handle.remove()
    assert len(seen) == 1 and seen[0].shape == (1, 8, SIZE, SIZE)
    assert to_layer.abs().sum() > 0 and to_input.abs().sum() > 0


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("saliency", {}),
        ("local", {"window": 8, "stride": 4}),
        ("guidedbp", {}),
        ("ablationcam", {"layer": "body.2.conv"}),
    ],
)
def test_other_methods_give_the_original_maps(loaded, model, method, params):
    x = _images(1, seed=2)[0]
    ours = engine.explain(loaded, x, method, target=1, params=params)
    reference = engine.explain(model, x, method, target=1, params=params)
    assert reference.map.std() > 0
    assert np.allclose(ours.map, reference.map, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", ["gradcam", "saliency"])
def test_a_batch_runs_on_a_program_exported_for_one_image(loaded, model, method):
    images, targets = _images(5, seed=3), [0, 1, 2, 3, 4]
    params = _gradcam() if method == "gradcam" else None
    ours = explain_many(loaded, images, method, targets=targets, params=params)
    reference = explain_many(model, images, method, targets=targets, params=params)
    for mine, theirs in zip(ours, reference, strict=True):
        assert np.allclose(mine.map, theirs.map, rtol=1e-4, atol=1e-6)
    with torch.no_grad():  # and plain predictions on a batch
        assert torch.allclose(loaded.module(images), model(images), atol=1e-5)


def test_a_batch_that_does_not_divide_the_exported_batch_is_padded(model, tmp_path):
    loaded = engine.load_model(str(_export(model, tmp_path / "two.pt2", batch=2)))
    assert "batch 2" in loaded.source
    images = _images(3, seed=4)
    ours = explain_many(loaded, images, "gradcam", targets=[0, 1, 2], params=_gradcam())
    reference = explain_many(model, images, "gradcam", targets=[0, 1, 2], params=_gradcam())
    for mine, theirs in zip(ours, reference, strict=True):
        assert np.allclose(mine.map, theirs.map, rtol=1e-4, atol=1e-6)
    single = engine.explain(loaded, images[0], "gradcam", target=0, params=_gradcam())  # one image, padded to two
    assert np.allclose(single.map, reference[0].map, rtol=1e-4, atol=1e-6)


def test_a_program_with_a_dynamic_batch_runs_batches_directly(model, tmp_path):
    loaded = engine.load_model(str(_export(model, tmp_path / "dynamic.pt2", batch=2, dynamic=True)))
    assert "batch 1 to any" in loaded.source
    x = _images(1, seed=5)[0]
    for method, params in (("gradcam", _gradcam()), ("ablationcam", {"layer": "body.2.conv"})):
        ours = engine.explain(loaded, x, method, target=2, params=params)
        reference = engine.explain(model, x, method, target=2, params=params)
        assert np.allclose(ours.map, reference.map, rtol=1e-4, atol=1e-6)


def _one_line_error(error: pytest.ExceptionInfo, *fragments: str) -> str:
    message = str(error.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_a_truncated_file_is_one_line(program, tmp_path):
    cut = tmp_path / "cut.pt2"
    data = program.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError) as error:
        engine.load_model(str(cut))
    _one_line_error(error, str(cut), "truncated or corrupt")


def test_files_that_are_not_exported_programs_are_named(tmp_path):
    saved = tmp_path / "weights.pt2"
    torch.save(_net().state_dict(), saved)
    with pytest.raises(UserError) as error:
        engine.load_model(str(saved))
    _one_line_error(error, "torch.save")
    two = tmp_path / "two.pt2"
    torch.export.save(torch.export.export(TwoInputs(), (torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4))), str(two))
    with pytest.raises(UserError) as error:
        engine.load_model(str(two))
    _one_line_error(error, "2 inputs")


def test_a_program_exported_in_training_mode_is_refused(tmp_path):
    model = _net().train()
    with pytest.raises(UserError) as error:
        engine.load_model(str(_export(model, tmp_path / "train.pt2", batch=2)))
    _one_line_error(error, "training mode", "model.eval()")


def test_an_input_of_another_size_is_one_line(loaded):
    with pytest.raises(UserError) as error:
        engine.explain(loaded, torch.rand(1, 48, 48), "saliency")
    _one_line_error(error, "1 x 32 x 32")


class Marker:
    """Stands for any Python object; unpickling it would run code of the file's choosing."""

    unpickled = False

    def __setstate__(self, state) -> None:
        Marker.unpickled = True


def _rewrite(source: Path, target: Path, replace: dict[str, bytes]) -> Path:
    """A copy of the archive with some members (named below its root folder) replaced or added."""
    with zipfile.ZipFile(source) as archive:
        root = archive.namelist()[0].split("/")[0]
        members = {name: archive.read(name) for name in archive.namelist()}
    members.update({f"{root}/{name}": data for name, data in replace.items()})
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return target


def test_pickled_objects_in_the_archive_need_trust(program, tmp_path):
    buffer = io.BytesIO()
    torch.save(((Marker(),), {}), buffer)
    sample = _rewrite(program, tmp_path / "sample.pt2", {"data/sample_inputs/model.pt": buffer.getvalue()})
    with pytest.raises(UntrustedFile) as error:
        engine.load_model(str(sample))
    _one_line_error(error, "--trust")
    assert not Marker.unpickled

    with zipfile.ZipFile(program) as archive:
        name = next(n for n in archive.namelist() if n.endswith("data/weights/model_weights_config.json"))
        config = json.loads(archive.read(name))
    first = next(iter(config["config"]))
    config["config"][first]["use_pickle"] = True
    pickled = _rewrite(program, tmp_path / "pickled.pt2", {"data/weights/model_weights_config.json": json.dumps(config).encode()})
    with pytest.raises(UntrustedFile) as error:
        engine.load_model(str(pickled))
    _one_line_error(error, first)


def test_an_aotinductor_package_is_refused(program, tmp_path):
    package = _rewrite(program, tmp_path / "aoti.pt2", {"data/aotinductor/model/model.so": b"\x7fELF"})
    with pytest.raises(UserError) as error:
        engine.load_model(str(package))
    _one_line_error(error, "AOTInductor")


def test_cli_explains_a_named_layer_of_an_exported_program(program, tmp_path):
    image = tmp_path / "scan.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48), dtype=np.uint8), mode="L").save(image)
    out = tmp_path / "maps"
    command = [
        sys.executable, "main.py", "explain", "--model", str(program), "--input", str(image), "--method", "gradcam",
        "--layer", "body.2.conv", "--out", str(out), "--resize", "32", "--crop", "32", "--mean", "0.5", "--std", "0.5", "--channels", "1",
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (out / "scan.gradcam.png").is_file() and (out / "scan.gradcam.npy").is_file()
    record = json.loads((out / "scan.gradcam.json").read_text())
    assert "body.2.conv" in json.dumps(record)
