"""``wide_mlp``: a wide MLP on a synthetic regression with small batches, where the optimizer's
update, not the forward and backward pass, dominates a step.

It exists for ``lrkit cost``: a method's extra passes over the parameters show at full weight
here (about 4.2 M parameters, 8 rows per batch: the forward and backward pass cost about
6·8·4.2 M flops, the Adam update about 18 passes over 17 MB), while ``fmnist_mlp`` (0.9 M
parameters, 100 rows) shows them next to a forward and backward pass that costs more than the
update.
"""

from __future__ import annotations

import torch

from lrkit.tasks import register_task
from lrkit.tasks.base import Task, TaskData
from lrkit.tasks.vision import build_seeded, mlp

WIDTHS = (1024, 2048, 1024)


def _teacher_data(seed: int) -> TaskData:
    """y = tanh(x·A/√1024) for a random A, x ~ N(0, I): 4096 training, 512 validation and 512
    test rows."""
    generator = torch.Generator().manual_seed(seed)
    teacher = torch.randn(WIDTHS[0], WIDTHS[-1], generator=generator) / WIDTHS[0] ** 0.5

    def split(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = torch.randn(size, WIDTHS[0], generator=generator)
        return inputs, torch.tanh(inputs @ teacher)

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = split(4096), split(512), split(512)
    return TaskData(train_x, train_y, val_x, val_y, test_x, test_y)


def mean_squared_error(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example mean of (ŷ − y)² over the output coordinates."""
    return (outputs - targets).pow(2).mean(dim=1)


@register_task(
    "wide_mlp",
    "MLP 1024-2048-1024 on a synthetic tanh regression, batch 8: the update dominates (cost)",
)
def wide_mlp(batch_size: int = 8, steps: int = 200) -> Task:
    """MLP 1024-2048-1024 (ReLU, PyTorch's default initialisation), mean squared error against
    a random tanh teacher, batch 8, 200 steps. See the module docstring for why."""
    return Task(
        name="wide_mlp",
        description=wide_mlp.__doc__ or "",
        model_factory=lambda generator: build_seeded(generator, lambda: mlp(WIDTHS)),
        data_factory=_teacher_data,
        per_example_loss=mean_squared_error,
        batch_size=batch_size,
        steps=steps,
        eval_every=50,
        primary_metric="test_loss",
        maximize=False,
    )
