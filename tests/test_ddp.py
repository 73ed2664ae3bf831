"""Every method configuration (tests/method_configs.py) under 2-process
DistributedDataParallel (gloo, CPU).

One pair of processes is spawned for the whole file; each rank prepares the same seeded
float64 MLP run with :func:`lrkit.harness.setup.prepare_run` — the harness's own path, which
wraps the model in DDP and gives each rank its contiguous half of every global batch, and
hands each method the inputs its capabilities declare — and trains ``STEPS`` steps of every
configuration in turn. Per configuration the test then asserts that both ranks hold
bit-identical parameters and method state, and that they match a single-process run on the
full global batches: with equal shards, each rank's mean loss and DDP's (or the method's own)
gradient averaging give the full-batch mean gradient, so only rounding differs. A
configuration that cannot run under DDP declares the ``ddp`` skip with its reason.
"""

from __future__ import annotations

import datetime
import gc
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from lrkit.harness.setup import prepare_run
from lrkit.tasks.base import Task, TaskData
from method_configs import MethodConfig, method_configs
from test_conformance import _assert_same

WORLD_SIZE = 2
STEPS = 10
GLOBAL_BATCH = 16
PROCESS_GROUP_TIMEOUT_S = 30
SPAWN_DEADLINE_S = 120
# float64 rounding of (mean over 8 rows + mean over 8 rows) / 2 vs the mean over 16 rows,
# carried through 10 steps: a few ulps, far inside these tolerances.
RTOL, ATOL = 1e-11, 1e-13

CONFIGS = {config.id: config for config in method_configs()}
RUNNABLE = [
    config.id for config in CONFIGS.values() if config.spec.available and "ddp" not in config.skips
]


class SmallMLP(nn.Module):
    """6 → 16 (tanh) → 1, initialised from the task's generator."""

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        self.hidden = nn.Linear(6, 16)
        self.output = nn.Linear(16, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.4 * torch.randn(p.shape, generator=generator))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.output(torch.tanh(self.hidden(inputs))).squeeze(-1)


def _data(seed: int) -> TaskData:
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(6, generator=generator, dtype=torch.float64)

    def split(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = torch.randn(size, 6, generator=generator, dtype=torch.float64)
        return inputs, torch.sin(inputs @ weights)

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = split(160), split(32), split(32)
    return TaskData(train_x, train_y, val_x, val_y, test_x, test_y)


def regression_task() -> Task:
    return Task(
        name="ddp_mlp",
        description="small MLP regression for the DDP test",
        model_factory=SmallMLP,
        data_factory=_data,
        per_example_loss=lambda outputs, targets: (outputs - targets).pow(2),
        batch_size=GLOBAL_BATCH,
        steps=STEPS,
        eval_every=STEPS,
        primary_metric="test_loss",
        maximize=False,
    )


def train(config_id: str) -> dict[str, object]:
    """``STEPS`` steps of one configuration (under DDP when a process group is up): the
    parameters and the optimizer's state dict."""
    config = CONFIGS[config_id]
    run = prepare_run(
        regression_task(), config.spec, hparams=config.hparams, dtype=torch.float64, steps=STEPS
    )
    for _ in range(STEPS):
        run.step()
    return {
        "params": [p.detach().clone() for p in run.model.parameters()],
        "state": run.method.optimizer.state_dict(),
    }


def _worker(rank: int, world_size: int, port: int, names: list[str], out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        rank=rank,
        world_size=world_size,
        timeout=datetime.timedelta(seconds=PROCESS_GROUP_TIMEOUT_S),
    )
    try:
        results: dict[str, dict | str] = {}
        for name in names:
            try:
                results[name] = train(name)
            except Exception as exc:  # recorded per method; the test reports it
                results[name] = f"{type(exc).__name__}: {exc}"
        torch.save(results, Path(out_dir) / f"rank{rank}.pt")
        gc.collect()  # drop the DDP reducers before the group goes (see distributed_context)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """Spawns the two ranks once for all methods; fails instead of hanging."""
    out_dir = tmp_path_factory.mktemp("ddp")
    context = mp.start_processes(
        _worker,
        args=(WORLD_SIZE, _free_port(), RUNNABLE, str(out_dir)),
        nprocs=WORLD_SIZE,
        join=False,
        start_method="spawn",
    )
    deadline = time.monotonic() + SPAWN_DEADLINE_S
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"DDP workers did not finish within {SPAWN_DEADLINE_S} s")
    return [torch.load(out_dir / f"rank{rank}.pt") for rank in range(WORLD_SIZE)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("config", list(CONFIGS.values()), ids=lambda config: config.id)
def test_ddp_matches_single_process(config: MethodConfig, ddp_results: list[dict]) -> None:
    if not config.spec.available:
        pytest.skip(f"{config.id} needs the optional package {config.spec.requires!r}")
    if "ddp" in config.skips:
        pytest.skip(f"{config.id} declares 'ddp' does not apply: {config.skips['ddp']}")
    per_rank = [results[config.id] for results in ddp_results]
    for rank, result in enumerate(per_rank):
        assert not isinstance(result, str), f"{config.id} failed on rank {rank}: {result}"
    for p0, p1 in zip(per_rank[0]["params"], per_rank[1]["params"], strict=True):
        assert torch.equal(p0, p1), f"{config.id}: the ranks' parameters differ"
    if "ddp_state" not in config.skips:
        _assert_same(per_rank[1]["state"], per_rank[0]["state"], f"{config.id} state on rank 1")
    single = train(config.id)
    initial = list(regression_task().build_model(0, torch.float64).parameters())
    for distributed, reference, start in zip(
        per_rank[0]["params"], single["params"], initial, strict=True
    ):
        assert not torch.equal(reference, start.detach()), f"{config.id} did not move"
        torch.testing.assert_close(distributed, reference, rtol=RTOL, atol=ATOL)
