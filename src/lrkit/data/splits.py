"""Seeded, class-aware hold-out splits.

Meta-learning methods need a small clean validation ("meta") set held out of the training
data: MLR-SNet's corrupted-data experiment (Sec. 4.4) uses 10 clean images per class, and
the data-dependent LR paper (Sec. 3.1) and Meta-Weight-Net hold out 1000 clean images.
:func:`balanced_holdout` draws exactly ``per_class`` examples of each class;
:func:`stratified_holdout` draws the same fraction of each class.
"""

from __future__ import annotations

import math

import torch


def _check_labels(labels: torch.Tensor) -> torch.Tensor:
    if labels.dim() != 1 or labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise ValueError(
            f"labels must be a 1-D integer tensor, got dtype {labels.dtype} and shape "
            f"{tuple(labels.shape)}"
        )
    return torch.unique(labels)


def _holdout(
    labels: torch.Tensor, holdout_sizes: dict[int, int], seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draws ``holdout_sizes[c]`` indices of class ``c`` without replacement, class by class
    in ascending order from one generator seeded with ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    is_holdout = torch.zeros(labels.shape[0], dtype=torch.bool)
    for label, size in sorted(holdout_sizes.items()):
        members = torch.nonzero(labels == label).flatten()
        order = torch.randperm(members.numel(), generator=generator)
        is_holdout[members[order[:size]]] = True
    kept = torch.nonzero(~is_holdout).flatten()
    holdout = torch.nonzero(is_holdout).flatten()
    return kept, holdout


def balanced_holdout(
    labels: torch.Tensor, per_class: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Splits ``range(len(labels))`` into ``(kept_indices, holdout_indices)``.

    The hold-out set has exactly ``per_class`` examples of every class present in
    ``labels``, drawn uniformly without replacement with a generator seeded by ``seed``;
    the two index sets are disjoint, sorted ascending, and together cover every index.
    Raises ``ValueError`` when a class has fewer than ``per_class`` examples.
    """
    classes = _check_labels(labels)
    if per_class < 0:
        raise ValueError(f"per_class must be non-negative, got {per_class}")
    counts = {int(c): int((labels == c).sum()) for c in classes}
    too_few = {c: n for c, n in counts.items() if n < per_class}
    if too_few:
        listed = ", ".join(f"class {c}: {n}" for c, n in sorted(too_few.items()))
        raise ValueError(
            f"cannot hold out {per_class} examples per class: too few examples ({listed}); "
            "lower per_class"
        )
    return _holdout(labels, dict.fromkeys(counts, per_class), seed)


def stratified_holdout(
    labels: torch.Tensor, fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Splits ``range(len(labels))`` into ``(kept_indices, holdout_indices)`` holding out
    ``floor(fraction · n_c + 1/2)`` examples of each class ``c`` with ``n_c`` examples.

    Seeded, disjoint, sorted and covering, as :func:`balanced_holdout`. ``fraction`` must lie
    in (0, 1), and every class must keep at least one example.
    """
    classes = _check_labels(labels)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must lie in (0, 1), got {fraction}")
    counts = {int(c): int((labels == c).sum()) for c in classes}
    sizes = {c: math.floor(fraction * n + 0.5) for c, n in counts.items()}
    emptied = sorted(c for c, size in sizes.items() if size >= counts[c])
    if emptied:
        raise ValueError(
            f"holding out a fraction {fraction} would leave no kept example of classes "
            f"{emptied}; lower the fraction"
        )
    return _holdout(labels, sizes, seed)
