"""Reading a base optimizer's update direction: its step at learning rate 1.

A method that sets the step size of *any* torch optimizer — L4 over a base (Rolinek & Martius
2018, Sec. 2.2), hypergradient descent over a base (Baydin et al. 2018, Sec. 3.1) — needs the
base's direction v, the update the base would make at lr 1, and then takes its own step
w ← w − η·v. :class:`DirectionProbe` gets v without knowing the base: it copies w into a
persistent buffer, runs ``base.step()`` with every group's lr set to 1 (restored afterwards,
also on error), and leaves w_after = w − v in the parameters. v itself is never formed:

* a dot product with v is t·v = t·w_before − t·w_after (:meth:`DirectionProbe.dots`, two
  reductions per tensor, combined in float64); :meth:`DirectionProbe.exact_dots` recomputes
  it in float64 when that fast sum overflowed;
* the step is w ← w_before + η·(w_after − w_before) = lerp(w_before, w_after, η), one pass
  per tensor (:meth:`DirectionProbe.finish`), or w ← w_before exactly (η = None: the step
  is refused, even where the base produced NaN/inf).

Where the base already keeps the gradient EMA a method needs (torch's Adam and AdamW:
``exp_avg``), :func:`base_gradient_average` names it, so that the method reads it instead of
keeping a copy.

This needs an update proportional to lr, and a state that does not depend on lr
(:func:`check_base_optimizer`): SGD (momentum, Nesterov, weight decay), Adam, AdamW (decoupled
decay lr·wd·w), Adamax, NAdam, RAdam, RMSprop, Adagrad without lr_decay. v is a difference of
parameters: components of the base update below the parameters' rounding unit (≈ 6e-8·|w| in
float32) are lost.

Cost per step on top of the base's own step: a copy of w (read w, write the buffer), two dot
products per tensor (read the estimate twice, the buffer and w once) and the final lerp (read
both, write w) — 9 passes over the parameters, against about 18 for torch's Adam. That is the
floor for a base the probe does not know: the base overwrites w, so w_before must be written
once more, and the final w needs both w_before and w_after.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from lrkit.methods.foreach import flat_dot, scalar_dtype
from lrkit.methods.guards import check_dense_real
from lrkit.methods.wrapping import WrapsOptimizer

PROBE_LR = 1.0

UNSUPPORTED_BASES: dict[type[torch.optim.Optimizer], str] = {
    torch.optim.LBFGS: "it needs a closure and runs its own line search",
    torch.optim.Rprop: "its step sizes are state initialised from lr, not proportional to it",
    torch.optim.ASGD: "its state (eta, mu) depends on lr non-linearly",
    torch.optim.SparseAdam: "it needs sparse gradients",
}
SUPPORTED = "SGD, momentum, Adam, AdamW, Adamax, NAdam, RAdam, RMSprop, Adagrad without lr_decay"


def check_base_optimizer(base: Any, *, who: str) -> None:
    """TypeError unless ``base`` is a ``torch.optim.Optimizer`` instance; ValueError for a base
    whose update is not proportional to lr (LBFGS, Rprop, ASGD, SparseAdam, a wrapper such
    as Lookahead) or a param group that fails :func:`check_base_group`."""
    if not isinstance(base, torch.optim.Optimizer):
        raise TypeError(
            f"{who} wraps a torch.optim.Optimizer instance, got {type(base).__name__}; build the "
            f"base first, e.g. {who}(torch.optim.Adam(model.parameters()))"
        )
    name = type(base).__name__
    reason = next((r for cls, r in UNSUPPORTED_BASES.items() if isinstance(base, cls)), None)
    if reason is None and isinstance(base, WrapsOptimizer):
        reason = "it wraps another optimizer and its update is not proportional to lr"
    if reason is not None:
        raise ValueError(
            f"{who} cannot wrap {name}: {reason}. {who} reads the base's direction as its update "
            f"at lr 1, which needs an update proportional to lr ({SUPPORTED})"
        )
    for index, group in enumerate(base.param_groups):
        check_base_group(base, group, index, who=who)


def check_base_group(
    base: torch.optim.Optimizer, group: dict[str, Any], index: int, *, who: str
) -> None:
    """ValueError for a group the probe cannot read: no ``lr``, ``maximize=True``, Adagrad's
    ``lr_decay`` ≠ 0, complex parameters. Run at every step (a group may change after
    construction) and on ``add_param_group``."""
    name = type(base).__name__
    if "lr" not in group:
        raise ValueError(
            f"param group {index} of {name} has no 'lr'; {who} sets it to 1 to read the base's "
            "direction"
        )
    if group.get("maximize", False):
        raise ValueError(
            f"param group {index} of {name} has maximize=True; {who} minimises a non-negative "
            "loss (maximise -loss shifted to be >= 0 instead)"
        )
    if isinstance(base, torch.optim.Adagrad) and group.get("lr_decay", 0) != 0:
        raise ValueError(
            f"param group {index} of Adagrad has lr_decay={group['lr_decay']!r}: its update "
            "lr/(1 + (t-1)·lr_decay) is not proportional to lr; use lr_decay=0"
        )
    for position, param in enumerate(group["params"]):
        check_dense_real(param, None, who=who, label=f"parameter {position} of group {index}")


def base_gradient_average(
    base: torch.optim.Optimizer, group: dict[str, Any], beta: float
) -> str | None:
    """The name of the per-parameter state in which ``base`` keeps m ← β·m + (1 − β)·g of the
    raw gradient with decay ``beta`` — torch.optim.AdamW's and Adam's ``exp_avg`` when
    betas[0] = β (Adam: without coupled weight decay, which would add wd·w to g) — or None.
    A method that needs that average reads it there instead of keeping a copy (one pass over
    the parameters and one buffer fewer per step)."""
    if type(base) is torch.optim.AdamW:
        decoupled = True
    elif type(base) is torch.optim.Adam:
        decoupled = group["weight_decay"] == 0 or group.get("decoupled_weight_decay", False)
    else:
        return None
    return "exp_avg" if decoupled and group["betas"][0] == beta else None


def set_learning_rates(groups: list[dict[str, Any]], value: float) -> list[Any]:
    """Sets every group's lr to ``value`` (a tensor lr in place) and returns what
    :func:`restore_learning_rates` needs to put the old values back."""
    saved = []
    for group in groups:
        lr = group["lr"]
        if isinstance(lr, Tensor):
            saved.append((lr, lr.clone()))
            lr.fill_(value)
        else:
            saved.append((lr, None))
            group["lr"] = value
    return saved


def restore_learning_rates(groups: list[dict[str, Any]], saved: list[Any]) -> None:
    """Undoes :func:`set_learning_rates` (a tensor lr keeps its identity)."""
    for group, (lr, value) in zip(groups, saved, strict=True):
        if value is not None:
            lr.copy_(value)
        group["lr"] = lr


class DirectionProbe:
    """Runs ``base.step()`` at lr 1 between a snapshot of the parameters and the step a
    method takes along the base's direction (see the module docstring).

    Per step: :meth:`run`, then any number of :meth:`dots`, then exactly one :meth:`finish`.
    The snapshot buffers persist between steps (one per parameter, created on first use).
    """

    def __init__(self, base: torch.optim.Optimizer) -> None:
        self.base = base
        self._before: dict[Tensor, Tensor] = {}

    def parameters(self) -> list[Tensor]:
        return [p for group in self.base.param_groups for p in group["params"]]

    def _buffers(self, params: Sequence[Tensor]) -> list[Tensor]:
        buffers = []
        for param in params:
            buffer = self._before.get(param)
            if buffer is None or buffer.shape != param.shape or buffer.dtype != param.dtype:
                buffer = torch.empty_like(param, memory_format=torch.preserve_format)
                self._before[param] = buffer
            buffers.append(buffer)
        return buffers

    @torch.no_grad()
    def run(self) -> None:
        """Snapshot w, then ``base.step()`` with every group's lr set to 1. If the base raises,
        the parameters are restored (the base's own state may have advanced) and the error
        propagates; the learning rates are restored in any case."""
        params = self.parameters()
        befores = self._buffers(params)
        torch._foreach_copy_(befores, params)
        saved = set_learning_rates(self.base.param_groups, PROBE_LR)
        try:
            self.base.step()
        except BaseException:
            torch._foreach_copy_(params, befores)
            raise
        finally:
            restore_learning_rates(self.base.param_groups, saved)

    def dots(self, tensors: Sequence[Tensor], params: Sequence[Tensor]) -> Tensor:
        """[t_i·v_i] for ``params[i]`` (each probed by :meth:`run`) as one float64 vector:
        t·w_before − t·w_after, each product reduced in the tensors' dtype."""
        if not params:
            return torch.zeros(0, dtype=torch.float64)
        products = [flat_dot(t, self._before[p]) for t, p in zip(tensors, params, strict=True)]
        products += [flat_dot(t, p) for t, p in zip(tensors, params, strict=True)]
        stacked = torch.stack(products).to(scalar_dtype(params[0].device))
        return stacked[: len(params)] - stacked[len(params) :]

    def exact_dots(self, tensors: Sequence[Tensor], params: Sequence[Tensor]) -> Tensor:
        """:meth:`dots` with every element in float64 (copies; for when the fast sum left the
        float32 range)."""
        out = []
        for tensor, param in zip(tensors, params, strict=True):
            direction = self._before[param].double() - param.double()
            out.append(torch.dot(tensor.double().reshape(-1), direction.reshape(-1)))
        return torch.stack(out) if out else torch.zeros(0, dtype=torch.float64)

    @torch.no_grad()
    def finish(self, step_size: Tensor | None) -> None:
        """w ← lerp(w_before, w_after, η) = w_before − η·v for every parameter, η a 0-dim
        tensor (no host synchronisation); ``None``: w ← w_before exactly."""
        params = self.parameters()
        befores = [self._before[p] for p in params]
        if step_size is None:
            torch._foreach_copy_(params, befores)
            return
        weights: dict[tuple[torch.device, torch.dtype], Tensor] = {}
        for param, before in zip(params, befores, strict=True):
            key = (param.device, param.dtype)
            if key not in weights:
                weights[key] = step_size.to(device=param.device, dtype=param.dtype)
            torch.lerp(before, param, weights[key], out=param)
