"""``HD(base_optimizer)``: Baydin et al.'s hypergradient descent of the learning rate over
any torch optimizer whose update is proportional to its learning rate, composed like
``L4(base)`` and reading the base's direction with the same probe (:mod:`lrkit.methods.l4`).

Each step: snapshot w, run ``base_optimizer.step()`` with every group's lr temporarily 1
(restored afterwards, also on error), read u_t = w_before − w_after, then

    h_t = −g_t·u_{t−1},   η_t = max(η_{t−1} − β·h_t, 0),   w_{t+1} = w_t − η_t·u_t

with g_t the gradient of the loss in ``.grad``. One global η (the bases' groups must then
share one lr, which is η0), or with ``per_group=True`` one η per param group (each group's
lr is its η0; h is that group's dot product). The bases' lr values stay as they are and are
not used after η0 is read, so an LR scheduler on the base has no effect.
``HD(torch.optim.SGD(params, lr=η0))`` takes the steps of ``HDSGD(params, lr=η0)`` and
``HD(torch.optim.Adam(params, lr=η0))`` those of ``HDAdam``, up to the rounding of
u = w_before − w_after.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from lrkit.methods.hypergradient.common import flat_dot, raise_if_non_finite, scalar_dtype
from lrkit.methods.hypergradient.hd import _HypergradientDescent
from lrkit.methods.hypergradient.marthe import MARTHE
from lrkit.methods.hypergradient.rules import descend_learning_rate
from lrkit.methods.l4.rule import L4Rule
from lrkit.methods.loading import check_indexed, check_optimizer_state, check_own_entry, without
from lrkit.methods.probe import (
    PROBE_LR,
    UNSUPPORTED_BASES,
    restore_learning_rates,
    set_learning_rates,
)
from lrkit.methods.wrapping import WrapsOptimizer, base_parameters

LossClosure = Callable[[], Any]


def _check_base(base_optimizer: Any) -> None:
    if not isinstance(base_optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"HD wraps a torch.optim.Optimizer instance, got {type(base_optimizer).__name__}; "
            "build the base first, e.g. HD(torch.optim.SGD(model.parameters(), lr=1e-3), ...)"
        )
    name = type(base_optimizer).__name__
    if isinstance(base_optimizer, _HypergradientDescent | L4Rule | MARTHE | HD):
        raise ValueError(f"HD needs a base that takes a learning rate; {name} sets its own")
    for unsupported, reason in UNSUPPORTED_BASES.items():
        if isinstance(base_optimizer, unsupported):
            raise ValueError(
                f"HD cannot wrap {name}: {reason}. HD reads the base's direction as its "
                "update at lr 1, which needs an update proportional to lr"
            )
    for index, group in enumerate(base_optimizer.param_groups):
        if "lr" not in group:
            raise ValueError(f"param group {index} of {name} has no 'lr' (HD reads η0 there)")
        if group.get("maximize", False):
            raise ValueError(f"param group {index} of {name} has maximize=True; HD minimises")


class HD(WrapsOptimizer, torch.optim.Optimizer):
    """Hypergradient descent of the learning rate over ``base_optimizer`` (module docstring).

    Args:
        base_optimizer: the torch optimizer whose direction is used (SGD, momentum, Adam,
            AdamW, RMSprop, ...; the same bases as ``L4(base)``).
        hypergrad_lr: β. Baydin et al. use 1e-3 over SGD and 1e-7 over Adam; the scale of
            h follows the scale of the base's direction, so there is no default.
        per_group: one η per param group instead of one global η.

    ``param_groups`` *is* the base's list. ``state_dict()`` is the base's plus ``"hd"``.
    """

    def __init__(
        self, base_optimizer: torch.optim.Optimizer, hypergrad_lr: float, *, per_group: bool = False
    ) -> None:
        _check_base(base_optimizer)
        if not hypergrad_lr >= 0.0:
            raise ValueError(f"HD hypergrad_lr (β) must be >= 0, got {hypergrad_lr!r}")
        super().__init__(base_parameters(base_optimizer), {})
        self._adopt(base_optimizer)
        self.hypergrad_lr = float(hypergrad_lr)
        self.per_group = bool(per_group)
        self._scalars: dict[str, Any] = {"step": 0, "learning_rates": [], "hypergradients": None}
        self._groups_read = 0
        self._learning_rates()

    def _learning_rates(self) -> list[Tensor]:
        """η per group (``per_group``) or one η; η0 is read from groups added since the last
        call (with one global η they must share group 0's lr)."""
        groups = self.param_groups
        rates = self._scalars["learning_rates"]
        params = base_parameters(self.base_optimizer)
        for index in range(self._groups_read, len(groups)):
            lr = float(groups[index]["lr"])
            if self.per_group or not rates:
                rates.append(torch.tensor(lr, dtype=scalar_dtype(params), device=params[0].device))
            elif lr != float(groups[0]["lr"]):
                raise ValueError(
                    f"HD with one global η reads η0 from the base's lr, but group {index} has "
                    f"lr={lr!r} and group 0 lr={float(groups[0]['lr'])!r}; give the groups one "
                    "lr or use per_group=True"
                )
        self._groups_read = len(groups)
        return rates

    @property
    def learning_rates(self) -> list[Tensor]:
        """η of each group (``per_group``) or the one global η, as 0-dim tensors."""
        return list(self._scalars["learning_rates"])

    @torch.no_grad()
    def step(self, closure: LossClosure | None = None) -> Any:
        """One step; the closure (zero_grad, loss, backward, return loss) is called once by
        HD, never by the base. Returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        step = self._scalars["step"] + 1
        rates = self._learning_rates()
        dtype = rates[0].dtype
        dots: list[list[Tensor]] = [[] for _ in rates]
        checked: list[Tensor] = []
        for index, group in enumerate(self.param_groups):
            slot = index if self.per_group else 0
            for param in group["params"]:
                state = self.state.get(param)
                if param.grad is None:
                    continue
                if state and state["direction_step"] == step - 1:
                    dots[slot].append(flat_dot([param.grad], [state["previous_direction"]], dtype))
                else:
                    checked.append(param.grad.sum().to(dtype))
        hypergradients = [
            -torch.stack(d).sum() if d else torch.zeros((), dtype=dtype, device=r.device)
            for d, r in zip(dots, rates, strict=True)
        ]
        new_rates = [
            descend_learning_rate(r, h, self.hypergrad_lr)
            for r, h in zip(rates, hypergradients, strict=True)
        ]
        checked += hypergradients + new_rates
        if loss is not None:
            checked.append(torch.as_tensor(loss).detach().reshape(-1)[0].to(dtype))
        if not bool(torch.isfinite(torch.stack([c.to(rates[0].device) for c in checked])).all()):
            grads = [p.grad for p in base_parameters(self.base_optimizer) if p.grad is not None]
            value = torch.zeros(()) if loss is None else torch.as_tensor(loss).detach()
            raise_if_non_finite("HD", value.reshape(-1)[0], grads, scalars={"η": new_rates[0]})
        self._probe_and_step(step, new_rates)
        self._scalars.update(step=step, learning_rates=new_rates, hypergradients=hypergradients)
        return loss

    def _probe_and_step(self, step: int, rates: list[Tensor]) -> None:
        params = base_parameters(self.base_optimizer)
        with_grad = {id(p) for p in params if p.grad is not None}
        before = [p.detach().clone() for p in params]
        saved = set_learning_rates(self.param_groups, PROBE_LR)
        try:
            self.base_optimizer.step()
        except BaseException:
            for param, value in zip(params, before, strict=True):
                param.copy_(value)
            raise
        finally:
            restore_learning_rates(self.param_groups, saved)
        position = 0
        for index, group in enumerate(self.param_groups):
            rate = rates[index if self.per_group else 0]
            for param in group["params"]:
                origin = before[position]
                position += 1
                direction = torch.sub(origin, param)
                param.copy_(origin.addcmul_(direction, -rate.to(param.device)))
                if id(param) in with_grad:
                    self.state[param] = {"previous_direction": direction, "direction_step": step}

    def diagnostics(self) -> dict[str, float]:
        """``effective_lr`` (η, of group 0 with ``per_group``; ``effective_lr/group{i}`` for
        each group), ``hypergradient`` (h, NaN before the first step) and ``step``."""
        rates = self._scalars["learning_rates"]
        hypergradients = self._scalars["hypergradients"]
        out = {
            "effective_lr": float(rates[0]),
            "hypergradient": math.nan if hypergradients is None else float(hypergradients[0]),
            "step": float(self._scalars["step"]),
        }
        if self.per_group:
            for index, rate in enumerate(rates):
                out[f"effective_lr/group{index}"] = float(rate)
        return out

    def state_dict(self) -> dict[str, Any]:
        """The base's state dict plus ``"hd"``: η (per group), the last h, the step count,
        β, ``per_group`` and the previous directions by parameter index."""
        state_dict = dict(self.base_optimizer.state_dict())
        scalars = self._scalars
        state_dict["hd"] = {
            "step": scalars["step"],
            "learning_rates": [r.clone() for r in scalars["learning_rates"]],
            "hypergradients": None
            if scalars["hypergradients"] is None
            else [h.clone() for h in scalars["hypergradients"]],
            "hypergrad_lr": self.hypergrad_lr,
            "per_group": self.per_group,
            "directions": {
                index: {k: v.clone() if isinstance(v, Tensor) else v for k, v in s.items()}
                for index, p in enumerate(base_parameters(self.base_optimizer))
                if (s := self.state.get(p))
            },
        }
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Checks all of ``state_dict`` (torch's part for the base, the ``"hd"`` entry, the
        previous directions by parameter index) and loads only when every check passed."""
        params = base_parameters(self.base_optimizer)
        saved = check_own_entry(
            state_dict,
            "hd",
            who="HD",
            fields=("step", "learning_rates", "hypergradients", "hypergrad_lr", "directions"),
            saved_by={"per_group": self.per_group},
        )
        check_optimizer_state(self.base_optimizer, without(state_dict, "hd"), who="HD")
        check_indexed(
            saved["directions"],
            params,
            who="HD",
            what="previous directions",
            tensors=("previous_direction",),
        )
        self.base_optimizer.load_state_dict(without(state_dict, "hd"))
        device = params[0].device
        self.hypergrad_lr = float(saved["hypergrad_lr"])
        self._scalars = {
            "step": int(saved["step"]),
            "learning_rates": [r.to(device).clone() for r in saved["learning_rates"]],
            "hypergradients": None
            if saved["hypergradients"] is None
            else [h.to(device).clone() for h in saved["hypergradients"]],
        }
        self._groups_read = len(self.param_groups)
        self.state.clear()
        for index, entry in saved["directions"].items():
            param = params[index]
            self.state[param] = {
                "previous_direction": entry["previous_direction"].to(param).clone(),
                "direction_step": int(entry["direction_step"]),
            }
