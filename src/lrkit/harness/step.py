"""The one training-step interface between the harness and every method.

A method receives :class:`StepInputs`: the training-loss closure (always), the batch with
its instance indices, the model and task (for methods that evaluate per-example losses
themselves), and a validation batch — present only when the method's registry entry sets
``needs_validation``. Baselines never see validation data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from lrkit.data.batches import Batch
from lrkit.methods.registry import MethodSpec
from lrkit.methods.schedules import make_schedule
from lrkit.tasks.base import Task

HARNESS_HPARAMS = ("schedule",)


def ema_decay_for_budget(total_steps: int) -> float:
    """Polyak EMA decay with an averaging window of about a tenth of the run:
    ``1 − 1/max(10, T/10)``. A fixed 0.999 would leave a short run's average near its
    initialisation."""
    return 1.0 - 1.0 / max(10, total_steps // 10)


@dataclass
class StepInputs:
    """Everything a method may need for one step.

    ``closure()`` zeroes the gradients, runs forward and backward on ``batch`` and returns
    the training loss. ``per_example_losses()`` is a forward pass returning one loss per
    row of ``batch`` (with graph), for methods that weight instances.
    """

    closure: Callable[[], torch.Tensor]
    batch: Batch
    model: nn.Module
    task: Task
    validation_batch: Batch | None = None

    def per_example_losses(self) -> torch.Tensor:
        return self.task.per_example_loss(self.model(self.batch.inputs), self.batch.targets)


def make_closure(
    model: nn.Module,
    task: Task,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    grad_clip: float | None = None,
) -> Callable[[], torch.Tensor]:
    """The standard training closure: zero_grad, forward, loss, backward, optional clipping
    of the global gradient norm (the baselines' gradient clipping in L4's recurrent task)."""

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = task.loss(model(batch.inputs), batch.targets)
            loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        return loss.detach()

    return closure


class TrainingMethod:
    """A registered method bound to one model: optimizer, optional LR schedule, optional
    weight averaging (Polyak EMA, DoG's polynomial averager) and Schedule-Free's train/eval
    switch. The harness calls :meth:`step` once per training step and evaluates
    :meth:`evaluation_model`."""

    def __init__(
        self,
        spec: MethodSpec,
        model: nn.Module,
        hparams: dict[str, Any],
        total_steps: int,
        steps_per_epoch: int,
    ) -> None:
        self.spec = spec
        self.model = model
        optimizer_hparams = {k: v for k, v in hparams.items() if k not in HARNESS_HPARAMS}
        self.optimizer = spec.build_optimizer(model.parameters(), **optimizer_hparams)
        schedule = hparams.get("schedule", "constant")
        if schedule != "constant" and not spec.schedules:
            raise ValueError(f"method {spec.name!r} does not take an LR schedule")
        self.scheduler = make_schedule(self.optimizer, schedule, total_steps, steps_per_epoch)
        self.averager: Any = None
        if spec.averaging == "ema":
            self.averager = AveragedModel(
                model,
                multi_avg_fn=get_ema_multi_avg_fn(ema_decay_for_budget(total_steps)),
                use_buffers=True,
            )
        elif spec.averaging == "polynomial":
            from dog import PolynomialDecayAverager

            self.averager = PolynomialDecayAverager(model)
        if spec.train_eval_switch:
            self.optimizer.train()

    @property
    def needs_validation(self) -> bool:
        return self.spec.needs_validation

    def step(self, inputs: StepInputs) -> torch.Tensor:
        if self.spec.step_fn is not None:
            loss = self.spec.step_fn(self.optimizer, inputs)
        else:
            loss = self.optimizer.step(inputs.closure)
        if self.scheduler is not None:
            self.scheduler.step()
        if isinstance(self.averager, AveragedModel):
            self.averager.update_parameters(self.model)
        elif self.averager is not None:
            self.averager.step()
        return loss

    @contextlib.contextmanager
    def evaluation_model(self) -> Iterator[nn.Module]:
        """The weights to evaluate: the average where the method averages, Schedule-Free's
        x sequence via ``optimizer.eval()``, otherwise the model itself."""
        if isinstance(self.averager, AveragedModel):
            yield self.averager.module
        elif self.averager is not None:
            yield self.averager.averaged_model
        elif self.spec.train_eval_switch:
            self.optimizer.eval()
            try:
                yield self.model
            finally:
                self.optimizer.train()
        else:
            yield self.model

    def diagnostics(self) -> dict[str, float]:
        """Per-step values to log: the LR of the first param group, the effective LR
        d·lr of the D-adaptation family (Prodigy, D-Adapt Adam keep d in the group) and
        η·lr of DoG (its step size rbar/sqrt(G), kept as ``eta`` in the group), and
        whatever the optimizer reports through its own ``diagnostics()`` (L4's effective
        LR, ...)."""
        values: dict[str, float] = {}
        group = self.optimizer.param_groups[0]
        lr = group.get("lr")
        if lr is not None:
            values["lr"] = float(lr)
        if lr is not None and "d" in group:
            values["effective_lr"] = float(group["d"]) * float(lr)
        elif lr is not None and isinstance(group.get("eta"), list) and group["eta"]:
            values["effective_lr"] = float(group["eta"][0]) * float(lr)
        own = getattr(self.optimizer, "diagnostics", None)
        if callable(own):
            values.update(own())
        return values
