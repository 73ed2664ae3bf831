"""Seeded synthetic label noise: uniform noise in Meta-Weight-Net's convention, as in the
data-dependent LR paper's robust-learning experiment (Sec. 3.4: "the label of each image is
independently changed to a uniform random class with probability p"), and Co-teaching's
pair flips.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class NoisyLabels:
    """Noisy ``labels`` (same shape and dtype as the clean ones); ``corrupted[i]`` is True
    exactly where ``labels[i]`` differs from the clean label; ``rate`` is the noise parameter
    p that was asked for and ``kind`` the noise model ("uniform" or "pair")."""

    labels: torch.Tensor
    corrupted: torch.Tensor
    rate: float
    kind: str


def _check(labels: torch.Tensor, rate: float, num_classes: int) -> None:
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be a 1-D integer tensor, got dtype {labels.dtype} and shape "
            f"{tuple(labels.shape)}"
        )
    if num_classes < 2:
        raise ValueError(f"label noise needs at least 2 classes, got num_classes={num_classes}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"labels range over [{int(labels.min())}, {int(labels.max())}], outside "
            f"[0, {num_classes - 1}] for num_classes={num_classes}"
        )
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"rate must lie in [0, 1], got {rate}")


def _noisy(clean: torch.Tensor, noisy: torch.Tensor, rate: float, kind: str) -> NoisyLabels:
    noisy = noisy.to(clean.dtype)
    return NoisyLabels(noisy, noisy != clean, float(rate), kind)


def uniform_label_noise(
    labels: torch.Tensor, rate: float, num_classes: int, seed: int
) -> NoisyLabels:
    """Uniform label noise with Meta-Weight-Net's transition matrix (Shu et al. 2019)

        T = (p / C) · 1 1ᵀ + (1 − p) · I,   T[i, j] = P(noisy = j | clean = i),

    i.e. each label is, with probability p = ``rate``, replaced by a class drawn uniformly
    from all C = ``num_classes`` classes, *including its own*. The effective flip rate is
    therefore P(noisy ≠ clean) = p (1 − 1/C), e.g. 36 % for p = 40 % on 10 classes (L2RW
    instead relabels a fixed p fraction to other classes). Seeded by ``seed``.
    """
    _check(labels, rate, num_classes)
    generator = torch.Generator().manual_seed(seed)
    resample = torch.rand(labels.shape, generator=generator) < rate
    drawn = torch.randint(0, num_classes, labels.shape, generator=generator)
    noisy = torch.where(resample.to(labels.device), drawn.to(labels), labels)
    return _noisy(labels, noisy, rate, "uniform")


def pair_flip_noise(labels: torch.Tensor, rate: float, num_classes: int, seed: int) -> NoisyLabels:
    """Pair-flip noise (Han et al. 2018, Co-teaching): each label c becomes (c + 1) mod C
    with probability p = ``rate`` and is kept otherwise, so the flip rate is exactly p in
    expectation and every corrupted label is its class's successor. Seeded by ``seed``."""
    _check(labels, rate, num_classes)
    generator = torch.Generator().manual_seed(seed)
    flip = torch.rand(labels.shape, generator=generator) < rate
    noisy = torch.where(flip.to(labels.device), (labels + 1) % num_classes, labels)
    return _noisy(labels, noisy, rate, "pair")
