"""Tuned baselines from torch.optim: SGD, momentum, Adam, AdamW, NAdamW and Polyak averaging.

``nadamw`` is ``torch.optim.NAdam`` with decoupled weight decay under a linear warmup (5 % of
the budget) and cosine decay: the calibrated baseline of the AlgoPerf benchmark, where
learning-rate-free methods are judged.

Each takes ``lr`` (tuned by the suites' log grids) and the harness adds an LR schedule
(``schedule`` hyperparameter, :mod:`lrkit.methods.schedules`). ``polyak`` is SGD with
momentum whose evaluated weights are an exponential moving average of the iterates
(``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``; the decay gives an
averaging window of a tenth of the budget, :func:`ema_decay_for_budget`).
Lookahead lives in :mod:`lrkit.methods.lookahead`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lrkit.methods.registry import MethodSpec, register_method

BASELINE_SUMMARY_SUFFIX = "; lr tuned on a log grid, schedule constant/multistep/exponential/sgdr"


def ema_decay_for_budget(total_steps: int) -> float:
    """Polyak EMA decay with an averaging window of about a tenth of the run:
    ``1 − 1/max(10, T/10)``. A fixed 0.999 would leave a short run's average near its
    initialisation."""
    return 1.0 - 1.0 / max(10, total_steps // 10)


class EmaAverager:
    """Polyak averaging as an exponential moving average of the iterates and buffers
    (``torch.optim.swa_utils.AveragedModel`` with ``get_ema_multi_avg_fn``)."""

    def __init__(self, model: nn.Module, total_steps: int) -> None:
        self._average = AveragedModel(
            model,
            multi_avg_fn=get_ema_multi_avg_fn(ema_decay_for_budget(total_steps)),
            use_buffers=True,
        )
        self._model = model

    def update(self) -> None:
        self._average.update_parameters(self._model)

    @property
    def averaged_model(self) -> nn.Module:
        return self._average.module

    def state_dict(self) -> dict[str, Any]:
        return self._average.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._average.load_state_dict(state_dict)


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


def _nadamw(params, lr: float, weight_decay: float, betas: tuple[float, float]):
    return torch.optim.NAdam(
        params,
        lr=lr,
        betas=tuple(betas),
        weight_decay=weight_decay,
        decoupled_weight_decay=True,
        foreach=True,
    )


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
        name="nadamw",
        summary="NAdam with decoupled weight decay and warmup + cosine decay: AlgoPerf's "
        "calibrated baseline; lr tuned",
        kind="baseline",
        make_optimizer=_nadamw,
        defaults={"lr": 1e-3, "weight_decay": 1e-2, "betas": (0.9, 0.999)},
        tunable=("lr",),
        schedules=True,
        default_schedule="warmup_cosine",
        paper="Dahl et al. Benchmarking Neural Network Training Algorithms (AlgoPerf), 2023",
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
        make_averager=EmaAverager,
    )
)
