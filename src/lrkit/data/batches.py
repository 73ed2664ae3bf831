"""Mini-batches that carry their instance indices, and seeded batch iteration."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Batch:
    """One mini-batch. ``indices`` are positions in the training set the batch came from,
    so that per-instance methods (per-example learning rates) can address their state."""

    inputs: torch.Tensor
    targets: torch.Tensor
    indices: torch.Tensor

    def __len__(self) -> int:
        return int(self.indices.numel())

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.inputs.to(device), self.targets.to(device), self.indices.to(device))

    def shard(self, rank: int, world_size: int) -> Batch:
        """The contiguous slice of this batch that rank ``rank`` of ``world_size`` trains on
        (DDP with a fixed global batch). The batch size must divide evenly."""
        n = len(self)
        if n % world_size:
            raise ValueError(f"batch of {n} does not split evenly over {world_size} ranks")
        size = n // world_size
        part = slice(rank * size, (rank + 1) * size)
        return Batch(self.inputs[part], self.targets[part], self.indices[part])


def iterate_batches(
    inputs: torch.Tensor,
    targets: torch.Tensor,
    batch_size: int | None,
    *,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
    drop_last: bool = True,
    indices: torch.Tensor | None = None,
) -> Iterator[Batch]:
    """Yields one epoch of batches. ``batch_size=None`` means the full set as one batch.
    ``indices`` (default ``arange(len(inputs))``) are the instance ids that travel with rows."""
    n = inputs.shape[0]
    if targets.shape[0] != n:
        raise ValueError(f"inputs have {n} rows but targets have {targets.shape[0]}")
    ids = torch.arange(n) if indices is None else indices
    if ids.shape[0] != n:
        raise ValueError(f"inputs have {n} rows but indices have {ids.shape[0]}")
    size = n if batch_size is None else batch_size
    if size <= 0:
        raise ValueError(f"batch_size must be positive, got {size}")
    if not shuffle and size >= n:
        yield Batch(inputs, targets, ids)  # the whole set, as it is (no copy)
        return
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    stop = n - n % size if drop_last and n >= size else n
    for start in range(0, stop, size):
        rows = order[start : start + size]
        yield Batch(inputs[rows], targets[rows], ids[rows])
