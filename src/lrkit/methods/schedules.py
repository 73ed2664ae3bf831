"""Learning-rate schedules for the baselines, built from torch.optim.lr_scheduler.

All schedules are stepped once per optimizer step; their epoch-based constants from the
papers (MLR-SNet Sec. 4.1: MultiStep ÷10 at epochs 60/120/180 of 200, Exponential ×0.95 per
epoch, SGDR with E0 = 10 epochs, T_mult = 2, α_min = 1e-5) are rescaled to the run's budget:
milestones at 30 %, 60 % and 90 % of the steps, an exponential decay of 0.95 per epoch, and
a first SGDR period of 1/20 of the budget.
"""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingWarmRestarts,
    ExponentialLR,
    LRScheduler,
    MultiStepLR,
)

SCHEDULES = ("constant", "multistep", "exponential", "sgdr")


def make_schedule(
    optimizer: Optimizer, schedule: str, total_steps: int, steps_per_epoch: int
) -> LRScheduler | None:
    """The per-step scheduler for ``schedule`` (``None`` for a constant LR)."""
    if schedule == "constant":
        return None
    if schedule == "multistep":
        milestones = sorted({max(1, round(total_steps * f)) for f in (0.3, 0.6, 0.9)})
        return MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
    if schedule == "exponential":
        return ExponentialLR(optimizer, gamma=0.95 ** (1.0 / max(1, steps_per_epoch)))
    if schedule == "sgdr":
        first_period = max(1, total_steps // 20)
        return CosineAnnealingWarmRestarts(optimizer, T_0=first_period, T_mult=2, eta_min=1e-5)
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
