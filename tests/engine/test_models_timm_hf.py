"""timm:NAME and hf:DIR: built offline, seeded, with their own preprocessing and labels; weights
round-trip; pretrained files found in the local cache only; clear refusals for bad specs."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import save_file

import engine
from engine.core.errors import UntrustedFile, UserError
from engine.models.hub import hub_offline


def _input(shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def test_timm_random_init_is_seeded_and_takes_timms_preprocessing():
    a = engine.load_model("timm:test_vit", seed=1)
    b = engine.load_model("timm:test_vit", seed=1)
    c = engine.load_model("timm:test_vit", seed=2)
    x = _input((1, 3, 160, 160))
    assert torch.equal(a.module(x), b.module(x)) and not torch.equal(a.module(x), c.module(x))
    pre = a.preprocess  # timm's test_vit: 160 px, crop_pct 0.95, bicubic, mean and std 0.5
    assert (pre.crop, pre.resize, pre.interpolation, pre.mean, pre.std) == (160, 168, "bicubic", (0.5,) * 3, (0.5,) * 3)
    assert a.num_classes == 1000 and a.labels is None and "random initialisation (seed 1)" in a.source


def test_timm_num_classes_and_weights_round_trip_through_safetensors(tmp_path):
    original = engine.load_model("timm:test_vit", seed=5, num_classes=4).module
    path = tmp_path / "vit.safetensors"
    save_file({k: v.contiguous() for k, v in original.state_dict().items()}, str(path))
    loaded = engine.load_model("timm:test_vit", weights=str(path), seed=0)
    assert loaded.num_classes == 4 and any("4 output classes" in n for n in loaded.notes)
    x = _input((2, 3, 160, 160))
    assert torch.equal(loaded.module(x), original(x))


def test_unknown_timm_name_suggests_close_names():
    with pytest.raises(UserError, match=r"timm has no model 'vit_tiny_patch16_2244'.*did you mean vit_tiny_patch16_224"):
        engine.load_model("timm:vit_tiny_patch16_2244")
    with pytest.raises(UserError, match="only ':pretrained'"):
        engine.load_model("timm:test_vit:imagenet")


def _fake_hub_cache(root, repo: str, files: dict[str, bytes]):
    """The layout huggingface_hub keeps: models--ORG--NAME/{refs/main, snapshots/REV/FILE}."""
    folder = root / ("models--" + repo.replace("/", "--"))
    revision = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(revision)
    snapshot = folder / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for name, data in files.items():
        (snapshot / name).write_bytes(data)


def test_timm_pretrained_comes_from_the_local_cache_and_is_never_downloaded(tmp_path, monkeypatch):
    from huggingface_hub import constants
    from timm.models import get_pretrained_cfg

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(UserError, match="not in the local cache.*--allow-download"):
        engine.load_model("timm:test_vit:pretrained")
    reference = engine.load_model("timm:test_vit", seed=9).module
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(weights))
    _fake_hub_cache(tmp_path, get_pretrained_cfg("test_vit").hf_hub_id, {"model.safetensors": weights.read_bytes()})
    loaded = engine.load_model("timm:test_vit:pretrained", seed=0)
    assert "pretrained weights from the Hugging Face cache" in loaded.source
    x = _input((1, 3, 160, 160))
    assert torch.equal(loaded.module(x), reference(x))
    assert loaded.labels is not None and loaded.labels[0].startswith("tench")


def test_hub_is_offline_while_loading_and_restored_after(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    before = constants.HF_HUB_OFFLINE
    with hub_offline():
        assert os.environ["HF_HUB_OFFLINE"] == "1" and constants.HF_HUB_OFFLINE is True
    assert "HF_HUB_OFFLINE" not in os.environ and constants.HF_HUB_OFFLINE == before


LABELS = {0: "cat", 1: "dog", 2: "bird"}


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    folder = tmp_path_factory.mktemp("hf") / "tiny-vit"
    torch.manual_seed(0)
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, id2label=LABELS, label2id={v: k for k, v in LABELS.items()})
    model = ViTForImageClassification(config).eval()
    model.save_pretrained(folder, safe_serialization=True)
    ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.25, 0.3], resample=3).save_pretrained(folder)
    return folder, model


def test_hf_folder_loads_with_its_labels_preprocessing_and_logits(hf_folder):
    folder, model = hf_folder
    loaded = engine.load_model(f"hf:{folder}")
    assert loaded.labels == ["cat", "dog", "bird"] and loaded.num_classes == 3
    pre = loaded.preprocess
    assert (pre.resize, pre.crop, pre.mean, pre.std, pre.interpolation) == (32, 32, (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), "bicubic")
    x = _input((3, 32, 32))
    result = engine.explain(loaded, x, "gradcam")
    with torch.no_grad():
        expected = model(x[None]).logits
    assert result.predicted == int(expected.argmax()) and result.extras["layer"].endswith("1.layernorm_before")
    assert result.probability == pytest.approx(float(torch.softmax(expected, 1).max()), rel=1e-5)


def test_hf_folder_without_weights_or_with_a_pickle(hf_folder, tmp_path):
    folder, model = hf_folder
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text((folder / "config.json").read_text())
    with pytest.raises(UserError, match="holds no model weights"):
        engine.load_model(f"hf:{empty}")
    with pytest.raises(UserError, match="no config.json"):
        engine.load_model(f"hf:{tmp_path}")
    pickled = tmp_path / "pickled"  # the older format: config.json and a pickled pytorch_model.bin
    pickled.mkdir()
    (pickled / "config.json").write_text((folder / "config.json").read_text())
    torch.save(model.state_dict(), pickled / "pytorch_model.bin")
    with pytest.raises(UntrustedFile):
        engine.load_model(f"hf:{pickled}")
    trusted = engine.load_model(f"hf:{pickled}", trust=True)
    assert "trusted pickle" in trusted.source


def test_hf_preprocessing_of_a_shortest_edge_processor():
    from engine.io.preprocess import Preprocess

    config = json.loads('{"do_resize": true, "size": {"shortest_edge": 224}, "crop_pct": 0.875, "resample": 3, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}')
    pre = Preprocess.from_hf(config)
    assert (pre.resize, pre.crop, pre.interpolation) == (256, 224, "bicubic")
