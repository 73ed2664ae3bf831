"""HDSGD and HDAdam: hypergradient descent on the training loss (Baydin et al., "Online
learning rate adaptation with hypergradient descent", ICLR 2018, Algorithms 2-3).

One global learning rate η for all parameters of all param groups. With g_t the gradient of
the mini-batch loss and u_{t−1} the previous update direction (w_t = w_{t−1} − η·u_{t−1}):

    h_t = ∂L_t(w_t)/∂η_{t−1} = −g_t·u_{t−1}        (one global dot product)
    η_t = max(η_{t−1} − β·h_t, 0)
    w_{t+1} = w_t − η_t·u_t

HDSGD: u = g + λ·w, or torch.optim.SGD's momentum buffer b = m·b + g + λ·w (Nesterov:
g + λ·w + m·b). HDAdam: u = m̂/(sqrt(v̂) + ε), torch.optim.Adam's direction (the paper's
Algorithm 3; Baydin et al.'s code puts ε next to the uncorrected sqrt(v), torch.optim.Adam
and the paper next to the corrected one). Defaults are the paper's: η0 = 1e-3, β = 1e-3
(SGD) and 1e-7 (Adam).

Choices (docs/hypergradient.md has the reasons): one global η (Baydin et al.'s AdamHD
updated η once per parameter tensor); η is clamped at 0 (the paper's rule is unprojected);
h uses the loss's own gradient g, not g + λ·w (their code adds the L2 term), so that
``HD(torch.optim.SGD(..., weight_decay=λ))`` equals ``HDSGD(..., weight_decay=λ)``. η, lr
and β are global (equal in every group); momentum, nesterov, betas, eps, weight_decay and
foreach may differ per group. A parameter contributes to h only when it moved at the
previous step. One host synchronisation per ``step``: the finiteness check, which reuses the
dot product (NaN/inf in the loss or the gradients raises FloatingPointError before anything
changes) and brings η back as a Python number, so the update runs torch.optim's
multi-tensor kernels with a plain step size. Where u is the gradient itself (HDSGD without
momentum and weight decay) the previous gradient tensor is kept, not copied
(``_HypergradientDescent._keep_directions``). Cost over the base optimizer: one dot product.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from lrkit.methods.hypergradient.common import (
    buckets,
    check_equal_across_groups,
    raise_if_non_finite,
    scalar_dtype,
)
from lrkit.methods.hypergradient.rules import descend_learning_rate

LossClosure = Callable[[], Any]
_FOREACH_DEVICES = ("cpu", "cuda", "xpu")


_FLOAT16_MAX = torch.finfo(torch.float16).max


class _HypergradientDescent(torch.optim.Optimizer):
    """η, β, the step skeleton, diagnostics and state dict of HDSGD and HDAdam."""

    _name = "HD"

    def __init__(self, params: Any, defaults: dict[str, Any]) -> None:
        if not defaults["lr"] >= 0.0:
            raise ValueError(f"{self._name} lr (η0) must be >= 0, got {defaults['lr']!r}")
        if not defaults["hypergrad_lr"] >= 0.0:
            raise ValueError(
                f"{self._name} hypergrad_lr (β) must be >= 0, got {defaults['hypergrad_lr']!r}"
            )
        if not defaults["weight_decay"] >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {defaults['weight_decay']!r}")
        super().__init__(params, defaults)
        params_all = [p for group in self.param_groups for p in group["params"]]
        self._scalars: dict[str, Any] = {
            "step": 0,
            "learning_rate": float(defaults["lr"]),
            "hypergradient": None,
        }
        self._dtype = scalar_dtype(params_all)
        self._borrowed: dict[int, int] = {}
        self._copy_gradients = False

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        try:
            check_equal_across_groups(
                self.param_groups, ("lr", "hypergrad_lr"), self._name, "η is one global LR"
            )
            self._validate_group(self.param_groups[-1])
        except ValueError:
            self.param_groups.pop()
            raise

    def _validate_group(self, group: dict[str, Any]) -> None:
        """Checks the hyperparameters a subclass adds to a group."""

    @property
    def learning_rate(self) -> float:
        """η, the learning rate of the last step (η0 before the first)."""
        return self._scalars["learning_rate"]

    def _previous(self, state: dict[str, Any]) -> Tensor:
        """u_{t−1} in the form its dot product is taken with (subclasses)."""
        return state["previous_direction"]

    def _previous_weight(self, state: dict[str, Any], group: dict[str, Any]) -> float:
        return 1.0

    @torch.no_grad()
    def step(self, closure: LossClosure | None = None) -> Any:
        """One step; ``closure`` (torch.optim's: zero_grad, loss, backward, return loss) is
        called once, or the gradients are already in ``.grad``. Returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        step = self._scalars["step"] + 1
        dtype = self._dtype
        work, pairs, weights, checked = [], [], [], []
        overwritten = False
        borrowed = self._borrowed
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params]
            if any(g.is_sparse for g in grads):
                raise RuntimeError(f"{self._name} does not support sparse gradients")
            for param, grad in zip(params, grads, strict=True):
                state = self.state.get(param)
                if state and state["direction_step"] == step - 1:
                    previous = self._previous(state)
                    version = borrowed.get(id(param))
                    overwritten |= version is not None and version != previous._version
                    pairs.append((grad, previous))
                    weights.append(self._previous_weight(state, group))
                else:
                    checked.append(grad.sum().to(dtype))  # its finiteness check
            work.append((group, params, grads))
        dots = [
            torch.dot(g.view(-1), u.view(-1))
            if g.dtype == dtype and g.is_contiguous() and u.is_contiguous()
            else torch.dot(g.reshape(-1).to(dtype), u.reshape(-1).to(dtype))
            for g, u in pairs
        ]
        if loss is not None:
            checked.append(torch.as_tensor(loss).detach().reshape(-1)[0].to(dtype))
        # The one host synchronisation: the dot products (a NaN/inf gradient makes its dot
        # product, or at a first step its sum, non-finite) and the loss, as Python numbers;
        # η is then updated on the host and the kernels take it as a plain step size.
        values = torch.stack(dots + checked).tolist() if dots or checked else []
        finite = all(math.isfinite(v) for v in values)
        descent = math.fsum(w * d for w, d in zip(weights, values, strict=False)) if finite else 0.0
        if overwritten:
            # a borrowed gradient was zeroed in place (zero_grad(set_to_none=False)): this
            # step's h is unknown; copy the gradients from now on
            descent, self._copy_gradients = 0.0, True
        hypergradient = -descent
        rate = descend_learning_rate(
            self._scalars["learning_rate"], hypergradient, self.defaults["hypergrad_lr"]
        )
        # η must also be a number in the parameters' dtype (a float32 step size past 3.4e38
        # would overflow the update kernels); the dtypes are read only for an η past
        # float16's range, so the usual step pays nothing for this check
        too_large = rate > _FLOAT16_MAX and rate > min(
            (torch.finfo(p.dtype).max for _, params, _ in work for p in params), default=math.inf
        )
        if not (finite and math.isfinite(hypergradient) and math.isfinite(rate)) or too_large:
            value = torch.zeros(()) if loss is None else torch.as_tensor(loss).detach()
            raise_if_non_finite(
                self._name,
                value.reshape(-1)[0],
                [g for _, _, grads in work for g in grads],
                scalars={"hypergradient": hypergradient, "learning rate": rate},
            )
            raise FloatingPointError(
                f"{self._name}: the hypergradient overflowed or η = {rate:.3g} is not a number "
                "in the parameters' dtype (every input is finite: lower hypergrad_lr); no "
                "parameter or optimizer state was changed"
            )
        for group, params, grads in work:
            foreach = group["foreach"]
            if foreach is None:
                foreach = all(p.device.type in _FOREACH_DEVICES for p in params)
            for bucket in buckets(params):
                bucket_params = [params[i] for i in bucket]
                bucket_grads = [grads[i] for i in bucket]
                states = [self._state(p, step) for p in bucket_params]
                if foreach:
                    self._update(group, bucket_params, bucket_grads, states, rate)
                else:
                    for param, grad, state in zip(bucket_params, bucket_grads, states, strict=True):
                        self._update(group, [param], [grad], [state], rate)
        self._scalars.update(step=step, learning_rate=rate, hypergradient=hypergradient)
        return loss

    def _keep_directions(
        self, params: list[Tensor], directions: list[Tensor], states: list[dict[str, Any]]
    ) -> None:
        """Keeps u_t for the next step's h. Directions that are the gradients themselves are
        borrowed, not copied: the next backward normally allocates new ``.grad`` tensors
        (``zero_grad`` sets them to None); their version counters tell when one was
        overwritten in place instead, and then the gradients are copied from then on."""
        for param, direction, state in zip(params, directions, states, strict=True):
            if direction is not param.grad:
                state["previous_direction"] = direction
            elif self._copy_gradients:
                state["previous_direction"] = direction.clone()
                self._borrowed.pop(id(param), None)
            else:
                state["previous_direction"] = direction
                self._borrowed[id(param)] = direction._version

    def _state(self, param: Tensor, step: int) -> dict[str, Any]:
        state = self.state[param]
        if not state:
            for name in self._buffers(param):
                state[name] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["direction_step"] = step
        return state

    def _buffers(self, param: Tensor) -> tuple[str, ...]:
        return ()

    def _update(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Any]],
        rate: float,
    ) -> None:
        raise NotImplementedError

    def diagnostics(self) -> dict[str, float]:
        """``effective_lr`` (η of the last step), ``hypergradient`` (h, NaN before the second
        step) and ``step``. Synchronises with the device."""
        hypergradient = self._scalars["hypergradient"]
        return {
            "effective_lr": self._scalars["learning_rate"],
            "hypergradient": math.nan if hypergradient is None else hypergradient,
            "step": float(self._scalars["step"]),
        }

    def state_dict(self) -> dict[str, Any]:
        """torch's state dict (buffers, previous directions) plus ``"hd"``: η, the last h and
        the step count."""
        state_dict = super().state_dict()
        state_dict["hd"] = dict(self._scalars)
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "hd" not in state_dict:
            raise ValueError(f"state dict has no 'hd' entry: it was not saved by {self._name}")
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "hd"})
        self._borrowed.clear()  # the loaded directions are copies this optimizer owns
        self._scalars = dict(state_dict["hd"])


class HDSGD(_HypergradientDescent):
    """SGD (optionally with momentum or Nesterov momentum, and L2 weight decay, exactly as
    ``torch.optim.SGD`` with dampening 0) whose one global learning rate η is learned by
    hypergradient descent on the training loss (module docstring). ``lr`` is η0,
    ``hypergrad_lr`` is β (Baydin et al.: 1e-3 for SGD).

    Args:
        params: the parameters or param groups to optimise (they share the one η).
        lr: η0, the initial learning rate (1e-3).
        hypergrad_lr: β, the hypergradient step (1e-3).
        momentum: SGD momentum (0).
        nesterov: Nesterov momentum (needs momentum > 0).
        weight_decay: L2 weight decay added to the gradient, as torch.optim.SGD.
        foreach: multi-tensor kernels (None: where the device supports them).
    """

    _name = "HDSGD"

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        hypergrad_lr: float = 1e-3,
        momentum: float = 0.0,
        nesterov: bool = False,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=lr, hypergrad_lr=hypergrad_lr, momentum=momentum, nesterov=nesterov,
            weight_decay=weight_decay, foreach=foreach,
        )  # fmt: skip
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        if not 0.0 <= group["momentum"] < 1.0:
            raise ValueError(f"HDSGD momentum must be in [0, 1), got {group['momentum']!r}")
        if group["nesterov"] and group["momentum"] == 0.0:
            raise ValueError("HDSGD nesterov needs momentum > 0")

    def _buffers(self, param: Tensor) -> tuple[str, ...]:
        group = next(g for g in self.param_groups if any(p is param for p in g["params"]))
        return ("momentum_buffer",) if group["momentum"] else ()

    def _previous(self, state: dict[str, Any]) -> Tensor:
        # Heavy-ball momentum: u_{t−1} is the momentum buffer itself (no copy kept).
        return state.get("previous_direction", state.get("momentum_buffer"))

    def _update(self, group, params, grads, states, rate) -> None:
        decay, momentum = group["weight_decay"], group["momentum"]
        directions = torch._foreach_add(grads, params, alpha=decay) if decay else grads
        if momentum:
            buffers = [state["momentum_buffer"] for state in states]
            torch._foreach_mul_(buffers, momentum)
            torch._foreach_add_(buffers, directions)
            if not group["nesterov"]:
                torch._foreach_add_(params, buffers, alpha=-rate)
                return
            directions = torch._foreach_add(directions, buffers, alpha=momentum)
        torch._foreach_add_(params, directions, alpha=-rate)
        self._keep_directions(params, list(directions), states)


class HDAdam(_HypergradientDescent):
    """Adam (``torch.optim.Adam``'s update, L2 ``weight_decay``, no amsgrad) whose one global
    learning rate η is learned by hypergradient descent on the training loss, with
    u = m̂/(sqrt(v̂) + ε) the Adam direction (module docstring). ``lr`` is η0,
    ``hypergrad_lr`` is β (Baydin et al.: 1e-7 for Adam).

    Args:
        params: the parameters or param groups to optimise (they share the one η).
        lr: η0, the initial learning rate (1e-3).
        hypergrad_lr: β, the hypergradient step (1e-7).
        betas: Adam's moment decays (0.9, 0.999).
        eps: added to sqrt(v̂) (1e-8).
        weight_decay: L2 weight decay added to the gradient, as torch.optim.Adam.
        foreach: multi-tensor kernels (None: where the device supports them).
    """

    _name = "HDAdam"

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        hypergrad_lr: float = 1e-7,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
    ) -> None:
        defaults = dict(
            lr=lr, hypergrad_lr=hypergrad_lr, betas=tuple(betas), eps=eps,
            weight_decay=weight_decay, foreach=foreach,
        )  # fmt: skip
        super().__init__(params, defaults)

    def _validate_group(self, group: dict[str, Any]) -> None:
        betas = group["betas"]
        if len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"HDAdam betas must be a pair in [0, 1), got {betas!r}")
        if not group["eps"] > 0.0:
            raise ValueError(f"HDAdam eps must be > 0, got {group['eps']!r}")

    def _buffers(self, param: Tensor) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq")

    def _previous_weight(self, state: dict[str, Any], group: dict[str, Any]) -> float:
        # previous_direction holds m/(sqrt(v) + ε·sqrt(b2)); u = (sqrt(b2)/b1)·that.
        return _adam_scale(group["betas"], state["step"])

    def _state(self, param: Tensor, step: int) -> dict[str, Any]:
        state = super()._state(param, step)
        state["step"] = state.get("step", 0) + 1
        return state

    def _update(self, group, params, grads, states, rate) -> None:
        beta1, beta2 = group["betas"]
        decay = group["weight_decay"]
        effective = torch._foreach_add(grads, params, alpha=decay) if decay else grads
        exp_avgs = [state["exp_avg"] for state in states]
        exp_avg_sqs = [state["exp_avg_sq"] for state in states]
        torch._foreach_lerp_(exp_avgs, effective, 1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, effective, effective, 1.0 - beta2)
        directions = torch._foreach_sqrt(exp_avg_sqs)
        steps = [state["step"] for state in states]
        torch._foreach_add_(directions, [group["eps"] * math.sqrt(1.0 - beta2**t) for t in steps])
        for exp_avg, direction in zip(exp_avgs, directions, strict=True):
            torch.div(exp_avg, direction, out=direction)  # m/(sqrt(v) + ε·sqrt(b2)), in place
        by_step: dict[int, list[int]] = {}
        for index, t in enumerate(steps):
            by_step.setdefault(t, []).append(index)
        for t, indices in by_step.items():
            scale = _adam_scale(group["betas"], t)
            torch._foreach_add_(
                [params[i] for i in indices], [directions[i] for i in indices], alpha=-rate * scale
            )
        self._keep_directions(params, list(directions), states)


def _adam_scale(betas: tuple[float, float], step: int) -> float:
    """sqrt(1 − β2^t)/(1 − β1^t): Adam's bias corrections as one factor on m/(sqrt(v) + ε')."""
    beta1, beta2 = betas
    return math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step)
