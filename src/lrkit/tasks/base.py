"""What a task is: model, loss (mean and per example), data, budget and metrics.

Every method and baseline in lrkit trains on a :class:`Task` through the same interface, so
adding a task is one registry entry (see :mod:`lrkit.tasks`) plus the code that builds it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from lrkit.data.batches import Batch, iterate_batches


@dataclass
class TaskData:
    """Tensors of one task instance. The validation split is held out of the training set
    (class-balanced where there are classes): methods that declare they need validation
    data (hypergradients, meta-learning) draw batches from it; baselines never see it.
    ``train_indices`` are the instance ids that travel with every training batch.

    Args:
        train_inputs, train_targets: the training split.
        validation_inputs, validation_targets: the held-out validation split.
        test_inputs, test_targets: the test split (never used for tuning).
        num_classes: classes of a classification task, else None.
        train_indices: instance ids of the training rows (default 0…N−1).
        extras: task-specific values (e.g. the regression's matrix).
    """

    train_inputs: torch.Tensor
    train_targets: torch.Tensor
    validation_inputs: torch.Tensor
    validation_targets: torch.Tensor
    test_inputs: torch.Tensor
    test_targets: torch.Tensor
    num_classes: int | None = None
    train_indices: torch.Tensor | None = None
    extras: dict = field(default_factory=dict)

    @property
    def num_train(self) -> int:
        return int(self.train_inputs.shape[0])

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, targets) of the "train", "validation" or "test" split."""
        if name not in ("train", "validation", "test"):
            raise ValueError(f"unknown split {name!r}; expected train, validation or test")
        return getattr(self, f"{name}_inputs"), getattr(self, f"{name}_targets")


@dataclass
class Task:
    """A training problem.

    ``per_example_loss(outputs, targets)`` returns one loss per row; the training loss is
    their mean (``reduction="mean"``) or sum (``"sum"``, e.g. the sum-of-squares regression
    of L4's Table 2). ``batch_size=None`` means full-batch (deterministic) training.
    ``steps`` is the default budget in optimizer steps. ``primary_metric`` (with ``maximize``)
    is what results and claims report; tuning selects on :attr:`selection_metric`, the same
    quantity on the validation split (``validation_accuracy`` for ``test_accuracy``) — or,
    for tasks whose objective is the training loss itself (the regression, the 2-D test
    functions), the training loss. ``evaluation_splits`` are the splits :meth:`evaluate`
    reports on; ``metrics_fn(model, inputs, targets)`` → unprefixed metrics of one split
    (default: loss, and accuracy for integer targets).

    Args:
        name, description: the registry name and what the task is.
        model_factory: ``model_factory(generator)`` → the model, initialised from it.
        data_factory: ``data_factory(seed)`` → :class:`TaskData`.
        per_example_loss: ``per_example_loss(outputs, targets)`` → one loss per row.
        batch_size: mini-batch size; None for full-batch training.
        steps: the default budget in optimizer steps.
        eval_every: steps between evaluations.
        primary_metric, maximize: what is reported and compared, and its direction.
        reduction: "mean" or "sum" of the per-example losses.
        metrics_fn: metrics of one split (default: loss and accuracy).
        evaluation_splits: the splits :meth:`evaluate` reports on.
        data_seed_from_run: synthetic problems draw a new instance per run seed.
        options: the options the registry built the task with.
    """

    name: str
    description: str
    model_factory: Callable[[torch.Generator], nn.Module]
    data_factory: Callable[[int], TaskData]
    per_example_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    batch_size: int | None
    steps: int
    eval_every: int
    primary_metric: str = "test_accuracy"
    maximize: bool = True
    reduction: Literal["mean", "sum"] = "mean"
    metrics_fn: Callable[[nn.Module, torch.Tensor, torch.Tensor], dict[str, float]] | None = None
    evaluation_splits: tuple[str, ...] = ("validation", "test")
    data_seed_from_run: bool = False
    options: dict = field(default_factory=dict)

    @property
    def selection_metric(self) -> str:
        """What tuning selects on: the primary metric measured on the validation split, or
        the primary metric itself when it is not a test-set metric (the training loss)."""
        if self.primary_metric.startswith("test_"):
            return "validation_" + self.primary_metric.removeprefix("test_")
        return self.primary_metric

    def build_model(self, seed: int, dtype: torch.dtype | None = None) -> nn.Module:
        """The model, initialised from ``seed``, in the task's own dtype unless ``dtype``
        is given (the regression and 2-D test functions are float64)."""
        generator = torch.Generator().manual_seed(seed)
        model = self.model_factory(generator)
        return model if dtype is None else model.to(dtype)

    def load_data(self, seed: int = 0) -> TaskData:
        """The task's data. Real datasets use a fixed split (``seed`` ignored unless
        ``data_seed_from_run``); synthetic problems draw a new problem per seed."""
        return self.data_factory(seed if self.data_seed_from_run else 0)

    def reduce(self, per_example: torch.Tensor) -> torch.Tensor:
        """The training loss from per-example losses (their mean or sum)."""
        return per_example.sum() if self.reduction == "sum" else per_example.mean()

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.per_example_loss(outputs, targets))

    def steps_per_epoch(self, data: TaskData, batch_size: int | None = None) -> int:
        size = self.batch_size if batch_size is None else batch_size
        return 1 if size is None else max(1, data.num_train // size)

    def train_batches(
        self, data: TaskData, generator: torch.Generator, batch_size: int | None = None
    ) -> Iterator[Batch]:
        """Endless stream of training batches: reshuffled epochs, each batch with indices; a
        full-batch task gets the whole training set, unshuffled, every step."""
        size = self.batch_size if batch_size is None else batch_size
        while True:
            yield from iterate_batches(
                data.train_inputs,
                data.train_targets,
                size,
                generator=generator,
                shuffle=size is not None,
                indices=data.train_indices,
            )

    def validation_batches(
        self, data: TaskData, generator: torch.Generator, batch_size: int | None = None
    ) -> Iterator[Batch]:
        """Endless stream of batches from the held-out validation (meta) split."""
        size = self.batch_size if batch_size is None else batch_size
        size = None if size is None else min(size, int(data.validation_inputs.shape[0]))
        while True:
            yield from iterate_batches(
                data.validation_inputs, data.validation_targets, size, generator=generator
            )

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: TaskData) -> dict[str, float]:
        """Metrics of ``model`` (put in eval mode and restored) on every split of
        ``evaluation_splits``, prefixed by the split: ``validation_loss``, ``test_accuracy``..."""
        was_training = model.training
        model.eval()
        try:
            metrics: dict[str, float] = {}
            for split in self.evaluation_splits:
                inputs, targets = data.split(split)
                if self.metrics_fn is not None:
                    values = self.metrics_fn(model, inputs, targets)
                else:
                    values = classification_metrics(self, model, inputs, targets)
                metrics.update({f"{split}_{name}": value for name, value in values.items()})
            return metrics
        finally:
            model.train(was_training)


def classification_metrics(
    task: Task,
    model: nn.Module,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    chunk: int = 2048,
) -> dict[str, float]:
    """Mean loss and (for integer targets) accuracy, in chunks, no grad."""
    total_loss, correct, count = 0.0, 0, 0
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None else torch.float32
    classification = not targets.is_floating_point()
    for start in range(0, inputs.shape[0], chunk):
        x = inputs[start : start + chunk]
        x = x.to(dtype) if x.is_floating_point() else x
        y = targets[start : start + chunk]
        out = model(x)
        total_loss += float(task.per_example_loss(out, y).double().sum())
        if classification:
            correct += int((out.argmax(dim=-1) == y).sum())
            count += int(y.numel())
    metrics = {"loss": total_loss / max(1, inputs.shape[0])}
    if classification:
        metrics["accuracy"] = correct / max(1, count)
    return metrics
