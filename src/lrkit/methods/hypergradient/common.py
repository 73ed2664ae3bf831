"""What the hypergradient optimizers share: the dtype of their scalar state, global dot
products, the check that global hyperparameters agree across param groups, and the error
raised for NaN/inf inputs."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def scalar_dtype(params: Sequence[Tensor]) -> torch.dtype:
    """float64 when any parameter is float64, else float32: the dtype of η, β, μ and of the
    dot products behind the hypergradients (bfloat16/float16 parameters accumulate in
    float32)."""
    return torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32


def buckets(tensors: Sequence[Tensor]) -> list[list[int]]:
    """Indices of ``tensors`` grouped by (device, dtype) in first-seen order: the lists a
    multi-tensor (foreach) kernel can take at once."""
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for index, tensor in enumerate(tensors):
        groups.setdefault((tensor.device, tensor.dtype), []).append(index)
    return list(groups.values())


def flat_dot(xs: Sequence[Tensor], ys: Sequence[Tensor], dtype: torch.dtype) -> Tensor:
    """Σ_i x_i·y_i over all tensors, accumulated in ``dtype`` (0-dim, on the first tensor's
    device). One ``torch.dot`` per tensor: on the CPU the multi-tensor norm kernels are
    slower than dot products, and a product of two tensors needs no temporary this way."""
    if not xs:
        return torch.zeros((), dtype=dtype)
    device = xs[0].device
    dots = []
    for x, y in zip(xs, ys, strict=True):
        if x.dtype != dtype:
            x, y = x.to(dtype), y.to(dtype)
        dots.append(torch.dot(x.reshape(-1), y.reshape(-1)).to(device))
    return dots[0] if len(dots) == 1 else torch.stack(dots).sum()


def check_equal_across_groups(
    groups: Sequence[dict[str, Any]], keys: Sequence[str], who: str, why: str
) -> None:
    """Raises ValueError when a global hyperparameter differs between param groups."""
    first = groups[0]
    for index, group in enumerate(groups[1:], start=1):
        for key in keys:
            if group[key] != first[key]:
                raise ValueError(
                    f"{who}: {key} must be the same in every param group ({why}), but group "
                    f"{index} has {key}={group[key]!r} and group 0 has {first[key]!r}"
                )


def raise_if_non_finite(
    who: str,
    loss: Tensor,
    grads: Sequence[Tensor],
    hvps: Sequence[Tensor] | None = None,
    validation: tuple[Tensor, Sequence[Tensor]] | None = None,
    scalars: dict[str, Tensor] | None = None,
) -> None:
    """Raises FloatingPointError naming the first non-finite input. Called once a cheap
    combined check (sums of the tensors) has failed, before anything has changed; returns
    normally when every input is finite and only a sum overflowed."""
    suffix = "; no parameter or optimizer state was changed"
    if not math.isfinite(float(loss)):
        raise FloatingPointError(f"{who} got a non-finite training loss ({float(loss)}){suffix}")
    parts = [("training gradient", grads), ("Hessian-vector product", hvps or [])]
    if validation is not None:
        value = float(validation[0])
        if not math.isfinite(value):
            raise FloatingPointError(
                f"{who} got a non-finite validation loss ({value}; an empty validation batch "
                f"gives NaN){suffix}"
            )
        parts.append(("validation gradient", validation[1]))
    for label, tensors in parts:
        for index, tensor in enumerate(tensors):
            if not bool(torch.isfinite(tensor).all()):
                raise FloatingPointError(
                    f"{who} got a non-finite {label} for parameter {index}{suffix}"
                )
    for name, value in (scalars or {}).items():
        if not math.isfinite(float(value)):
            raise FloatingPointError(
                f"{who}: {name} overflowed to {float(value)} (the run is diverging; lower the "
                f"hyper-learning rate){suffix}"
            )
