"""Running under ``torchrun``: initialise a process group from the environment (gloo on
CPU, nccl on CUDA) when WORLD_SIZE > 1, and tear it down afterwards. The training loop
(:func:`lrkit.harness.training.train`) then wraps the model in DDP and shards each global
batch by rank."""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator

import torch
import torch.distributed as dist


@contextlib.contextmanager
def distributed_context() -> Iterator[int]:
    """Yields this process's rank (0 when not launched by torchrun)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or dist.is_initialized():
        yield dist.get_rank() if dist.is_initialized() else 0
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    completed = False
    try:
        yield dist.get_rank()
        completed = True
    finally:
        if completed:
            # Every rank waits for the others and drops its DDP reducers before the group
            # goes: a rank that tore gloo down while its peer (or its own reducer's worker
            # threads) still held work aborted with "terminate called without an active
            # exception" in CI.
            gc.collect()
            dist.barrier()
        dist.destroy_process_group()
