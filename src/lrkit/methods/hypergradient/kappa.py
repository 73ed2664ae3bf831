"""The paper's procedure for MARTHE's last knob κ (Donini et al., end of Sec. 4): "start with a
high enough κ and aggressively diminish it (e.g. decimating it) until the learning system
does not diverge" — as a function."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class KappaChoice:
    """The chosen κ and every trial in order: (κ, diverged)."""

    kappa: float
    tried: list[tuple[float, bool]] = field(default_factory=list)


def choose_kappa(
    diverges: Callable[[float], bool],
    *,
    start: float = 1e-4,
    factor: float = 10.0,
    smallest: float = 1e-16,
) -> KappaChoice:
    """The largest κ of start, start/factor, start/factor², … (down to ``smallest``) for which
    ``diverges(κ)`` — a short training run with that κ — reports no divergence. A
    FloatingPointError raised by the run (what lrkit's optimizers raise on NaN/inf) counts
    as divergence. Raises ValueError when every κ down to ``smallest`` diverges.

    Example: ``choose_kappa(lambda k: train_briefly(kappa=k).diverged)``.
    """
    if not (start > 0.0 and smallest > 0.0 and factor > 1.0):
        raise ValueError(
            f"choose_kappa needs start > 0, smallest > 0 and factor > 1, got {start!r}, "
            f"{smallest!r}, {factor!r}"
        )
    tried: list[tuple[float, bool]] = []
    kappa = start
    while kappa >= smallest * (1.0 - 1e-9):
        try:
            diverged = bool(diverges(kappa))
        except FloatingPointError:
            diverged = True
        tried.append((kappa, diverged))
        if not diverged:
            return KappaChoice(kappa, tried)
        kappa = start / factor ** len(tried)
    raise ValueError(
        f"every κ from {start:g} down to {smallest:g} diverged ({len(tried)} trials); lower the "
        "initial learning rate or β0, or check the run itself"
    )
