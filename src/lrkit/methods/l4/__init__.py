"""L4: loss-based step size adaptation (Rolinek & Martius, "L4: Practical loss-based stepsize
adaptation for deep learning", NeurIPS 2018), as torch optimizers.

Per step, with the mini-batch loss L ≥ 0 (paper Sec. 2.2-2.5, Algorithm 1; defaults as in the
paper and the authors' TensorFlow code, martius-lab/l4-optimizer ``L4/L4.py``):

1. L_min ← γ0·L at the first step, afterwards L_min ← min(L_min, L)          (Sec. 2.4)
2. g = m̂, the bias-corrected EMA of the gradient with time scale 10 (β = 0.9)  (Eq. 7)
3. v = the update direction of the base rule                                  (Eq. 7)
     L4Adam: v = m̂ / (sqrt(û) + ε_a), û the bias-corrected EMA of g² (β2 = 0.999), ε_a = 1e-4
     L4Mom:  v = m̂, so g·v = |m̂|²
     L4(base_optimizer): v = the base optimizer's own update at learning rate 1
4. η = α·(L − γ·L_min) / (g·v + ε), one global η from one dot product over all
   parameters of all groups                                                   (Eq. 6)
5. w ← w − η·v
6. L_min ← (1 + 1/τ)·L_min, after the step                                   (Eq. 5)

Defaults: α = 0.15, γ = 0.9, γ0 = 0.75, τ = 1000, ε = 1e-12. docs/l4.md gives the reasons for
the choices below.

* Safe step: where g·v is not a finite positive number, or η is not finite, η = 0 and the
  parameters stay exactly where they were; the moments (and a base's state) advance, L_min
  is updated and forgotten, ``skipped_steps`` counts it.
* ``max_growth`` = c (off by default, the paper's rule): η_t ≤ c·η̄_{t−1}, the envelope
  η̄_t = max(η_t, η̄_{t−1}/c) of recent step sizes — η may fall and come back freely, but
  rise above its recent range by a factor c per step at most.
* Before anything changes, ``step`` refuses (changing nothing): an out-of-range
  hyperparameter, also one set later through ``param_groups``; a negative loss
  (ValueError); a NaN/inf loss or gradient (FloatingPointError). One host synchronisation per
  step (L4Adam/L4Mom); ``L4(base)`` has a second one, after the base's step, to decide
  between the step and the exact restore of a safe step.
* Scalars (L, L_min, g·v, η) are float64; the moment buffers have the parameter's dtype and
  are stored scaled by a power of two when the gradients leave its range
  (:mod:`lrkit.methods.scaling`), so that the rule stays invariant to the loss's scale
  (Sec. 2.3) from 1e-30 to 1e30 in float32.
* L4Adam/L4Mom weight decay is an L2 term inside the loss L4 sees (L + wd/2·|w|², g + wd·w);
  α may differ per group (η_group = α_group·η/α); γ, γ0, τ, ε, max_growth are global.
* DDP: with ``all_reduce_loss`` (default) the loss is averaged over ranks before use.
"""

from typing import Any

import torch

from lrkit.methods.l4.direct import L4Adam, L4Mom
from lrkit.methods.l4.rule import (
    forget_l_min,
    l4_step_size,
    limit_growth,
    linearised_step_size,
    next_envelope,
    update_l_min,
    usable_step,
)
from lrkit.methods.l4.wrapper import L4
from lrkit.methods.registry import MethodSpec, register_method

__all__ = [
    "L4",
    "L4Adam",
    "L4Mom",
    "forget_l_min",
    "l4_step_size",
    "limit_growth",
    "linearised_step_size",
    "next_envelope",
    "update_l_min",
    "usable_step",
]

# --------------------------------------------------------------------------------- registry

L4_DEFAULTS: dict[str, Any] = {
    "alpha": 0.15,
    "gamma": 0.9,
    "gamma0": 0.75,
    "tau": 1000.0,
    "epsilon": 1e-12,
}
PAPER = "Rolinek & Martius 2018, Sec. 2"

register_method(
    MethodSpec(
        name="l4adam",
        summary=(
            "L4 over Adam directions: η = α(L − γ·L_min)/(g·v + ε) recomputed every step "
            "from the loss; paper defaults, no LR to tune"
        ),
        kind="lrkit",
        make_optimizer=L4Adam,
        defaults={**L4_DEFAULTS, "betas": (0.9, 0.999), "adam_epsilon": 1e-4, "weight_decay": 0.0},
        tunable=("alpha",),
        base="adam",
        paper=PAPER,
    )
)
register_method(
    MethodSpec(
        name="l4mom",
        summary=(
            "L4 over momentum directions (v = g = bias-corrected gradient EMA): "
            "η = α(L − γ·L_min)/(|g|² + ε); paper defaults, no LR to tune"
        ),
        kind="lrkit",
        make_optimizer=L4Mom,
        defaults={**L4_DEFAULTS, "beta": 0.9, "weight_decay": 0.0},
        tunable=("alpha",),
        base="momentum",
        paper=PAPER,
    )
)
WRAPPER_SUMMARIES = {
    "l4_adam_wrapper": (
        "L4(torch.optim.Adam(eps=1e-4)): L4's step size over the base's own update at lr 1, "
        "the wrapper's cost against Adam"
    ),
    "l4_adam_wrapper_fused": (
        "L4(torch.optim.Adam(eps=1e-4), fused=True): the same update as l4_adam_wrapper, "
        "Adam's moments and L4's step in two torch.compile kernels (the first step compiles)"
    ),
}


def _l4_over_adam(fused: bool) -> Any:
    """The factory of L4(torch.optim.Adam(eps=1e-4)) with or without ``fused``."""

    def make(params: Any, **hparams: Any) -> L4:
        base = torch.optim.Adam(params, eps=1e-4, foreach=None if fused else True)
        return L4(base, fused=fused, **hparams)

    return make


for _name, _fused in (("l4_adam_wrapper", False), ("l4_adam_wrapper_fused", True)):
    register_method(
        MethodSpec(
            name=_name,
            summary=WRAPPER_SUMMARIES[_name],
            kind="lrkit",
            make_optimizer=_l4_over_adam(_fused),
            defaults={**L4_DEFAULTS, "grad_beta": 0.9},
            tunable=("alpha",),
            base="adam",
            paper=PAPER,
        )
    )
