"""Multi-tensor helpers that lrkit's optimizers share: grouping tensors by device and dtype
(what torch's ``_foreach`` kernels need), choosing the multi-tensor path, and the reductions
a learned-LR rule takes over all parameters — dot products, squared norms, sums of 0-dim
results.

Reductions run in the tensors' dtype (float32 for bfloat16/float16, whose 8- or 11-bit
results would lose the sum), one 0-dim result per tensor, and are combined in the *scalar
dtype* (:func:`scalar_dtype`, float64): a sum of squares over millions of coordinates can
leave a parameter dtype's range (1e20² overflows float32) while each tensor's value, taken on
buffers kept near 1 (:mod:`lrkit.methods.scaling`), stays inside it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

FOREACH_DEVICE_TYPES = ("cpu", "cuda", "xpu")
"""Devices where torch's ``_foreach`` kernels run (on the CPU tensor by tensor, in C++)."""


def scalar_dtype(device: torch.device) -> torch.dtype:
    """The dtype of a method's scalar state (loss, L_min, g·v, η): float64, except on devices
    without float64 (Apple's MPS), where float32."""
    return torch.float32 if device.type == "mps" else torch.float64


def reduction_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a per-tensor reduction runs in: the tensor's, at least float32."""
    if dtype.is_floating_point and torch.finfo(dtype).bits < 32:
        return torch.float32
    return dtype


def device_dtype_buckets(tensors: Sequence[Tensor]) -> list[list[int]]:
    """Indices of ``tensors`` grouped by (device, dtype), in first-seen order: each bucket can
    go to one multi-tensor kernel."""
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for index, tensor in enumerate(tensors):
        groups.setdefault((tensor.device, tensor.dtype), []).append(index)
    return list(groups.values())


def use_foreach(foreach: bool | None, tensors: Sequence[Tensor]) -> bool:
    """``foreach`` if set; by default the multi-tensor path wherever its kernels run."""
    if foreach is not None:
        return foreach
    return bool(tensors) and all(t.device.type in FOREACH_DEVICE_TYPES for t in tensors)


def flat_dot(a: Tensor, b: Tensor) -> Tensor:
    """a·b over all elements, a 0-dim tensor in :func:`reduction_dtype`."""
    dtype = reduction_dtype(a.dtype)
    if a.dtype != dtype:
        a, b = a.to(dtype), b.to(dtype)
    return torch.dot(a.reshape(-1), b.reshape(-1))


def dots(xs: Sequence[Tensor], ys: Sequence[Tensor], *, nonnegative: bool) -> list[Tensor]:
    """[x_i·y_i], one 0-dim tensor per pair. When every product is known to be ≥ 0, off the
    CPU: one multi-tensor product and L1 norm; otherwise one ``torch.dot`` per pair (on the
    CPU the L1 norm is several times slower than a dot product)."""
    if nonnegative and xs and xs[0].device.type != "cpu":
        dtype = reduction_dtype(xs[0].dtype)
        return list(torch._foreach_norm(torch._foreach_mul(xs, ys), 1, dtype=dtype))
    return [flat_dot(x, y) for x, y in zip(xs, ys, strict=True)]


def squared_norms(xs: Sequence[Tensor]) -> Tensor:
    """[|x_i|²] as one vector of the scalar dtype on ``xs[0]``'s device: the norms in
    :func:`reduction_dtype`, one multi-tensor kernel per device and dtype, squared in float64
    (|x| of a float32 tensor fits float32 long after |x|² does not)."""
    if not xs:
        return torch.zeros(0, dtype=torch.float64)
    device = xs[0].device
    dtype = scalar_dtype(device)
    buckets = device_dtype_buckets(xs)
    parts = []
    for bucket in buckets:
        tensors = [xs[i] for i in bucket]
        norms = torch._foreach_norm(tensors, 2, dtype=reduction_dtype(tensors[0].dtype))
        parts.append(torch.stack(norms).to(device=device, dtype=dtype))
    norms = parts[0] if len(parts) == 1 else torch.cat(parts)
    if len(buckets) > 1:  # back to the order of ``xs``
        order = [i for bucket in buckets for i in bucket]
        norms = norms[torch.tensor(order, device=device).argsort()]
    return norms.square()


def weighted_sum(
    values: Sequence[Tensor] | Tensor, weights: Sequence[float], device: torch.device
) -> Tensor:
    """Σ_i weights[i]·values[i] — ``values`` 0-dim tensors or one vector — as a 0-dim tensor
    of the scalar dtype on ``device`` (zero when there are no values)."""
    dtype = scalar_dtype(device)
    if len(values) == 0:
        return torch.zeros((), dtype=dtype, device=device)
    if isinstance(values, Tensor):
        stacked = values.to(device=device, dtype=dtype)
    elif len({(v.device, v.dtype) for v in values}) == 1:
        stacked = torch.stack(list(values)).to(device=device, dtype=dtype)
    else:
        stacked = torch.stack([v.to(device=device, dtype=dtype) for v in values])
    if len(set(weights)) == 1:
        return stacked.sum() * weights[0]
    return (stacked * torch.tensor(list(weights), dtype=dtype, device=device)).sum()


def sum_scalars(values: Iterable[Tensor], device: torch.device) -> Tensor:
    """Σ of 0-dim tensors, in the scalar dtype on ``device`` (zero for none)."""
    parts = list(values)
    return weighted_sum(parts, [1.0] * len(parts), device)
