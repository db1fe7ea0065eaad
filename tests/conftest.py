from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from tests.models import tiny_cnn  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_torch_home(tmp_path_factory, monkeypatch):
    """No test may see the user's real hub cache or data folder, or write to them."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    monkeypatch.setenv("SENSISCOPE_DATA", str(tmp_path_factory.mktemp("sensiscope_data")))


@pytest.fixture
def rgb_png(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture
def scripted_tiny(tmp_path):
    """A TinyCNN saved as TorchScript, with the eager model it came from."""
    model = tiny_cnn(seed=1)
    path = tmp_path / "tiny.pt"
    torch.jit.script(model).save(str(path))
    return path, model
