"""L4Adam and L4Mom: L4's step size over Adam and momentum directions computed by L4 itself
(Rolinek & Martius 2018, Sec. 2.5, Eq. 7), with one global η from one dot product over all
parameters of all groups. See :mod:`lrkit.methods.l4` for the rule and the choices made."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lrkit.methods.directions import (
    Directions,
    adam_directions,
    apply_directions_,
    lazy_state,
    momentum_directions,
)
from lrkit.methods.foreach import device_dtype_buckets, squared_norms, sum_scalars, use_foreach
from lrkit.methods.guards import (
    Flag,
    Interval,
    Pair,
    check_dense_real,
    check_loss_and_gradients,
    check_param_groups,
    gradients_by_group,
)
from lrkit.methods.l4.rule import (
    EMA_BETA,
    GLOBAL_HPARAMS,
    L4_RULES,
    WEIGHT_DECAY,
    L4Rule,
    LossClosure,
)
from lrkit.methods.loading import check_optimizer_state, without

# ------------------------------------------------------------------------- L4Adam and L4Mom


class _L4Direct(L4Rule):
    """L4 with its own direction kernels (L4Adam, L4Mom): moments and g·v per group and
    bucket, η from the global g·v, then w ← w − η·v; per-group hyperparameters checked at
    every step."""

    _FIRST: tuple[str, ...] = ("exp_avg",)
    _SECOND: tuple[str, ...] = ()
    _RULES: dict[str, Any] = {}

    def _check_groups(self, groups: Sequence[dict[str, Any]]) -> dict[str, Any]:
        rules = {**L4_RULES, **self._RULES, "foreach": Flag("multi-tensor kernels")}
        return check_param_groups(groups, rules, shared=GLOBAL_HPARAMS, who="L4")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        try:
            for index, param in enumerate(self.param_groups[-1]["params"]):
                check_dense_real(param, None, who="L4", label=f"parameter {index} of the new group")
            self._check_groups(self.param_groups)
        except (ValueError, TypeError):
            self.param_groups.pop()
            raise

    def _betas(self, group: dict[str, Any]) -> tuple[float, float]:
        raise NotImplementedError

    def _group_directions(
        self, group: dict[str, Any], params: list[Tensor], grads: list[Tensor], foreach: bool
    ) -> Directions:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: LossClosure | None = None, *, loss: Any = None) -> Any:
        """One L4 step. The loss comes from ``closure`` (called once, with gradients enabled;
        it zeroes the gradients, computes the loss, calls backward() and returns the loss) or
        from ``loss`` (gradients already in ``.grad``). Returns that loss. Refuses before
        anything changes (see the module docstring)."""
        hparams = self._check_groups(self.param_groups)
        returned, l4_loss = self._resolve(closure, loss)
        batch = gradients_by_group(self.param_groups, who="L4")
        grads_by_group, l2_terms, device = [], [], l4_loss.device
        for group, params, grads in zip(self.param_groups, batch.params, batch.grads, strict=True):
            if params and group["weight_decay"] != 0.0:  # L + (wd/2)·|w|², g + wd·w
                l2_terms.append(0.5 * group["weight_decay"] * squared_norms(params).sum())
                grads = torch._foreach_add(grads, params, alpha=group["weight_decay"])
            grads_by_group.append(grads)
        if l2_terms:
            l4_loss = l4_loss + sum_scalars(l2_terms, device)
        flat_grads = [g for grads in grads_by_group for g in grads]
        largest = check_loss_and_gradients(
            l4_loss,
            flat_grads,
            who="L4",
            describe=batch.describe(self.param_groups),
            nonnegative=True,
        )
        # Nothing has changed so far; from here on nothing raises.
        betas = [
            self._betas(group)
            for group, params in zip(self.param_groups, batch.params, strict=True)
            if params
        ]
        dtypes = {g.dtype for g in flat_grads}
        shift = self._scale.update(
            largest, dtypes, [b[0] for b in betas], [b[1] for b in betas] if self._SECOND else ()
        )
        self._scale.rescale_(self.state.values(), shift, self._FIRST, self._SECOND)
        pending, dots = [], []
        for group_index, group in enumerate(self.param_groups):
            params = batch.params[group_index]
            if not params:
                continue
            owned = group["weight_decay"] != 0.0
            grads = self._scale.scaled(grads_by_group[group_index], owned=owned)
            foreach = use_foreach(group["foreach"], params)
            for bucket in device_dtype_buckets(params):
                bucket_params = [params[i] for i in bucket]
                lazy_state(self.state, bucket_params, self._FIRST + self._SECOND)
                directions = self._group_directions(
                    group, bucket_params, [grads[i] for i in bucket], foreach
                )
                dots.append(directions.grad_dot_direction)
                pending.append((group["alpha"], bucket_params, directions, foreach))
        grad_dot_direction = sum_scalars(dots, device)
        l_min_used, per_alpha, usable = self._step_size(l4_loss, grad_dot_direction, hparams)
        for alpha, params, directions, foreach in pending:
            scaled = directions._replace(scales=[alpha * s for s in directions.scales])
            apply_directions_(params, scaled, per_alpha.to(params[0].device), foreach=foreach)
        self._record(l4_loss, l_min_used, per_alpha, usable, grad_dot_direction, hparams)
        return returned

    def state_dict(self) -> dict[str, Any]:
        """torch's state dict (moment buffers, param groups) plus ``"l4"``: the step count,
        L_min, the last η/α, the envelope, g·v, loss, the skipped-step counter and the
        buffers' scale."""
        return {**super().state_dict(), "l4": self._l4_state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads a state dict saved by the same class, after checking all of it (ValueError,
        nothing changed): the ``"l4"`` entry and its direction, the group count, sizes and
        hyperparameters (their keys and values), the per-parameter buffers and shapes."""
        who = type(self).__name__
        entry = self._checked_l4_entry(state_dict, who)
        rest = without(state_dict, "l4")
        keys = [key for key in self.defaults if key != "params"]
        per_parameter = {"step": False, **dict.fromkeys(self._FIRST + self._SECOND, True)}
        check_optimizer_state(
            self, rest, who=who, hyperparameters=keys, per_parameter=per_parameter
        )
        self._check_groups(rest["param_groups"])
        super().load_state_dict(rest)
        self._load_l4_entry(entry)


class L4Adam(_L4Direct):
    """L4 step size over Adam directions (paper Sec. 2.5, "L4Adam").

    v = m̂ / (sqrt(û) + ``adam_epsilon``) with m̂, û Adam's bias-corrected moments
    (``betas``, time scales 10 and 1000), g = m̂, and η = α·(L − γ·L_min)/(g·v + ε); see the
    module docstring for the full rule and the choices made. The paper's Adam epsilon 1e-4
    sits outside the square root, as in torch.optim.Adam, so L4(Adam(eps=1e-4)) takes the
    same steps (up to rounding). ``weight_decay`` is an L2 term in the loss L4 sees. Per
    group: alpha, betas, adam_epsilon, weight_decay, foreach; γ, γ0, τ, ε and ``max_growth``
    are global. ``foreach=None`` uses multi-tensor kernels on CPU, CUDA and XPU.

    Args:
        params: the parameters or param groups to optimise.
        alpha: α, the fraction of the predicted loss decrease to take (paper: 0.15; 0.25
            also works for Adam directions).
        gamma: γ, the fraction of L_min the step aims at (0.9).
        gamma0: γ0, the initial L_min as a fraction of the first loss (0.75).
        tau: τ, the steps over which L_min is forgotten (L_min ← L_min·(1 + 1/τ)), 1000.
        epsilon: ε added to g·v (1e-12).
        betas: Adam's moment decays (0.9, 0.999).
        adam_epsilon: added to sqrt(û) (paper: 1e-4).
        weight_decay: an L2 term in the loss L4 sees.
        foreach: multi-tensor kernels (None: where the device supports them).
        max_growth: optional cap c on η's growth per step (η_t ≤ c·η̄_(t−1)); None keeps the
            paper's rule.
        all_reduce_loss: under torch.distributed, average the loss over ranks before use
            (every rank computes the same η).
    """

    _direction_kind = "adam"
    _SECOND = ("exp_avg_sq",)
    _RULES = {
        "betas": Pair(EMA_BETA, Interval("squared-gradient EMA decay", 0.0, 1.0, high_open=True)),
        "adam_epsilon": Interval("added to sqrt(û)", 0.0, low_open=True, hint="paper: 1e-4"),
        "weight_decay": WEIGHT_DECAY,
    }

    def __init__(
        self,
        params: Any,
        alpha: float = 0.15,
        gamma: float = 0.9,
        gamma0: float = 0.75,
        tau: float = 1000.0,
        epsilon: float = 1e-12,
        betas: tuple[float, float] = (0.9, 0.999),
        adam_epsilon: float = 1e-4,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        *,
        max_growth: float | None = None,
        all_reduce_loss: bool = True,
    ) -> None:
        defaults = dict(
            alpha=alpha,
            gamma=gamma,
            gamma0=gamma0,
            tau=tau,
            epsilon=epsilon,
            max_growth=max_growth,
            betas=tuple(betas),
            adam_epsilon=adam_epsilon,
            weight_decay=weight_decay,
            foreach=foreach,
        )
        super().__init__(params, defaults, all_reduce_loss)

    def _betas(self, group: dict[str, Any]) -> tuple[float, float]:
        return tuple(group["betas"])

    def _group_directions(self, group, params, grads, foreach) -> Directions:
        beta1, beta2 = group["betas"]
        return adam_directions(
            grads,
            [self.state[p]["exp_avg"] for p in params],
            [self.state[p]["exp_avg_sq"] for p in params],
            [self.state[p]["step"] for p in params],
            beta1=beta1,
            beta2=beta2,
            adam_epsilon=group["adam_epsilon"],
            factor=self._scale.factor,
            foreach=foreach,
        )


class L4Mom(_L4Direct):
    """L4 step size over momentum directions (paper Sec. 2.5, "L4Mom").

    v = g = m̂, the bias-corrected EMA of the gradient with decay ``beta`` (time scale 10),
    so g·v = |m̂|² > 0 unless the gradient estimate is zero, and
    η = α·(L − γ·L_min)/(|m̂|² + ε). Per group: alpha, beta, weight_decay (L2 in the
    loss), foreach; γ, γ0, τ, ε and ``max_growth`` are global. See the module docstring.

    Args:
        params: the parameters or param groups to optimise.
        alpha: α, the fraction of the predicted loss decrease to take (paper: 0.15; 0.25
            also works for Adam directions).
        gamma: γ, the fraction of L_min the step aims at (0.9).
        gamma0: γ0, the initial L_min as a fraction of the first loss (0.75).
        tau: τ, the steps over which L_min is forgotten (L_min ← L_min·(1 + 1/τ)), 1000.
        epsilon: ε added to g·v (1e-12).
        beta: the gradient EMA's decay (0.9).
        weight_decay: an L2 term in the loss L4 sees.
        foreach: multi-tensor kernels (None: where the device supports them).
        max_growth: optional cap c on η's growth per step (η_t ≤ c·η̄_(t−1)); None keeps the
            paper's rule.
        all_reduce_loss: under torch.distributed, average the loss over ranks before use
            (every rank computes the same η).
    """

    _direction_kind = "momentum"
    _RULES = {"beta": EMA_BETA, "weight_decay": WEIGHT_DECAY}

    def __init__(
        self,
        params: Any,
        alpha: float = 0.15,
        gamma: float = 0.9,
        gamma0: float = 0.75,
        tau: float = 1000.0,
        epsilon: float = 1e-12,
        beta: float = 0.9,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        *,
        max_growth: float | None = None,
        all_reduce_loss: bool = True,
    ) -> None:
        defaults = dict(
            alpha=alpha,
            gamma=gamma,
            gamma0=gamma0,
            tau=tau,
            epsilon=epsilon,
            max_growth=max_growth,
            beta=beta,
            weight_decay=weight_decay,
            foreach=foreach,
        )
        super().__init__(params, defaults, all_reduce_loss)

    def _betas(self, group: dict[str, Any]) -> tuple[float, float]:
        return group["beta"], 0.0

    def _group_directions(self, group, params, grads, foreach) -> Directions:
        return momentum_directions(
            grads,
            [self.state[p]["exp_avg"] for p in params],
            [self.state[p]["step"] for p in params],
            beta=group["beta"],
            factor=self._scale.factor,
            foreach=foreach,
        )
