"""L4(base): L4's step size over the update direction of any torch optimizer (composition,
Rolinek & Martius 2018, Sec. 2.2 — the rule needs only a direction v and a gradient estimate
g). The base's direction is read by :class:`lrkit.methods.probe.DirectionProbe`: the base's
own step at lr 1, including its momentum and weight decay."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from lrkit.methods.directions import lazy_state
from lrkit.methods.foreach import device_dtype_buckets, weighted_sum
from lrkit.methods.guards import (
    GradientBatch,
    check_hyperparameters,
    check_loss_and_gradients,
    gradients_by_group,
)
from lrkit.methods.l4.fused import FusedAdamDirection, check_fused_group
from lrkit.methods.l4.rule import EMA_BETA, L4_RULES, L4Rule, LossClosure
from lrkit.methods.loading import check_indexed, check_optimizer_state, without
from lrkit.methods.probe import (
    DirectionProbe,
    base_gradient_average,
    check_base_group,
    check_base_optimizer,
)
from lrkit.methods.wrapping import WrapsOptimizer, base_parameters, is_torch_optimizer

WRAPPER_RULES = {**L4_RULES, "grad_beta": EMA_BETA}


class L4(WrapsOptimizer, L4Rule):
    """L4 over the update direction of any torch optimizer.

    ``L4(torch.optim.SGD(params, lr=1.0, momentum=0.9, weight_decay=5e-4))`` uses the base
    optimizer's own update at learning rate 1 as v, including its momentum and weight decay,
    and sets w = w_before − η·v (see :mod:`lrkit.methods.probe`). The closure is called once,
    by L4, never by the base. g is L4's own bias-corrected EMA of the raw gradient (decay
    ``grad_beta``, paper time scale 10), so for a base with weight decay g·v includes
    −(decay)·(g·w) and may be ≤ 0: then the step is the safe step — the parameters return
    exactly to w_before, the base's state has advanced, ``skipped_steps`` counts it. Telling
    the two apart costs a second host synchronisation per step (after the base's step).

    The base's update must be proportional to its lr and its state independent of lr
    (SGD, Adam, AdamW, Adamax, NAdam, RAdam, RMSprop, Adagrad with lr_decay=0); LBFGS, Rprop,
    ASGD, SparseAdam, wrappers, maximize=True and Adagrad(lr_decay≠0) are refused, also in
    groups added or changed later. The base's lr values are not used (η replaces them), so an
    LR scheduler on the base has no effect.

    ``param_groups`` *is* the base's list; the L4 hyperparameters are global and live in
    ``l4_hparams`` (checked at every step). ``state_dict()`` is the base's state dict plus
    ``"l4"``; ``load_state_dict`` checks all of it — the base's class, groups, per-parameter
    state, L4's entry — before loading any of it.

    Args:
        base_optimizer: a built torch optimizer whose update is proportional to its lr.
        alpha: α, the fraction of the predicted loss decrease to take (0.15).
        gamma: γ, the fraction of L_min the step aims at (0.9).
        gamma0: γ0, the initial L_min as a fraction of the first loss (0.75).
        tau: τ, the steps over which L_min is forgotten (1000).
        epsilon: ε added to g·v (1e-12).
        grad_beta: the decay of L4's gradient EMA g (0.9); with Adam/AdamW bases whose
            betas[0] equals it, L4 reads the base's exp_avg instead of keeping its own.
        max_growth: optional cap c on η's growth per step; None keeps the paper's rule.
        all_reduce_loss: under torch.distributed, average the loss over ranks before use.
        fused: for a torch.optim.Adam or AdamW base, do the base's update in two kernels
            compiled with torch.compile instead of probing ``base.step()`` (same update and
            state; see :mod:`lrkit.methods.l4.fused`: the first step compiles).
    """

    _direction_kind = "wrapper"

    def __init__(
        self,
        base_optimizer: torch.optim.Optimizer,
        alpha: float = 0.15,
        gamma: float = 0.9,
        gamma0: float = 0.75,
        tau: float = 1000.0,
        epsilon: float = 1e-12,
        grad_beta: float = 0.9,
        *,
        max_growth: float | None = None,
        all_reduce_loss: bool = True,
        fused: bool = False,
    ) -> None:
        if isinstance(base_optimizer, L4Rule):
            raise ValueError(
                f"L4 needs a base optimizer that proposes a direction; "
                f"{type(base_optimizer).__name__} already sets its own step size with L4"
            )
        check_base_optimizer(base_optimizer, who="L4")
        hparams = dict(
            alpha=alpha,
            gamma=gamma,
            gamma0=gamma0,
            tau=tau,
            epsilon=epsilon,
            grad_beta=grad_beta,
            max_growth=max_growth,
        )
        check_hyperparameters(hparams, WRAPPER_RULES, where="L4")
        if not isinstance(fused, bool):
            raise TypeError(f"L4: fused must be True or False, got {fused!r}")
        if fused:
            for index, group in enumerate(base_optimizer.param_groups):
                check_fused_group(base_optimizer, group, index, grad_beta)
        self._fused: FusedAdamDirection | None = None
        super().__init__(base_parameters(base_optimizer), {}, all_reduce_loss)
        self._adopt(base_optimizer)
        self.l4_hparams: dict[str, Any] = hparams
        self._probe = DirectionProbe(base_optimizer)
        self._fused = FusedAdamDirection(base_optimizer) if fused else None

    def _check_added_group(self, group: dict[str, Any], index: int) -> None:
        check_base_group(self.base_optimizer, group, index, who="L4")
        if self._fused is not None:
            check_fused_group(self.base_optimizer, group, index, self.l4_hparams["grad_beta"])

    def _hparams(self) -> dict[str, Any]:
        """L4's hyperparameters and the base's groups, checked (they may have been changed
        since the last step)."""
        check_hyperparameters(self.l4_hparams, WRAPPER_RULES, where="L4 l4_hparams:")
        for index, group in enumerate(self.param_groups):
            check_base_group(self.base_optimizer, group, index, who="L4")
            if self._fused is not None:
                grad_beta = self.l4_hparams["grad_beta"]
                check_fused_group(self.base_optimizer, group, index, grad_beta)
        return dict(self.l4_hparams)

    def _alphas(self) -> list[float]:
        return [self.l4_hparams["alpha"]] * len(self.param_groups)

    @torch.no_grad()
    def step(self, closure: LossClosure | None = None, *, loss: Any = None) -> Any:
        """One L4 step over the base's direction; the loss comes from ``closure`` (called
        once, with gradients enabled) or ``loss`` (gradients already in ``.grad``)."""
        hparams = self._hparams()
        returned, l4_loss = self._resolve(closure, loss)
        batch = gradients_by_group(self.param_groups, who="L4")
        largest = check_loss_and_gradients(
            l4_loss,
            batch.flat_grads(),
            who="L4",
            describe=batch.describe(self.param_groups),
            nonnegative=True,
        )
        device = l4_loss.device
        if self._fused is not None:
            self._fused_step(l4_loss, batch, hparams, device)
            return returned
        self._probe.run()
        params, estimates, weights = self._gradient_estimates(batch, largest, hparams["grad_beta"])
        grad_dot_direction = weighted_sum(self._probe.dots(estimates, params), weights, device)
        l_min_used, per_alpha, usable = self._step_size(l4_loss, grad_dot_direction, hparams)
        finite, take = torch.stack([torch.isfinite(grad_dot_direction), usable]).tolist()
        if not finite:  # the fast sum left the reduction dtype's range: redo it in float64
            exact = self._probe.exact_dots(estimates, params)
            grad_dot_direction = weighted_sum(exact, weights, device)
            l_min_used, per_alpha, usable = self._step_size(l4_loss, grad_dot_direction, hparams)
            take = bool(usable)
        self._probe.finish(per_alpha * hparams["alpha"] if take else None)
        self._record(l4_loss, l_min_used, per_alpha, usable, grad_dot_direction, hparams)
        return returned

    def _fused_step(
        self, l4_loss: Tensor, batch: GradientBatch, hparams: dict[str, Any], device: Any
    ) -> None:
        """The step of ``fused=True``: the base's moments, ĝ·v and w ← w − η·v in compiled
        kernels; ĝ = the base's m/(1 − β^t), t L4's own step count (as the probe path)."""
        params, products = self._fused.dots(batch.params, batch.grads)
        for param in params:
            self.state[param].pop("grad_avg", None)  # ĝ is the base's m from now on
        beta = hparams["grad_beta"]
        weights = [1.0 / (1.0 - beta**t) for t in lazy_state(self.state, params, ())]
        grad_dot_direction = weighted_sum(products, weights, device)
        l_min_used, per_alpha, usable = self._step_size(l4_loss, grad_dot_direction, hparams)
        finite, take = torch.stack([torch.isfinite(grad_dot_direction), usable]).tolist()
        try:
            self._fused.finish(per_alpha * hparams["alpha"] if finite and take else None)
        except RuntimeError:  # the second kernel did not compile: the weights did not move
            self._record(
                l4_loss,
                l_min_used,
                per_alpha,
                torch.zeros_like(usable),
                grad_dot_direction,
                hparams,
            )
            raise
        self._record(l4_loss, l_min_used, per_alpha, usable, grad_dot_direction, hparams)

    def _gradient_estimates(
        self, batch: GradientBatch, largest: float, beta: float
    ) -> tuple[list[Tensor], list[Tensor], list[float]]:
        """g = m̂ for every parameter with a gradient, as (parameters, EMA tensors, weights):
        ĝ_i = weights[i]·tensors[i]. The base's own EMA where it keeps one with decay β
        (:func:`~lrkit.methods.probe.base_gradient_average`: Adam, AdamW), weight
        1/(1 − β^t); else L4's, kept at the buffers' scale 2^-e, weight 2^e/(1 − β^t). A
        parameter that switches to L4's own EMA (its base group changed) starts it afresh."""
        base = self.base_optimizer
        own_params, own_grads, read_params, read_averages = [], [], [], []
        for group, params, grads in zip(self.param_groups, batch.params, batch.grads, strict=True):
            name = base_gradient_average(base, group, beta)
            for param, grad in zip(params, grads, strict=True):
                if name is not None and "grad_avg" not in self.state[param]:
                    read_params.append(param)
                    read_averages.append(base.state[param][name])
                    continue
                if "grad_avg" not in self.state[param]:
                    self.state[param].clear()
                own_params.append(param)
                own_grads.append(grad)
        shift = self._scale.update(largest, {g.dtype for g in own_grads}, [beta])
        self._scale.rescale_(self.state.values(), shift, ("grad_avg",))
        own_steps = lazy_state(self.state, own_params, ("grad_avg",))
        averages = [self.state[p]["grad_avg"] for p in own_params]
        scaled = self._scale.scaled(own_grads, owned=False)
        for bucket in device_dtype_buckets(own_params):
            torch._foreach_lerp_(
                [averages[i] for i in bucket], [scaled[i] for i in bucket], 1 - beta
            )
        read_steps = lazy_state(self.state, read_params, ())
        weights = [self._scale.factor / (1.0 - beta**t) for t in own_steps]
        weights += [1.0 / (1.0 - beta**t) for t in read_steps]
        return own_params + read_params, averages + read_averages, weights

    def state_dict(self) -> dict[str, Any]:
        """The base's state dict plus ``"l4"``: L4's scalars (step, L_min, last η/α, envelope,
        g·v, loss, skipped steps), the buffers' scale, the base's class, L4's hyperparameters
        and the gradient EMAs by parameter index."""
        saved = self._l4_state_dict()
        saved["base"] = self.base_class_name()
        saved["hparams"] = dict(self.l4_hparams)
        saved["grad_avgs"] = {
            index: dict(self.state[p])
            for index, p in enumerate(base_parameters(self.base_optimizer))
            if p in self.state
        }
        return {**self.base_optimizer.state_dict(), "l4": saved}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Loads what :meth:`state_dict` saved over the same kind of base, after checking all
        of it (ValueError, nothing changed)."""
        entry = self._checked_l4_entry(
            state_dict, "L4", ("hparams", "grad_avgs"), base=self.base_class_name()
        )
        check_hyperparameters(entry["hparams"], WRAPPER_RULES, where="L4.load_state_dict: saved")
        rest = without(state_dict, "l4")
        base = self.base_optimizer
        check_optimizer_state(base, rest, who="L4", tensor_shapes=is_torch_optimizer(base))
        groups = zip(rest["param_groups"], base.param_groups, strict=True)
        for index, (saved, group) in enumerate(groups):
            check_base_group(base, {**saved, "params": group["params"]}, index, who="L4")
        params = base_parameters(base)
        averages = entry["grad_avgs"]
        check_indexed(
            averages,
            params,
            who="L4",
            what="gradient averages",
            tensors=("grad_avg",),
            counts="step",
        )
        base.load_state_dict(rest)
        self._load_l4_entry(entry)
        self.l4_hparams = dict(entry["hparams"])
        self.state.clear()
        for index, saved in averages.items():
            param: Tensor = params[index]
            self.state[param] = {"step": saved["step"]}
            if "grad_avg" in saved:
                average = saved["grad_avg"].to(device=param.device, dtype=param.dtype).clone()
                self.state[param]["grad_avg"] = average
