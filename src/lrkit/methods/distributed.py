"""What methods do under ``torch.distributed`` (DDP): agree on one value across ranks.

DDP averages the gradients of the *backward* closure. Everything else a method computes from
data — the loss it reads, gradients it takes itself from a graph closure, validation
gradients, hypergradients — it averages here, so that every rank takes the same step.
Without an initialised process group these are no-ops.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist


def world_size() -> int:
    """The number of ranks (1 without an initialised process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def average_across_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of ``value`` over ranks (a new tensor; ``value`` itself when alone)."""
    size = world_size()
    if size == 1:
        return value
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total / size


def average_across_ranks_(tensors: Sequence[torch.Tensor]) -> None:
    """Replaces every tensor in place by its mean over ranks (one all-reduce per tensor)."""
    size = world_size()
    if size == 1:
        return
    for tensor in tensors:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        tensor.div_(size)


def gather_across_ranks(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0 in rank order (all ranks must pass
    the same shape): e.g. the instance indices and losses of every shard of a batch."""
    size = world_size()
    if size == 1:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)
