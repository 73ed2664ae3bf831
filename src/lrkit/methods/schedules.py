"""The LR-schedule registry, built from torch.optim.lr_scheduler.

A schedule is a factory ``make(optimizer, total_steps, steps_per_epoch, **options)`` that
returns a per-step ``LRScheduler`` (``None`` for a constant LR); adding one — a learned
schedule replayed from its values, say — is one :func:`register_schedule` call.

The epoch-based constants of the papers' baselines (MLR-SNet Sec. 4.1: MultiStep ÷10 at
epochs 60/120/180 of 200, Exponential ×0.95 per epoch, SGDR with E0 = 10 epochs, T_mult = 2,
α_min = 1e-5) are rescaled to the run's budget: milestones at 30 %, 60 % and 90 % of the
steps, an exponential decay of 0.95 per epoch, and a first SGDR period of 1/20 of the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import (
    CosineAnnealingLR,
    CosineAnnealingWarmRestarts,
    ExponentialLR,
    LambdaLR,
    LRScheduler,
    MultiStepLR,
)

ScheduleFactory = Callable[..., LRScheduler | None]
SCHEDULES: dict[str, ScheduleFactory] = {}
SCHEDULE_SUMMARIES: dict[str, str] = {}


def register_schedule(name: str, summary: str) -> Callable[[ScheduleFactory], ScheduleFactory]:
    def decorate(factory: ScheduleFactory) -> ScheduleFactory:
        if name in SCHEDULES:
            raise ValueError(f"schedule {name!r} is registered twice")
        SCHEDULES[name] = factory
        SCHEDULE_SUMMARIES[name] = summary
        return factory

    return decorate


def make_schedule(
    optimizer: Optimizer,
    schedule: str,
    total_steps: int,
    steps_per_epoch: int,
    **options: Any,
) -> LRScheduler | None:
    """The per-step scheduler for ``schedule`` (``None`` for a constant LR)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    return SCHEDULES[schedule](optimizer, total_steps, steps_per_epoch, **options)


@register_schedule("constant", "the tuned LR throughout")
def constant(optimizer: Optimizer, total_steps: int, steps_per_epoch: int) -> None:
    return None


@register_schedule("multistep", "÷10 at 30 %, 60 % and 90 % of the budget")
def multistep(optimizer: Optimizer, total_steps: int, steps_per_epoch: int) -> LRScheduler:
    milestones = sorted({max(1, round(total_steps * f)) for f in (0.3, 0.6, 0.9)})
    return MultiStepLR(optimizer, milestones=milestones, gamma=0.1)


@register_schedule("exponential", "×0.95 per epoch")
def exponential(optimizer: Optimizer, total_steps: int, steps_per_epoch: int) -> LRScheduler:
    return ExponentialLR(optimizer, gamma=0.95 ** (1.0 / max(1, steps_per_epoch)))


@register_schedule("sgdr", "cosine warm restarts, first period 1/20 of the budget, T_mult 2")
def sgdr(optimizer: Optimizer, total_steps: int, steps_per_epoch: int) -> LRScheduler:
    first_period = max(1, total_steps // 20)
    return CosineAnnealingWarmRestarts(optimizer, T_0=first_period, T_mult=2, eta_min=1e-5)


@register_schedule("cosine", "cosine annealing to 0 over the budget")
def cosine(optimizer: Optimizer, total_steps: int, steps_per_epoch: int) -> LRScheduler:
    return CosineAnnealingLR(optimizer, T_max=max(1, total_steps), eta_min=0.0)


@register_schedule("warmup_cosine", "linear warmup over 5 % of the budget, then cosine to 0")
def warmup_cosine(
    optimizer: Optimizer, total_steps: int, steps_per_epoch: int, warmup_fraction: float = 0.05
) -> LRScheduler:
    """The schedule of AlgoPerf's NAdamW baseline: lr·t/W for t < W, then
    lr·½(1 + cos(π·(t − W)/(T − W))), W = ``warmup_fraction``·T."""
    warmup = max(1, round(warmup_fraction * total_steps))
    decay = max(1, total_steps - warmup)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup) / decay)))

    return LambdaLR(optimizer, factor)


@register_schedule("replay", "a recorded LR per step (a learned schedule), as multiples of lr")
def replay(
    optimizer: Optimizer, total_steps: int, steps_per_epoch: int, values: Sequence[float]
) -> LRScheduler:
    """Replays ``values[t]`` × the group's initial lr at step t (the last value after the
    end), through ``LambdaLR``: a learned schedule (an LRS-OPT optimum, a meta-learned
    trajectory) replayed with any torch optimizer; pass ``lr=1`` for absolute values."""
    factors = [float(v) for v in values]
    if not factors:
        raise ValueError("a replayed schedule needs at least one value")
    last = len(factors) - 1
    return LambdaLR(optimizer, lambda step: factors[min(step, last)])
