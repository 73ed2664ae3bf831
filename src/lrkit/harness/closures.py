"""The closures the harness hands a method (:mod:`lrkit.methods.contract` defines their
forms): torch.optim's backward closure, the graph closure of methods that differentiate the
loss themselves, and the validation closure."""

from __future__ import annotations

import contextlib

import torch
from torch import nn
from torch.func import functional_call

from lrkit.data.batches import Batch
from lrkit.methods.contract import LossClosure
from lrkit.tasks.base import Task


def backward_closure(
    module: nn.Module,
    task: Task,
    batch: Batch,
    optimizer: torch.optim.Optimizer,
    grad_clip: float | None = None,
) -> LossClosure:
    """torch.optim's closure: zero_grad, forward, loss, backward, optional clipping of the
    global gradient norm (the baselines' gradient clipping in L4's recurrent task)."""

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.enable_grad():
            loss = task.loss(module(batch.inputs), batch.targets)
            loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
        return loss.detach()

    return closure


def graph_closure(module: nn.Module, task: Task, batch: Batch, per_example: bool) -> LossClosure:
    """Forward only: the training loss — the per-example loss vector when ``per_example`` —
    with its graph; the method differentiates it. Under DDP the forward runs in
    ``no_sync()`` (buffers still broadcast from rank 0) and the method averages what it
    computes across ranks itself."""

    def closure() -> torch.Tensor:
        sync = (
            module.no_sync()
            if isinstance(module, nn.parallel.DistributedDataParallel)
            else contextlib.nullcontext()
        )
        with sync, torch.enable_grad():
            losses = task.per_example_loss(module(batch.inputs), batch.targets)
        return losses if per_example else task.reduce(losses)

    return closure


def validation_closure(model: nn.Module, task: Task, batch: Batch) -> LossClosure:
    """The task's loss on a validation batch, with its graph, evaluated on copies of the
    model's buffers (BatchNorm running statistics stay untouched); writes no gradients."""

    def closure() -> torch.Tensor:
        buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
        with torch.enable_grad():
            outputs = functional_call(model, buffers, (batch.inputs,))
            return task.loss(outputs, batch.targets)

    return closure
