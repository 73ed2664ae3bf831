"""Digits, hold-out splits, label noise and image corruptions."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from lrkit.data import (
    CORRUPTIONS,
    balanced_holdout,
    corrupt_images,
    load_digits,
    pair_flip_noise,
    stratified_holdout,
    uniform_label_noise,
)


def random_labels(count: int, num_classes: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, num_classes, (count,), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- digits


def digits(test_fraction: float = 0.2, seed: int = 0):
    pytest.importorskip("sklearn", reason="load_digits needs scikit-learn")
    return load_digits(test_fraction, seed)


def test_digits_sizes_and_values() -> None:
    data = digits()
    total = data.train_images.shape[0] + data.test_images.shape[0]
    assert total == 1797  # the size of scikit-learn's bundled set
    assert data.train_images.shape[1:] == (1, 8, 8) == data.test_images.shape[1:]
    assert data.train_images.dtype == torch.float32 and data.test_labels.dtype == torch.int64
    every_image = torch.cat([data.train_images, data.test_images])
    assert float(every_image.min()) == 0.0 and float(every_image.max()) == 1.0
    assert torch.equal(every_image * 16, (every_image * 16).round())
    assert data.num_classes == 10


@pytest.mark.parametrize("test_fraction", [0.2, 0.5])
def test_digits_split_is_stratified(test_fraction: float) -> None:
    data = digits(test_fraction, seed=3)
    class_sizes = data.train_labels.bincount(minlength=10) + data.test_labels.bincount(minlength=10)
    expected_test = torch.floor(test_fraction * class_sizes + 0.5).long()
    assert torch.equal(data.test_labels.bincount(minlength=10), expected_test)


def test_digits_seeded() -> None:
    first, again, other = digits(seed=1), digits(seed=1), digits(seed=2)
    assert torch.equal(first.test_images, again.test_images)
    assert torch.equal(first.train_labels, again.train_labels)
    assert not torch.equal(first.test_images, other.test_images)


# ---------------------------------------------------------------- hold-out splits


def check_partition(labels: torch.Tensor, kept: torch.Tensor, holdout: torch.Tensor) -> None:
    for indices in (kept, holdout):
        assert indices.dtype == torch.int64
        assert torch.equal(indices, indices.sort().values)
    assert torch.equal(torch.cat([kept, holdout]).sort().values, torch.arange(labels.numel()))


def test_balanced_holdout_counts_and_partition() -> None:
    labels = random_labels(500, 7) * 3 + 2  # class ids need not be 0..C-1
    kept, holdout = balanced_holdout(labels, per_class=9, seed=0)
    check_partition(labels, kept, holdout)
    classes, counts = labels[holdout].unique(return_counts=True)
    assert torch.equal(classes, labels.unique())
    assert torch.all(counts == 9)


def test_balanced_holdout_seeded() -> None:
    labels = random_labels(300, 4)
    first = balanced_holdout(labels, 10, seed=5)
    again = balanced_holdout(labels, 10, seed=5)
    other = balanced_holdout(labels, 10, seed=6)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[1], other[1])


def test_balanced_holdout_too_few() -> None:
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    with pytest.raises(ValueError, match=r"class 1: 2"):
        balanced_holdout(labels, per_class=3, seed=0)
    with pytest.raises(ValueError, match="1-D integer"):
        balanced_holdout(labels.float(), per_class=1, seed=0)


def test_stratified_holdout() -> None:
    labels = random_labels(400, 5, seed=1)
    kept, holdout = stratified_holdout(labels, 0.25, seed=0)
    check_partition(labels, kept, holdout)
    expected = torch.floor(0.25 * labels.bincount() + 0.5).long()
    assert torch.equal(labels[holdout].bincount(), expected)
    with pytest.raises(ValueError, match="no kept example"):
        stratified_holdout(torch.tensor([0, 0, 1]), 0.9, seed=0)


# ---------------------------------------------------------------- label noise

NOISE = {"uniform": uniform_label_noise, "pair": pair_flip_noise}


@pytest.mark.parametrize("kind", NOISE)
def test_noise_seeded_and_mask(kind: str) -> None:
    labels = random_labels(2000, 10).int()
    noisy = NOISE[kind](labels, 0.4, 10, seed=0)
    assert noisy.kind == kind and noisy.rate == 0.4
    assert noisy.labels.dtype == labels.dtype and noisy.labels.shape == labels.shape
    assert torch.equal(noisy.corrupted, noisy.labels != labels)
    assert torch.equal(noisy.labels, NOISE[kind](labels, 0.4, 10, seed=0).labels)
    assert not torch.equal(noisy.labels, NOISE[kind](labels, 0.4, 10, seed=1).labels)
    assert not NOISE[kind](labels, 0.0, 10, seed=0).corrupted.any()


def within_binomial(observed: float, probability: float, trials: int, z: float = 5.0) -> bool:
    return abs(observed - probability) <= z * math.sqrt(probability * (1 - probability) / trials)


def test_uniform_noise_effective_rate() -> None:
    num_classes, rate, count = 10, 0.4, 20_000
    labels = random_labels(count, num_classes)
    noisy = uniform_label_noise(labels, rate, num_classes, seed=0)
    flipped = noisy.corrupted.float().mean().item()
    assert within_binomial(flipped, rate * (1 - 1 / num_classes), count)
    assert not within_binomial(flipped, rate, count)
    assert noisy.labels[noisy.corrupted].unique().numel() == num_classes


def test_pair_flip_goes_to_next_class() -> None:
    num_classes, rate, count = 6, 0.3, 20_000
    labels = random_labels(count, num_classes)
    noisy = pair_flip_noise(labels, rate, num_classes, seed=0)
    changed = noisy.corrupted
    assert torch.equal(noisy.labels[changed], (labels[changed] + 1) % num_classes)
    assert within_binomial(changed.float().mean().item(), rate, count)
    assert pair_flip_noise(labels, 1.0, num_classes, seed=0).corrupted.all()


def test_noise_rejects_bad_input() -> None:
    labels = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        uniform_label_noise(labels, 1.5, 3, seed=0)
    with pytest.raises(ValueError, match="outside"):
        pair_flip_noise(labels, 0.5, 2, seed=0)


# ---------------------------------------------------------------- corruptions


@pytest.fixture(scope="module")
def clean_images() -> torch.Tensor:
    return digits().test_images[:200]


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corruption_shape_range_and_monotone(kind: str, clean_images: torch.Tensor) -> None:
    before = clean_images.clone()
    changes = []
    for severity in range(1, 6):
        corrupted = corrupt_images(clean_images, kind, severity, seed=0)
        assert corrupted.shape == clean_images.shape and corrupted.dtype == clean_images.dtype
        assert float(corrupted.min()) >= 0.0 and float(corrupted.max()) <= 1.0
        changes.append((corrupted - clean_images).abs().mean().item())
    assert torch.equal(clean_images, before)
    assert changes[0] > 0
    assert all(a < b for a, b in itertools.pairwise(changes)), changes


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
def test_corruption_seeded(kind: str, clean_images: torch.Tensor) -> None:
    first = corrupt_images(clean_images, kind, 3, seed=4)
    assert torch.equal(first, corrupt_images(clean_images, kind, 3, seed=4))
    other = corrupt_images(clean_images, kind, 3, seed=5)
    random_kind = kind.endswith("noise")
    assert torch.equal(first, other) != random_kind


def test_gaussian_noise_scale() -> None:
    grey = torch.full((64, 1, 16, 16), 0.5)
    residual = corrupt_images(grey, "gaussian_noise", 5, seed=0) - grey
    c = CORRUPTIONS["gaussian_noise"].constants[4]
    # the std of a sample std of n normals is about c / sqrt(2n)
    assert abs(residual.std().item() - c) <= 5 * c / math.sqrt(2 * residual.numel())


def test_gaussian_blur_matches_scipy(clean_images: torch.Tensor) -> None:
    ndimage = pytest.importorskip("scipy.ndimage")
    images = clean_images[:4].double()
    for severity, sigma in enumerate(CORRUPTIONS["gaussian_blur"].constants, start=1):
        blurred = corrupt_images(images, "gaussian_blur", severity, seed=0)
        for image, result in zip(images, blurred, strict=True):
            reference = ndimage.gaussian_filter(image[0].numpy(), sigma, mode="nearest")
            assert torch.allclose(result[0], torch.from_numpy(reference), atol=1e-12)


def test_contrast_formula(clean_images: torch.Tensor) -> None:
    images = clean_images[:8]
    c = CORRUPTIONS["contrast"].constants[1]
    means = images.mean(dim=(2, 3), keepdim=True)
    expected = ((images - means) * c + means).clamp(0, 1)
    assert torch.allclose(corrupt_images(images, "contrast", 2, seed=0), expected)


def test_corruption_errors(clean_images: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="gaussian_blur"):
        corrupt_images(clean_images, "fog", 1, seed=0)
    for severity in (0, 6, True):
        with pytest.raises(ValueError, match="1, 2, 3, 4, 5"):
            corrupt_images(clean_images, "contrast", severity, seed=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        corrupt_images(clean_images * 2, "contrast", 1, seed=0)
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        corrupt_images(clean_images[0], "contrast", 1, seed=0)
