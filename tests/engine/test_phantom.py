"""The breast-ultrasound phantom: determinism, classes, masks, lesion features, speckle, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_dilation

from cli.main import build_parser
from cli.phantom import cmd_phantom
from engine.core.errors import UserError
from engine.demo._tissue import psf_sigma, speckle
from engine.demo.phantom import CLASSES, generate, label_of, phantom
from engine.io.images import scan_inputs

NORMAL, BENIGN, MALIGNANT = range(3)


@pytest.fixture(scope="module")
def sample():
    return generate(150, size=128, seed=7)


def _lesions(sample, label):
    return [(image, mask) for image, mask, lab in zip(*sample, strict=True) if lab == label]


def test_same_seed_gives_byte_identical_images():
    first, second = generate(6, size=64, seed=3), generate(6, size=64, seed=3)
    assert first.images.tobytes() == second.images.tobytes()
    assert first.masks.tobytes() == second.masks.tobytes()
    assert np.array_equal(first.labels, second.labels)


def test_different_seeds_give_different_images():
    assert not np.array_equal(generate(3, size=64, seed=3).images, generate(3, size=64, seed=4).images)


def test_image_i_depends_only_on_seed_index_and_size():
    large = generate(30, size=64, seed=5)
    small = generate(10, size=64, seed=5)
    chunk = generate(5, size=64, seed=5, start=20)  # how a parallel worker would make its share
    assert small.images.tobytes() == large.images[:10].tobytes()
    assert np.array_equal(small.masks, large.masks[:10])
    assert chunk.images.tobytes() == large.images[20:25].tobytes()
    assert np.array_equal(chunk.labels, large.labels[20:25])
    assert phantom(17, 64, 5).image.tobytes() == large.images[17].tobytes()


def test_output_types_ranges_and_non_square_sizes(sample):
    assert sample.images.dtype == np.float32 and sample.images.shape == (150, 128, 128)
    assert sample.masks.dtype == bool and sample.labels.dtype == np.int64
    assert 0.0 <= sample.images.min() and sample.images.max() <= 1.0
    tall = generate(3, size=(96, 48), seed=1)
    assert tall.images.shape == (3, 96, 48) and tall.masks[1:].any(axis=(1, 2)).all()


def test_classes_are_balanced(sample):
    assert np.bincount(sample.labels, minlength=3).tolist() == [50, 50, 50]
    assert [label_of(i) for i in range(6)] == [0, 1, 2, 0, 1, 2]
    counts = np.bincount([label_of(i) for i in range(31)])
    assert counts.max() - counts.min() <= 1


def test_masks_are_empty_exactly_for_normal_and_clear_of_the_border(sample):
    for mask, label in zip(sample.masks, sample.labels, strict=True):
        assert mask.any() == (label != NORMAL)
        assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any())


def test_lesions_are_hypoechoic(sample):
    for label in (BENIGN, MALIGNANT):
        for image, mask in _lesions(sample, label):
            ring = binary_dilation(mask, iterations=4) & ~binary_dilation(mask, iterations=1)
            assert image[mask].mean() < image[ring].mean()


def test_benign_lesions_are_wider_than_tall_and_malignant_taller_than_wide(sample):
    for label, taller in ((BENIGN, False), (MALIGNANT, True)):
        moments, boxes = [], []
        for _, mask in _lesions(sample, label):
            ys, xs = np.nonzero(mask)
            moments.append((ys.var() > xs.var()) == taller)
            boxes.append((np.ptp(ys) > np.ptp(xs)) == taller)
        assert np.mean(moments) >= 0.9, CLASSES[label]
        assert np.mean(boxes) >= 0.9, CLASSES[label]


def _below_and_beside(image, mask):
    """Mean brightness in a band below the lesion's central columns, and at the same depth to its sides."""
    ys, xs = np.nonzero(mask)
    top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
    rows = slice(bottom + 2, min(image.shape[0], bottom + 2 + (bottom - top + 1)))
    quarter = (right - left + 1) // 4
    below = image[rows, left + quarter : right - quarter + 1].mean()
    half = (right - left + 1) // 2
    sides = [image[rows, max(0, left - 4 - half) : left - 4], image[rows, right + 5 : right + 5 + half]]
    return below, np.mean([side.mean() for side in sides if side.size])


def test_posterior_enhancement_for_benign_and_shadowing_for_malignant(sample):
    enhanced = [np.greater(*_below_and_beside(image, mask)) for image, mask in _lesions(sample, BENIGN)]
    shadowed = [np.less(*_below_and_beside(image, mask)) for image, mask in _lesions(sample, MALIGNANT)]
    assert np.mean(enhanced) >= 0.85
    assert np.mean(shadowed) >= 0.85


def test_speckle_is_rayleigh():
    rng = np.random.default_rng(0)
    field = speckle(rng, np.ones((256, 256)), psf_sigma(128, 128))
    ratio = field.mean() / field.std()
    assert abs(ratio - np.sqrt(np.pi / (4 - np.pi))) < 0.06  # 1.913 for Rayleigh
    assert abs(np.mean(field.astype(np.float64) ** 2) - 1.0) < 0.1  # unit mean power
    doubled = speckle(np.random.default_rng(0), np.full((256, 256), 2.0), psf_sigma(128, 128))
    assert np.allclose(doubled, 2.0 * field, rtol=1e-5)  # multiplicative


def test_mean_brightness_does_not_separate_benign_from_malignant(sample):
    means = sample.images.mean(axis=(1, 2))
    benign, malignant = means[sample.labels == BENIGN], means[sample.labels == MALIGNANT]
    pooled = np.sqrt((benign.var() + malignant.var()) / 2)
    assert abs(benign.mean() - malignant.mean()) < 0.5 * pooled
    auc = np.mean(benign[:, None] > malignant[None, :])  # area under the ROC curve of a threshold on the mean
    assert 0.35 < auc < 0.65
    normal = means[sample.labels == NORMAL]
    assert abs(normal.mean() - np.concatenate([benign, malignant]).mean()) < 0.5 * pooled


def _parse(*argv):
    return build_parser().parse_args(["phantom", *argv])  # the real parser: bad values are UserErrors


def test_phantom_command_writes_an_imagefolder_that_reads_back_with_labels_and_masks(tmp_path, capsys):
    out = tmp_path / "bus"
    assert cmd_phantom(_parse("--out", str(out), "--n", "7", "--size", "48", "--seed", "2")) == 0
    assert "3 normal, 2 benign, 2 malignant" in capsys.readouterr().out
    scan = scan_inputs(out)
    assert scan.layout == "imagefolder" and sorted(scan.classes) == sorted(CLASSES)
    assert len(scan.items) == 7 and not scan.skipped
    for item in scan.items:
        index = int(item.path.stem)
        expected = phantom(index, 48, 2)
        assert item.label == CLASSES[expected.label] and item.mask is not None
        with Image.open(item.path) as image:
            assert image.mode == "L" and image.size == (48, 48)
            assert np.array_equal(np.asarray(image), np.round(expected.image * 255).astype(np.uint8))
        with Image.open(item.mask) as mask:
            pixels = np.asarray(mask)
        assert set(np.unique(pixels)) <= {0, 255}
        assert np.array_equal(pixels == 255, expected.mask)


@pytest.mark.parametrize("argv", [("--n", "2"), ("--size", "31"), ("--size", "4096"), ("--seed", "-1")])
def test_bad_command_arguments_raise_user_error(tmp_path, argv):
    with pytest.raises(UserError):
        cmd_phantom(_parse("--out", str(tmp_path / "x"), *argv))
    assert not (tmp_path / "x").exists()


def test_bad_api_arguments_raise_user_error(tmp_path):
    with pytest.raises(UserError):
        generate(0)
    with pytest.raises(UserError):
        generate(3, size=16)
    with pytest.raises(UserError):
        phantom(0, seed=-2)
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError):
        cmd_phantom(_parse("--out", str(tmp_path / "file"), "--n", "3", "--size", "32"))
