"""Learning-rate-free (and schedule-free) optimizers from PyPI that lrkit compares against.

Each is an optional extra (``pip install 'lrkit[peers]'``) imported lazily inside its
factory, so ``import lrkit`` works without them; ``MethodSpec.requires`` names the import so
that ``spec.available`` is False when the package is missing. Defaults are the packages' own
(read from the installed sources: schedulefree 1.4.1, prodigyopt 1.1.2, dadaptation 3.2,
dog-optimizer 1.0.3). None takes an lrkit LR schedule.

* ``schedulefree_adamw`` — Schedule-Free AdamW (Defazio et al. 2024,
  ``schedulefree.AdamWScheduleFree``): no schedule, but still an LR (default 0.0025, tuned)
  and the linear warmup its authors recommend ("Using learning rate warmup is
  recommended"; they give no length): ``warmup_fraction`` = 5 % of the run's budget, so
  the factory needs the build context. Gradients are taken at
  y = (1 − β₁)·z + β₁·x and the weights to evaluate are x, so the optimizer must be in
  ``train()`` mode for steps and in ``eval()`` mode for evaluation (``train_eval_switch``);
  the factory calls ``train()`` right after construction.
* ``prodigy`` — Prodigy (Mishchenko & Defazio 2024, ``prodigyopt.Prodigy``): Adam whose step
  size d·lr is estimated online; ``lr`` = 1 is a multiplier its authors say to leave at 1
  (``d_coef`` is their knob), under the cosine annealing over the whole run that their
  README recommends (``default_schedule="cosine"``). All param groups must share one lr (or
  use lr 0).
* ``mechanic`` — Mechanic (Cutkosky, Defazio & Mehta 2023, ``mechanic_pytorch.mechanize``)
  around torch.optim.Adam with lr = 1: it learns the scale s of the base's updates online
  (effective LR s·lr); the closest peer to ``lrkit.L4(base)``.
* ``dadapt_adam`` — D-Adaptation Adam (Defazio & Mishchenko 2023, ``dadaptation.DAdaptAdam``),
  ``lr`` = 1 as a multiplier; the same single-lr restriction across param groups.
* ``dog`` — DoG, "Distance over Gradients" (Ivgi, Hinder & Carmon 2023, ``dog.DoG``):
  η_t = max_{i≤t} ‖x_i − x_0‖ / sqrt(Σ_{i≤t} ‖g_i‖² + ε), x_{t+1} = x_t − η_t·g_t, with the
  first distance r_ε = reps_rel·(1 + ‖x_0‖). Its authors require iterate averaging
  (:class:`DogAverager`); :func:`_dog` says how the averager must be used.

The effective LR each one applies is reported next to it here: d·lr for Prodigy and D-Adapt
Adam (:func:`d_adaptation_diagnostics`), DoG's η·lr (:func:`dog_diagnostics`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lrkit.methods.contract import BuildContext, Capabilities, learning_rate_diagnostics
from lrkit.methods.registry import MethodSpec, register_method


def d_adaptation_diagnostics(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``lr`` and ``effective_lr`` = d·lr: Prodigy and D-Adaptation keep their distance
    estimate d in each param group and step with d·lr."""
    values = learning_rate_diagnostics(optimizer)
    group = optimizer.param_groups[0]
    values["effective_lr"] = float(group["d"]) * float(group["lr"])
    return values


def dog_diagnostics(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``lr`` and ``effective_lr`` = η·lr of DoG's first parameter (its step size
    rbar/sqrt(G), a list ``eta`` in the group, filled at the first step)."""
    values = learning_rate_diagnostics(optimizer)
    group = optimizer.param_groups[0]
    eta = group.get("eta")
    if isinstance(eta, list) and eta:
        values["effective_lr"] = float(eta[0]) * float(group["lr"])
    return values


class DogAverager:
    """DoG's polynomial-decay iterate averaging (``dog.PolynomialDecayAverager``, γ = 8), as
    its authors require: x̄_t = (1 − (1 + γ)/(t + γ))·x̄_{t−1} + (1 + γ)/(t + γ)·x_t."""

    def __init__(self, model: nn.Module, total_steps: int) -> None:
        from dog import PolynomialDecayAverager

        self._average = PolynomialDecayAverager(model)

    def update(self) -> None:
        self._average.step()

    @property
    def averaged_model(self) -> nn.Module:
        return self._average.averaged_model

    def state_dict(self) -> dict[str, Any]:
        return self._average.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._average.load_state_dict(state_dict)


def _schedulefree_adamw(
    params, context: BuildContext, lr: float, weight_decay: float, warmup_fraction: float
) -> torch.optim.Optimizer:
    import schedulefree

    if not 0.0 <= warmup_fraction < 1.0:
        raise ValueError(f"warmup_fraction must be in [0, 1), got {warmup_fraction!r}")
    optimizer = schedulefree.AdamWScheduleFree(
        params,
        lr=lr,
        weight_decay=weight_decay,
        warmup_steps=round(warmup_fraction * context.total_steps),
    )
    optimizer.train()
    return optimizer


def _mechanic_adam(params, lr: float, weight_decay: float, s_decay: float):
    from mechanic_pytorch import mechanize

    return mechanize(torch.optim.Adam, s_decay=s_decay)(params, lr=lr, weight_decay=weight_decay)


def mechanic_diagnostics(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """``lr`` and ``effective_lr`` = s·lr, Mechanic's learned scale (the sum of its s values,
    kept in ``optimizer.state["_mechanic"]`` after the first step) times the base lr."""
    values = learning_rate_diagnostics(optimizer)
    state = optimizer.state.get("_mechanic")
    if state is not None:
        values["effective_lr"] = float(state["s"].sum()) * values["lr"]
    return values


def _prodigy(params, lr: float, weight_decay: float, d_coef: float) -> torch.optim.Optimizer:
    import prodigyopt

    return prodigyopt.Prodigy(params, lr=lr, weight_decay=weight_decay, d_coef=d_coef)


def _dadapt_adam(params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    import dadaptation

    return dadaptation.DAdaptAdam(params, lr=lr, weight_decay=weight_decay)


def _dog(params, lr: float, reps_rel: float, weight_decay: float) -> torch.optim.Optimizer:
    """``dog.DoG`` with the package defaults. Its iterate averaging (dog-optimizer README,
    "Usage"; the harness builds it through :class:`DogAverager`) is used like this:

    1. Build it on the *unwrapped* model (not a DistributedDataParallel wrapper), on the
       model's device, before training: ``averager = dog.PolynomialDecayAverager(model,
       gamma=8.0)`` (γ = 8 is the package default, which the authors say works out of the
       box). It deep-copies the model into ``averager.averaged_model`` and counts t from 1.
    2. Call ``averager.step()`` once after every ``optimizer.step()`` (never before the first):
       x̄_t = (1 − (1 + γ)/(t + γ))·x̄_{t−1} + (1 + γ)/(t + γ)·x_t (Shamir & Zhang 2013), so
       x̄_1 is the weights after the first step. Floating-point buffers (BatchNorm running
       statistics) are averaged the same way; integer buffers are copied.
    3. Evaluate ``averager.averaged_model``; keep training ``averager.base_model`` (the model).
    4. Checkpoint ``averager.state_dict()`` (t and the averaged weights) beside the
       optimizer's, and restore it with ``averager.load_state_dict``.
    """
    import dog

    return dog.DoG(params, lr=lr, reps_rel=reps_rel, weight_decay=weight_decay)


register_method(
    MethodSpec(
        name="schedulefree_adamw",
        summary="Schedule-Free AdamW (schedulefree): lr tuned, no schedule, train/eval switch",
        kind="peer",
        make_optimizer=_schedulefree_adamw,
        defaults={"lr": 0.0025, "weight_decay": 0.0, "warmup_fraction": 0.05},
        capabilities=Capabilities(build_context=True),
        tunable=("lr",),
        base="adamw",
        requires="schedulefree",
        train_eval_switch=True,
        paper="Defazio, Yang, Mehta, Mishchenko, Khaled, Cutkosky. The Road Less Scheduled. "
        "NeurIPS 2024",
    )
)
register_method(
    MethodSpec(
        name="prodigy",
        summary="Prodigy (prodigyopt): Adam with an estimated step size, lr = 1",
        kind="peer",
        make_optimizer=_prodigy,
        defaults={"lr": 1.0, "weight_decay": 0.0, "d_coef": 1.0},
        base="adam",
        requires="prodigyopt",
        diagnostics=d_adaptation_diagnostics,
        schedules=True,
        default_schedule="cosine",
        paper="Mishchenko, Defazio. Prodigy: An Expeditiously Adaptive Parameter-Free Learner. "
        "ICML 2024",
    )
)
register_method(
    MethodSpec(
        name="dadapt_adam",
        summary="D-Adaptation Adam (dadaptation), lr = 1",
        kind="peer",
        make_optimizer=_dadapt_adam,
        defaults={"lr": 1.0, "weight_decay": 0.0},
        base="adam",
        requires="dadaptation",
        diagnostics=d_adaptation_diagnostics,
        paper="Defazio, Mishchenko. Learning-Rate-Free Learning by D-Adaptation. ICML 2023",
    )
)
register_method(
    MethodSpec(
        name="dog",
        summary="DoG (dog-optimizer): distance over gradients, polynomial-decay averaging",
        kind="peer",
        make_optimizer=_dog,
        defaults={"lr": 1.0, "reps_rel": 1e-6, "weight_decay": 0.0},
        base="sgd",
        requires="dog",
        make_averager=DogAverager,
        diagnostics=dog_diagnostics,
        paper="Ivgi, Hinder, Carmon. DoG is SGD's Best Friend: A Parameter-Free Dynamic Step "
        "Size Schedule. ICML 2023",
    )
)
register_method(
    MethodSpec(
        name="mechanic",
        summary="Mechanic (mechanic-pytorch) around Adam, lr = 1: a learned update scale",
        kind="peer",
        make_optimizer=_mechanic_adam,
        defaults={"lr": 1.0, "weight_decay": 0.0, "s_decay": 0.01},
        base="adam",
        requires="mechanic_pytorch",
        diagnostics=mechanic_diagnostics,
        paper="Cutkosky, Defazio, Mehta. Mechanic: A Learning Rate Tuner. NeurIPS 2023",
    )
)
