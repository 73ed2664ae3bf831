"""The scalar rules of hypergradient LR adaptation as pure functions of 0-dim tensors (no host
synchronisation; η's descent also of Python numbers), which reference tests call directly.

Notation (Donini et al., "Scheduling the learning rate via hypergradients", Secs. 3-4 and
Appendix A; Baydin et al., "Online learning rate adaptation with hypergradient descent",
ICLR 2018): η the learning rate, h (δ) a hypergradient estimate, β the hyper-learning rate,
κ the step size that adapts β, μ the discount of the tangent system, c MARTHE's counter.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

Scalar = Tensor | float


def descend_learning_rate(learning_rate: Scalar, hypergradient: Scalar, beta: Scalar) -> Scalar:
    """η ← max(η − β·h, 0): one projected step of hypergradient descent on η (Donini et al.
    Eq. 5, Baydin et al. Eq. 3 with the projection on η ≥ 0 that Donini et al. add), on 0-dim
    tensors (no host synchronisation) or on Python numbers (NaN stays NaN)."""
    stepped = learning_rate - beta * hypergradient
    if isinstance(stepped, Tensor):
        return torch.clamp_min(stepped, 0.0)
    return stepped if math.isnan(stepped) else max(stepped, 0.0)


def clip_hypergradient(hypergradient: Tensor, clip: float | None) -> Tensor:
    """h clipped to [−clip, clip] (the authors' TensorFlow code clips δ at 100 by default);
    ``None`` leaves it unchanged."""
    if clip is None:
        return hypergradient
    return torch.clamp(hypergradient, -clip, clip)


def adapt_beta(beta: Tensor, kappa: float, hypergradient: Tensor, previous: Tensor) -> Tensor:
    """β ← max(β + κ·δ_{t−1}·δ_{t−2}, 0): hypergradient descent on β itself (Donini et al.
    Sec. 4, "adapting β online", following a suggestion of Baydin et al.): δ_{t−1}·δ_{t−2}
    is minus the derivative of the one-step objective with respect to β. Called at the start
    of a step with the two most recent hypergradients, which is the paper's Algorithm 1
    (β updated at the end of the previous step) and the authors' code."""
    return torch.clamp_min(beta + kappa * hypergradient * previous, 0.0)


def adapt_mu(
    mu: Tensor, count: Tensor, hypergradient: Tensor, first_order: Tensor
) -> tuple[Tensor, Tensor]:
    """MARTHE's adaptive discount μ (Donini et al. Eq. 10 and Appendix A), ex post:

    q = δ / (∇E(w_{t+1})·B_t), z = clip(q, 0, 1), c ← (c + 1)·μ, μ ← z^(1/(c + 1)),

    with δ the hypergradient used at step t and B_t = ∂Φ_t/∂η (for SGD, −∇L_t(w_t)); q ≥ 0
    says that the η update was a descent step for the one-step objective. c measures the
    effective horizon: it grows while μ stays near 1 and falls to 0 when μ does. Where
    ∇E·B_t = 0 (or q is not a number) the one-step test says nothing and z = 0, which
    forgets the history (the authors' NumPy code would propagate inf/NaN into μ).
    Returns (μ, c).
    """
    ratio = hypergradient / first_order
    usable = (first_order != 0) & torch.isfinite(ratio)
    z = torch.where(usable, ratio, torch.zeros_like(ratio)).clamp(0.0, 1.0)
    new_count = (count + 1.0) * mu
    return z.pow(1.0 / (new_count + 1.0)), new_count
