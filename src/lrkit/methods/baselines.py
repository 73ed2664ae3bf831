"""Tuned baselines from torch.optim: SGD, momentum, Adam, AdamW and Polyak averaging.

Each takes ``lr`` (tuned by the suites' log grids) and the harness adds an LR schedule
(``schedule`` hyperparameter, :mod:`lrkit.methods.schedules`). ``polyak`` is SGD with
momentum whose evaluated weights are an exponential moving average of the iterates
(``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``; the decay gives an
averaging window of a tenth of the budget, see ``lrkit.harness.step.ema_decay_for_budget``).
Lookahead lives in :mod:`lrkit.methods.lookahead`.
"""

from __future__ import annotations

import torch

from lrkit.methods.registry import MethodSpec, register_method

BASELINE_SUMMARY_SUFFIX = "; lr tuned on a log grid, schedule constant/multistep/exponential/sgdr"


def _sgd(params, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, foreach=True)


def _momentum(params, lr: float, momentum: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params, lr=lr, momentum=momentum, weight_decay=weight_decay, foreach=True
    )


def _adam(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, foreach=True)


def _adamw(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)


register_method(
    MethodSpec(
        name="sgd",
        summary="torch.optim.SGD" + BASELINE_SUMMARY_SUFFIX,
        kind="baseline",
        make_optimizer=_sgd,
        defaults={"lr": 0.01},
        tunable=("lr",),
        schedules=True,
    )
)
register_method(
    MethodSpec(
        name="momentum",
        summary="torch.optim.SGD with momentum 0.9" + BASELINE_SUMMARY_SUFFIX,
        kind="baseline",
        make_optimizer=_momentum,
        defaults={"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0},
        tunable=("lr",),
        schedules=True,
    )
)
register_method(
    MethodSpec(
        name="adam",
        summary="torch.optim.Adam" + BASELINE_SUMMARY_SUFFIX,
        kind="baseline",
        make_optimizer=_adam,
        defaults={"lr": 1e-3, "weight_decay": 0.0},
        tunable=("lr",),
        schedules=True,
    )
)
register_method(
    MethodSpec(
        name="adamw",
        summary="torch.optim.AdamW (decoupled weight decay 1e-2)" + BASELINE_SUMMARY_SUFFIX,
        kind="baseline",
        make_optimizer=_adamw,
        defaults={"lr": 1e-3, "weight_decay": 1e-2},
        tunable=("lr",),
        schedules=True,
    )
)
register_method(
    MethodSpec(
        name="polyak",
        summary="SGD momentum 0.9, evaluated at an EMA of its iterates (swa_utils)",
        kind="baseline",
        make_optimizer=_momentum,
        defaults={"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0},
        tunable=("lr",),
        base="momentum",
        schedules=True,
        averaging="ema",
    )
)
