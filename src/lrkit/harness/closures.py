"""The closures the harness hands a method (:mod:`lrkit.methods.contract` defines their
forms): torch.optim's backward closure, the graph closure of methods that differentiate the
loss themselves, and the validation closure."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call

from lrkit.data.batches import Batch
from lrkit.methods.contract import GraphClosure, LossClosure
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


def _functional_forward(
    model: nn.Module, inputs: torch.Tensor, parameters: Mapping[str, torch.Tensor] | None
) -> torch.Tensor:
    """``model(inputs)`` at ``parameters`` (name → tensor; the model's own where not given),
    on copies of the model's buffers, so BatchNorm statistics stay untouched and the call
    works inside torch.func transforms."""
    state: dict[str, torch.Tensor] = {
        name: buffer.clone() for name, buffer in model.named_buffers()
    }
    if parameters is not None:
        state.update(parameters)
    return functional_call(model, state, (inputs,))


def graph_closure(
    trained: nn.Module, model: nn.Module, task: Task, batch: Batch, per_example: bool
) -> GraphClosure:
    """Forward only: the training loss — the per-example loss vector when ``per_example`` —
    with its graph; the method differentiates it. ``closure(parameters)`` evaluates it at
    other parameter values (name → tensor, a functional call of the unwrapped model, e.g.
    for Hessian-vector products with torch.func). Under DDP the plain forward runs in
    ``no_sync()`` (buffers still broadcast from rank 0) and the method averages what it
    computes across ranks itself."""

    def closure(parameters: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        with torch.enable_grad():
            if parameters is not None:
                outputs = _functional_forward(model, batch.inputs, parameters)
            elif isinstance(trained, nn.parallel.DistributedDataParallel):
                with trained.no_sync():
                    outputs = trained(batch.inputs)
            else:
                outputs = trained(batch.inputs)
            losses = task.per_example_loss(outputs, batch.targets)
        return losses if per_example else task.reduce(losses)

    return closure


def validation_closure(model: nn.Module, task: Task, batch: Batch) -> GraphClosure:
    """The task's loss on a validation batch, with its graph, at the model's parameters or at
    ``parameters`` (name → tensor); on copies of the model's buffers (BatchNorm running
    statistics stay untouched); writes no gradients."""

    def closure(parameters: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        with torch.enable_grad():
            outputs = _functional_forward(model, batch.inputs, parameters)
            return task.loss(outputs, batch.targets)

    return closure
