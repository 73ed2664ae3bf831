"""The one run-setup path: task data, model, method, batches, closures, sharding under DDP.

Training (:func:`lrkit.harness.training.train`), ``lrkit cost``, the conformance suite and
the DDP suite all build a run with :func:`prepare_run` and step it with
:meth:`PreparedRun.step`, so every method is tested the way the harness runs it: with its LR
schedule, its weight averaging, Schedule-Free's train/eval switch, and exactly the inputs its
:class:`lrkit.methods.contract.Capabilities` declare — no other method sees validation data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from lrkit.data.batches import Batch
from lrkit.harness.closures import backward_closure, graph_closure, validation_closure
from lrkit.methods.contract import BuildContext, LossClosure, StepInputs
from lrkit.methods.registry import MethodSpec
from lrkit.methods.schedules import make_schedule
from lrkit.tasks.base import Task, TaskData

HARNESS_HPARAMS = ("schedule", "schedule_options")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}
ParamGroups = Callable[[nn.Module], Sequence[dict[str, Any]]]


# ------------------------------------------------------------------------ bound method


class MethodInstance:
    """A registered method instantiated on one model: its optimizer, its LR schedule, its
    weight averager and Schedule-Free's train/eval switch.

    Args:
        spec: the registry entry.
        model: the model (unwrapped).
        hparams: the method's hyperparameters, plus ``schedule``/``schedule_options``.
        context: the build context (passed to methods that declare ``build_context``).
        param_groups: ``param_groups(model)`` → the optimizer's param groups (default: all
            parameters in one group).
    """

    def __init__(
        self,
        spec: MethodSpec,
        model: nn.Module,
        hparams: dict[str, Any],
        context: BuildContext,
        param_groups: ParamGroups | None = None,
    ) -> None:
        self.spec = spec
        self.model = model
        optimizer_hparams = {k: v for k, v in hparams.items() if k not in HARNESS_HPARAMS}
        params = model.parameters() if param_groups is None else param_groups(model)
        self.optimizer = spec.build_optimizer(params, context, **optimizer_hparams)
        schedule = hparams.get("schedule", spec.default_schedule)
        if schedule != spec.default_schedule and not spec.schedules:
            raise ValueError(f"method {spec.name!r} does not take an LR schedule")
        self.scheduler = make_schedule(
            self.optimizer,
            schedule,
            context.total_steps,
            context.steps_per_epoch,
            **hparams.get("schedule_options", {}),
        )
        self.averager = (
            None if spec.make_averager is None else spec.make_averager(model, context.total_steps)
        )
        if spec.train_eval_switch:
            self.optimizer.train()

    def step(self, inputs: StepInputs) -> torch.Tensor:
        """One optimizer step with the inputs the method declares, then the schedule and
        the averager."""
        loss = self.optimizer.step(inputs.closure, **inputs.step_keywords(self.spec.capabilities))
        if self.scheduler is not None:
            self.scheduler.step()
        if self.averager is not None:
            self.averager.update()
        return loss

    @contextlib.contextmanager
    def evaluation_model(self) -> Iterator[nn.Module]:
        """The weights to evaluate: the average where the method averages, Schedule-Free's
        x sequence via ``optimizer.eval()``, otherwise the model itself."""
        if self.averager is not None:
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
        """What the method reports every logged step (``lr``, ``effective_lr``, ...)."""
        return self.spec.diagnostics(self.optimizer)

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's, the scheduler's and the averager's state."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "averager": None if self.averager is None else self.averager.state_dict(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state_dict["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state_dict["scheduler"])
        if self.averager is not None:
            self.averager.load_state_dict(state_dict["averager"])


# ---------------------------------------------------------------------------- the run


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without an initialised process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"cuda"`` means this rank's GPU (LOCAL_RANK under torchrun)."""
    if device is None:
        return torch.device("cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and resolved.index is None:
        import os

        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return resolved


@torch.no_grad()
def full_training_loss(model: nn.Module, task: Task, data: TaskData, chunk: int = 2048) -> float:
    """The mean per-example training loss over the whole training set, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        param = next(model.parameters())
        total, count = 0.0, 0
        for start in range(0, data.num_train, chunk):
            inputs = data.train_inputs[start : start + chunk].to(param.device)
            targets = data.train_targets[start : start + chunk].to(param.device)
            if inputs.is_floating_point():
                inputs = inputs.to(param.dtype)
            losses = task.per_example_loss(model(inputs), targets)
            total += float(losses.double().sum())
            count += int(losses.shape[0])
        return total / max(1, count)
    finally:
        model.train(was_training)


@dataclass
class PreparedRun:
    """A model, a method and the batch streams of one run, ready to step.

    ``trained`` is what the backward closure runs (the DDP wrapper under torch.distributed,
    else the model). :meth:`step` draws the next batch (this rank's shard of the global
    batch), the validation batch where the method's capabilities make one due, builds the
    closures the method declares and takes one step.
    """

    task: Task
    data: TaskData
    spec: MethodSpec
    model: nn.Module
    trained: nn.Module
    method: MethodInstance
    context: BuildContext
    total_steps: int
    steps_per_epoch: int
    batch_size: int | None
    grad_clip: float | None
    rank: int
    world_size: int
    device: torch.device
    dtype: torch.dtype | None
    train_batches: Iterator[Batch]
    validation_batches: Iterator[Batch] | None
    steps_drawn: int = 0

    def _prepare(self, batch: Batch) -> Batch:
        if self.world_size > 1:
            batch = batch.shard(self.rank, self.world_size)
        batch = batch.to(self.device)
        if self.dtype is not None:
            batch = Batch(
                batch.inputs.to(self.dtype) if batch.inputs.is_floating_point() else batch.inputs,
                batch.targets.to(self.dtype)
                if batch.targets.is_floating_point()
                else batch.targets,
                batch.indices,
            )
        return batch

    def draw_inputs(self) -> StepInputs:
        """The next step's inputs (batches drawn and closures built, nothing run)."""
        self.steps_drawn += 1
        capabilities = self.spec.capabilities
        batch = self._prepare(next(self.train_batches))
        validation = None
        if capabilities.validation_due(self.steps_drawn):
            assert self.validation_batches is not None
            validation = validation_closure(
                self.model, self.task, self._prepare(next(self.validation_batches))
            )
        if capabilities.closure_returns_graph:
            if self.grad_clip is not None:
                raise ValueError(
                    f"method {self.spec.name!r} differentiates the loss itself; gradient "
                    "clipping by the harness does not apply to it"
                )
            closure = graph_closure(
                self.trained, self.model, self.task, batch, capabilities.per_example_losses
            )
        else:
            closure = backward_closure(
                self.trained, self.task, batch, self.method.optimizer, self.grad_clip
            )
        return StepInputs(closure, batch, validation)

    def take_step(self, inputs: StepInputs) -> torch.Tensor:
        return self.method.step(inputs)

    def step(
        self, wrap_closure: Callable[[LossClosure], LossClosure] | None = None
    ) -> torch.Tensor:
        """One step on the next batch; ``wrap_closure(closure)`` may replace the training
        closure (tests count its calls or poison its loss)."""
        inputs = self.draw_inputs()
        if wrap_closure is not None:
            inputs = replace(inputs, closure=wrap_closure(inputs.closure))
        return self.take_step(inputs)

    def skip(self, steps: int) -> None:
        """Advances the batch streams by ``steps`` steps without training (a resumed run)."""
        for _ in range(steps):
            self.draw_inputs()

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs besides its batch streams: the model's and the
        method's state and the number of steps taken."""
        return {
            "model": self.model.state_dict(),
            "method": self.method.state_dict(),
            "steps": self.steps_drawn,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores :meth:`state_dict` into a freshly prepared run and advances its streams."""
        self.model.load_state_dict(state_dict["model"])
        self.method.load_state_dict(state_dict["method"])
        self.skip(int(state_dict["steps"]) - self.steps_drawn)


def prepare_run(
    task: Task,
    spec: MethodSpec,
    *,
    hparams: dict[str, Any] | None = None,
    seed: int = 0,
    steps: int | None = None,
    batch_size: int | None = None,
    dtype: torch.dtype | None = None,
    grad_clip: float | None = None,
    param_groups: ParamGroups | None = None,
    device: str | torch.device | None = None,
    data: TaskData | None = None,
) -> PreparedRun:
    """Builds one run of ``spec`` on ``task`` (see :class:`PreparedRun`).

    Args:
        task: the task (registered or not).
        spec: the method's registry entry.
        hparams: the method's hyperparameters (defaults: the entry's).
        seed: model initialisation, batch order (validation batches: ``seed + 1``).
        steps, batch_size: override the task's budget and batch size.
        dtype: cast the model (and floating batches) to this dtype.
        grad_clip: clip the global gradient norm in the backward closure.
        param_groups: ``param_groups(model)`` → the optimizer's param groups.
        device: "cpu" (default) or "cuda".
        data: the task's data when already loaded (default: ``task.load_data(seed)``).
    """
    spec.check_available()
    data = task.load_data(seed) if data is None else data
    torch.manual_seed(seed)
    resolved = resolve_device(device)
    model = task.build_model(seed).to(resolved)
    if dtype is not None:
        model = model.to(dtype)
    size = task.batch_size if batch_size is None else batch_size
    steps_per_epoch = task.steps_per_epoch(data, size)
    total_steps = task.steps if steps is None else steps
    rank, world_size = world()
    trained: nn.Module = model
    if world_size > 1:
        device_ids = [resolved.index] if resolved.type == "cuda" else None
        trained = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    capabilities = spec.capabilities
    context = BuildContext(
        model=model,
        num_train=data.num_train,
        num_classes=data.num_classes,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        per_example_loss=task.per_example_loss,
        reduction=task.reduction,
        device=resolved,
        initial_train_loss=(
            full_training_loss(model, task, data) if capabilities.initial_train_loss else None
        ),
    )
    method = MethodInstance(spec, model, dict(hparams or {}), context, param_groups)
    train_batches = task.train_batches(data, torch.Generator().manual_seed(seed), size)
    validation_batches = (
        task.validation_batches(data, torch.Generator().manual_seed(seed + 1), size)
        if capabilities.validation_every
        else None
    )
    return PreparedRun(
        task=task,
        data=data,
        spec=spec,
        model=model,
        trained=trained,
        method=method,
        context=context,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        batch_size=size,
        grad_clip=grad_clip,
        rank=rank,
        world_size=world_size,
        device=resolved,
        dtype=dtype,
        train_batches=train_batches,
        validation_batches=validation_batches,
    )
