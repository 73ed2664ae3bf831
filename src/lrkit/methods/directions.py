"""Update directions in factored form, with their dot product with the gradient estimate, for
rules that choose the step size along a direction (L4Adam and L4Mom, Rolinek & Martius 2018,
Sec. 2.5, Eq. 7; a hypergradient step size over Adam, Baydin et al. 2018).

A direction is v_i = s_i·t_i per parameter tensor i (:class:`Directions`): a Python scale s_i
and a tensor t_i, so that the bias corrections never cost a pass over the tensors. The moment
buffers are the scaled moments of :mod:`lrkit.methods.scaling` (m/2^e, u/4^e); the kernels
take 2^e as ``factor`` and return ĝ·v in float64, with ĝ = m̂ the bias-corrected gradient
EMA. The caller applies w ← w − η·v with :func:`apply_directions_`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import Tensor

from lrkit.methods.foreach import dots, squared_norms, weighted_sum


class Directions(NamedTuple):
    """v_i = ``scales[i]``·``tensors[i]`` and ĝ·v (0-dim, float64, on the tensors' device).
    ``owned``: the tensors are temporaries the update may overwrite (L4Mom's are its moment
    buffers and must not be changed)."""

    tensors: list[Tensor]
    scales: list[float]
    grad_dot_direction: Tensor
    owned: bool


def lazy_state(
    state: dict[Tensor, dict[str, Any]], params: Sequence[Tensor], buffers: Sequence[str]
) -> list[int]:
    """Counts a step for each parameter (``state[p]["step"]``, as torch.optim.Adam does: only
    steps in which it had a gradient) and creates its zero ``buffers`` on its first step;
    returns the counts."""
    steps = []
    for param in params:
        entry = state[param]
        if not entry:
            entry["step"] = 0
            for name in buffers:
                entry[name] = torch.zeros_like(param, memory_format=torch.preserve_format)
        entry["step"] += 1
        steps.append(entry["step"])
    return steps


def adam_directions(
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[int],
    *,
    beta1: float,
    beta2: float,
    adam_epsilon: float,
    factor: float,
    foreach: bool,
) -> Directions:
    """Adam's direction v = m̂ / (sqrt(û) + ε_a) and ĝ·v with ĝ = m̂.

    ``grads`` are g/2^e and the buffers m/2^e, u/4^e, 2^e = ``factor``. Updates the moments in
    place, m ← β1·m + (1 − β1)·g, u ← β2·u + (1 − β2)·g², then with b1 = 1 − β1^t,
    b2 = 1 − β2^t (t = ``steps[i]``, already counting this step) and s = sqrt(b2)/b1:
    v = s·m/(sqrt(u) + ε_a·sqrt(b2)/2^e) — the tensors m/(…) with scales s, one pass fewer
    than forming v — and ĝ·v = Σ_i (2^e·s_i/b1_i)·(m_i·t_i), every term ≥ 0. The ε term is at
    least the dtype's smallest normal number, so that a coordinate whose gradient was always 0
    has t = 0, not 0/0. With ``foreach`` all tensors share one device and dtype.
    """
    bias1 = [1.0 - beta1**t for t in steps]
    bias2_sqrt = [math.sqrt(1.0 - beta2**t) for t in steps]
    scales = [b2 / b1 for b1, b2 in zip(bias1, bias2_sqrt, strict=True)]
    weights = [factor * s / b1 for s, b1 in zip(scales, bias1, strict=True)]
    smallest = torch.finfo(grads[0].dtype).smallest_normal if grads else 0.0
    epsilons = [max(adam_epsilon * b2 / factor, smallest) for b2 in bias2_sqrt]
    if foreach and grads:
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1.0 - beta2)
        denoms = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denoms, epsilons)
        if grads[0].device.type == "cpu":
            # The CPU runs foreach ops tensor by tensor anyway: divide into the buffer.
            tensors = [torch.div(m, d, out=d) for m, d in zip(exp_avgs, denoms, strict=True)]
        else:
            tensors = torch._foreach_div(exp_avgs, denoms)
    else:
        tensors = []
        for grad, exp_avg, exp_avg_sq, eps in zip(
            grads, exp_avgs, exp_avg_sqs, epsilons, strict=True
        ):
            exp_avg.lerp_(grad, 1.0 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
            denom = exp_avg_sq.sqrt().add_(eps)
            tensors.append(torch.div(exp_avg, denom, out=denom))
    device = grads[0].device if grads else torch.device("cpu")
    dot = weighted_sum(dots(exp_avgs, tensors, nonnegative=True), weights, device)
    return Directions(tensors, scales, dot, True)


def momentum_directions(
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    steps: list[int],
    *,
    beta: float,
    factor: float,
    foreach: bool,
) -> Directions:
    """The momentum direction v = ĝ = m̂ = 2^e·m/(1 − β^t), so ĝ·v = |m̂|².

    ``grads`` are g/2^e, the buffers m/2^e, 2^e = ``factor``. Updates m ← β·m + (1 − β)·g in
    place and returns the buffers themselves as tensors with scales 2^e/(1 − β^t) (not owned:
    the update must not overwrite them); |m̂|² from norms taken in the buffers' dtype and
    squared in float64.
    """
    scales = [factor / (1.0 - beta**t) for t in steps]
    device = grads[0].device if grads else torch.device("cpu")
    if foreach and grads:
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta)
    else:
        for grad, exp_avg in zip(grads, exp_avgs, strict=True):
            exp_avg.lerp_(grad, 1.0 - beta)
    squares = squared_norms(exp_avgs)
    dot = weighted_sum(squares, [s * s for s in scales], device)
    return Directions(list(exp_avgs), scales, dot, False)


def apply_directions_(
    params: list[Tensor], directions: Directions, step_size: Tensor, *, foreach: bool
) -> None:
    """w_i ← w_i − η·v_i = w_i − η·s_i·t_i, η a 0-dim tensor (no host synchronisation); the
    coefficients −η·s_i are formed in η's dtype and rounded once to the parameters'."""
    if not params:
        return
    tensors, scales = directions.tensors, directions.scales
    dtype = params[0].dtype
    coefficients: dict[float, Tensor] = {}
    for scale in scales:
        if scale not in coefficients:
            coefficients[scale] = (step_size * -scale).to(dtype)
    per_tensor = [coefficients[scale] for scale in scales]
    if foreach and params[0].device.type != "cpu":
        # Multi-tensor kernels need equal shapes; scale the direction, then add it.
        if len(coefficients) == 1 and directions.owned:
            torch._foreach_mul_(tensors, per_tensor[0])
            scaled = tensors
        elif len(coefficients) == 1:
            scaled = torch._foreach_mul(tensors, per_tensor[0])
        else:
            scaled = torch._foreach_mul(tensors, [-s for s in scales])
            torch._foreach_mul_(scaled, step_size.to(dtype))
        torch._foreach_add_(params, scaled)
    elif foreach:
        torch._foreach_addcmul_(params, tensors, per_tensor)
    else:
        for param, tensor, coefficient in zip(params, tensors, per_tensor, strict=True):
            param.addcmul_(tensor, coefficient)
