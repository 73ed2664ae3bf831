"""The inner optimizers of the hypergradient methods — SGD, SGD with (Nesterov) momentum and
Adam, exactly as ``torch.optim.SGD`` (dampening 0) and ``torch.optim.Adam`` (amsgrad off)
compute them — in two forms:

* :func:`advance_` takes one step in place *and* propagates the tangent system of MARTHE
  (Donini et al. Eq. 9) over the whole optimizer state s = (w, buffers):
  Z ← μ·A·Z + B with A = ∂Φ/∂s applied to Z (a Jacobian–vector product: H·Z_w comes from
  a Hessian–vector product) and B = ∂Φ/∂η = (−u, 0), u the update direction.
* :func:`functional_step` is the same step out of place and differentiable, for reverse mode
  through unrolled training (:mod:`lrkit.methods.hypergradient.lrs_opt`).

With g̃ = ∇L(w) + λ·w (λ the L2 weight decay, as torch.optim adds it) and dg̃ = H·Z_w + λ·Z_w:

SGD        u = g̃;                                   A·Z = Z_w − η·dg̃
momentum   b ← m·b + g̃, u = b (Nesterov: g̃ + m·b);  A·Z = (Z_w − η·du, m·Z_b + dg̃),
           du = m·Z_b + dg̃ (Nesterov: dg̃ + m·(m·Z_b + dg̃))
Adam       m ← β1·m + (1 − β1)·g̃, v ← β2·v + (1 − β2)·g̃², D = sqrt(v)/sqrt(b2) + ε,
           u = m/(b1·D) (b1, b2 the bias corrections);
           Z_m ← β1·Z_m + (1 − β1)·dg̃, Z_v ← β2·Z_v + 2(1 − β2)·g̃·dg̃,
           du = (Z_m/b1 − u·dD)/D with dD = Z_v/(2·sqrt(v)·sqrt(b2)) (0 where v = 0),
           A·Z = (Z_w − η·du, Z_m, Z_v)

The identity term Z_w of A·Z is what keeps w's own history in the tangent; the
authors' TensorFlow code applies Aᵀ (right for SGD only, where A is symmetric) and the AWS
PyTorch port drops the identity term of Adam's tangent. Both are checked against finite
differences of the unrolled dynamics in the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

InnerKind = Literal["sgd", "adam"]


@dataclass(frozen=True)
class InnerOptimizer:
    """One param group's inner optimizer.

    Args:
        kind: "sgd" (with ``momentum`` and ``nesterov``) or "adam" (``betas``, ``eps``).
        weight_decay: the L2 coefficient λ added to the gradient (torch.optim's weight_decay).
    """

    kind: InnerKind = "sgd"
    momentum: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("sgd", "adam"):
            raise ValueError(f"inner optimizer must be 'sgd' or 'adam', got {self.kind!r}")
        if not 0.0 <= self.momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if self.nesterov and (self.kind != "sgd" or self.momentum == 0.0):
            raise ValueError("nesterov needs the 'sgd' inner optimizer with momentum > 0")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"betas must be a pair in [0, 1), got {self.betas!r}")
        if not self.eps > 0.0:
            raise ValueError(f"eps must be > 0, got {self.eps!r}")
        if not self.weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")

    @property
    def buffers(self) -> tuple[str, ...]:
        """The names of the per-parameter buffers that are part of the dynamics' state."""
        if self.kind == "adam":
            return ("exp_avg", "exp_avg_sq")
        return ("momentum_buffer",) if self.momentum > 0.0 else ()

    def bias_corrections(self, step: int) -> tuple[float, float]:
        """Adam's (1 − β1^t, sqrt(1 − β2^t)) at 1-based ``step``."""
        beta1, beta2 = self.betas
        return 1.0 - beta1**step, math.sqrt(1.0 - beta2**step)


def tangent_name(buffer: str) -> str:
    """The state key of a buffer's tangent."""
    return buffer + "_tangent"


def advance_(
    inner: InnerOptimizer,
    param: Tensor,
    grad: Tensor,
    hvp: Tensor | None,
    state: dict[str, Tensor],
    step: int,
    learning_rate: float,
    mu: float,
) -> Tensor:
    """One step of ``inner`` on one parameter, in place, with its tangents.

    ``state`` holds the buffers, ``"tangent"`` (Z_w) and the buffers' tangents.
    ``hvp`` = H·Z_w, or ``None`` when μ·A·Z is known to vanish (Z = 0 at the first step,
    or μ fixed at 0): then Z ← B. ``learning_rate`` (η) and ``mu`` are numbers (the caller
    synchronised once for its checks). Returns the update direction u, a tensor of its own
    (neither a buffer nor the gradient's storage being overwritten later) the caller may keep.
    """
    decay = inner.weight_decay
    effective = grad.add(param, alpha=decay) if decay else grad
    tangent = state["tangent"]
    propagate = hvp is not None
    d_effective = hvp.add(tangent, alpha=decay) if propagate and decay else hvp
    if inner.kind == "adam":
        direction, d_direction = _adam(inner, effective, d_effective, state, step)
    elif inner.momentum > 0.0:
        direction, d_direction = _momentum(inner, effective, d_effective, state)
    else:
        direction, d_direction = effective, d_effective
    if propagate and mu != 0.0:
        assert d_direction is not None
        tangent.add_(d_direction, alpha=-learning_rate)
        if mu != 1.0:
            tangent.mul_(mu)
            for buffer in inner.buffers:
                state[tangent_name(buffer)].mul_(mu)
        tangent.sub_(direction)
    else:
        torch.neg(direction, out=tangent)
        for buffer in inner.buffers:
            state[tangent_name(buffer)].zero_()
    param.add_(direction, alpha=-learning_rate)
    return direction


def _momentum(
    inner: InnerOptimizer, effective: Tensor, d_effective: Tensor | None, state: dict[str, Tensor]
) -> tuple[Tensor, Tensor | None]:
    momentum = inner.momentum
    buffer = state["momentum_buffer"].mul_(momentum).add_(effective)
    direction = effective.add(buffer, alpha=momentum) if inner.nesterov else buffer.clone()
    if d_effective is None:
        return direction, None
    d_buffer = state[tangent_name("momentum_buffer")].mul_(momentum).add_(d_effective)
    d_direction = d_effective.add(d_buffer, alpha=momentum) if inner.nesterov else d_buffer
    return direction, d_direction


def _adam(
    inner: InnerOptimizer,
    effective: Tensor,
    d_effective: Tensor | None,
    state: dict[str, Tensor],
    step: int,
) -> tuple[Tensor, Tensor | None]:
    beta1, beta2 = inner.betas
    bias1, bias2_sqrt = inner.bias_corrections(step)
    exp_avg = state["exp_avg"].lerp_(effective, 1.0 - beta1)
    exp_avg_sq = state["exp_avg_sq"].mul_(beta2).addcmul_(effective, effective, value=1.0 - beta2)
    root = exp_avg_sq.sqrt()
    denom = (root / bias2_sqrt).add_(inner.eps)
    direction = exp_avg / (denom * bias1)
    if d_effective is None:
        return direction, None
    d_exp_avg = state[tangent_name("exp_avg")].mul_(beta1).add_(d_effective, alpha=1.0 - beta1)
    d_exp_avg_sq = state[tangent_name("exp_avg_sq")].mul_(beta2)
    d_exp_avg_sq.addcmul_(effective, d_effective, value=2.0 * (1.0 - beta2))
    d_denom = torch.where(root > 0, d_exp_avg_sq / (2.0 * bias2_sqrt * root), 0.0)
    d_direction = (d_exp_avg / bias1 - direction * d_denom) / denom
    return direction, d_direction


def functional_step(
    inner: InnerOptimizer,
    params: list[Tensor],
    buffers: dict[str, list[Tensor]],
    grads: list[Tensor],
    learning_rate: Tensor,
    step: int,
) -> tuple[list[Tensor], dict[str, list[Tensor]]]:
    """The step of :func:`advance_` out of place and differentiable in every input
    (parameters, buffers, gradients, η): returns (new parameters, new buffers)."""
    decay = inner.weight_decay
    effective = [g + decay * p if decay else g for g, p in zip(grads, params, strict=True)]
    if inner.kind == "adam":
        beta1, beta2 = inner.betas
        bias1, bias2_sqrt = inner.bias_corrections(step)
        pairs = zip(buffers["exp_avg"], buffers["exp_avg_sq"], effective, strict=True)
        moments = [
            (beta1 * m + (1.0 - beta1) * g, beta2 * v + (1.0 - beta2) * g * g) for m, v, g in pairs
        ]
        exp_avg, exp_avg_sq = [m for m, _ in moments], [v for _, v in moments]
        directions = [
            m / (bias1 * (_safe_sqrt(v) / bias2_sqrt + inner.eps))
            for m, v in zip(exp_avg, exp_avg_sq, strict=True)
        ]
        new_buffers = {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
    elif inner.momentum > 0.0:
        momentum = inner.momentum
        previous = buffers["momentum_buffer"]
        buffer = [momentum * b + g for b, g in zip(previous, effective, strict=True)]
        directions = (
            [g + momentum * b for g, b in zip(effective, buffer, strict=True)]
            if inner.nesterov
            else buffer
        )
        new_buffers = {"momentum_buffer": buffer}
    else:
        directions, new_buffers = effective, {}
    new_params = [p - learning_rate * u for p, u in zip(params, directions, strict=True)]
    return new_params, new_buffers


def _safe_sqrt(value: Tensor) -> Tensor:
    """sqrt with a zero (not NaN) derivative where ``value`` is 0."""
    positive = value > 0
    return torch.where(positive, torch.sqrt(torch.where(positive, value, 1.0)), 0.0)
