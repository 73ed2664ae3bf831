"""The method contract: what a method declares it needs, what it is built with, and what it
receives every step.

Every lrkit optimizer is a plain ``torch.optim.Optimizer`` that a user drives from their own
loop. What a method needs beyond the training closure it declares as :class:`Capabilities`,
and it receives exactly that — as keyword arguments of ``step`` — from whoever drives it: a
user's loop, or the harness (``lrkit bench``/``train``/``cost``), the conformance suite and the
DDP suite, which all read the same declaration through :meth:`StepInputs.step_keywords`.

The training closure has one of two forms, chosen by the capabilities:

* *backward* (torch.optim's convention, the default): the closure zeroes the gradients, runs
  forward and backward, and returns the loss;
* *graph* (``per_example_losses`` or ``second_order``): the closure runs the forward pass only
  and returns the loss — the vector of per-example losses when ``per_example_losses`` — with
  its autograd graph; the method differentiates it itself (weighted by instance, or twice for
  Hessian-vector products). One forward pass serves the loss and the per-example losses.
  ``closure(parameters)`` evaluates the same batch at other parameter values (a mapping
  name → tensor, names as in ``model.named_parameters()``; a functional call, so it works
  inside torch.func transforms such as ``jvp`` over ``grad``).

The validation closure (``validation_every`` ≥ 1) runs a forward pass on a batch of held-out
data and returns the task's loss on it with its graph, at the model's parameters or at
``parameters`` like the graph closure; it neither zeroes nor writes gradients and does not
change the model's buffers (BatchNorm statistics).

Under ``torch.distributed`` each rank's closures see that rank's shard of the batch. DDP
averages the gradients of the backward closure; whatever a method computes from a graph or
validation closure it averages across ranks itself (:mod:`lrkit.methods.distributed`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import nn

from lrkit.data.batches import Batch

LossClosure = Callable[[], torch.Tensor]
GraphClosure = Callable[..., torch.Tensor]
PerExampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Capabilities:
    """What a method needs beyond the training closure (cf. timm's ``OptimInfo`` flags and
    optax's extra-args transformations).

    Args:
        validation_every: 0 — the method never sees validation data; k ≥ 1 — ``step`` gets a
            ``validation_closure`` on every k-th step (steps k, 2k, …; ``None`` on the others).
        per_example_losses: the training closure returns the per-example loss vector with
            its graph and no backward (the method weights the examples itself).
        instance_indices: ``step`` gets ``batch=`` (a :class:`lrkit.data.batches.Batch`: the
            rows' instance indices and targets, e.g. for per-instance or per-class tables).
        second_order: the training closure returns the loss with its graph and no backward,
            so that the method can take Hessian-vector products.
        build_context: the factory gets ``context=`` (a :class:`BuildContext`).
        initial_train_loss: the build context carries the initial full-training-set loss.
    """

    validation_every: int = 0
    per_example_losses: bool = False
    instance_indices: bool = False
    second_order: bool = False
    build_context: bool = False
    initial_train_loss: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.validation_every, bool) or self.validation_every < 0:
            raise ValueError(f"validation_every must be an int >= 0, got {self.validation_every!r}")
        if self.initial_train_loss and not self.build_context:
            raise ValueError(
                "initial_train_loss is carried by the build context: set build_context"
            )

    @property
    def closure_returns_graph(self) -> bool:
        """Whether the training closure is of the *graph* form (module docstring)."""
        return self.per_example_losses or self.second_order

    def validation_due(self, step: int) -> bool:
        """Whether 1-based ``step`` gets a validation closure."""
        return self.validation_every > 0 and step % self.validation_every == 0

    def declared(self) -> list[str]:
        """The declared capabilities, as words for listings and reports."""
        words = []
        if self.validation_every == 1:
            words.append("validation every step")
        elif self.validation_every > 1:
            words.append(f"validation every {self.validation_every} steps")
        for name in (
            "per_example_losses",
            "instance_indices",
            "second_order",
            "build_context",
            "initial_train_loss",
        ):
            if getattr(self, name):
                words.append(name.replace("_", " "))
        return words


@dataclass(frozen=True)
class BuildContext:
    """What a method may need to know when it is built (``Capabilities.build_context``).

    Args:
        model: the model being trained (unwrapped, not a DistributedDataParallel wrapper).
        num_train: training instances (the size of a per-instance table).
        num_classes: classes of a classification task, else ``None``.
        total_steps: the run's budget in optimizer steps.
        steps_per_epoch: optimizer steps per pass over the training set.
        per_example_loss: ``per_example_loss(outputs, targets)`` → one loss per row.
        reduction: how the training loss reduces the per-example losses, "mean" or "sum".
        device: where the model lives.
        initial_train_loss: the full-training-set loss at initialisation (model in eval
            mode), when the method declares ``initial_train_loss``; else ``None``.
    """

    model: nn.Module
    num_train: int
    num_classes: int | None
    total_steps: int
    steps_per_epoch: int
    per_example_loss: PerExampleLoss
    reduction: Literal["mean", "sum"] = "mean"
    device: torch.device = torch.device("cpu")
    initial_train_loss: float | None = None

    def reduce(self, per_example: torch.Tensor) -> torch.Tensor:
        """The training loss from per-example losses."""
        return per_example.sum() if self.reduction == "sum" else per_example.mean()


@dataclass
class StepInputs:
    """Everything a driver holds for one step; :meth:`step_keywords` picks what a method
    declared.

    Args:
        closure: the training closure, of the form the method's capabilities ask for.
        batch: the training batch (inputs, targets, instance indices).
        validation_closure: the validation closure on the steps where it is due.
    """

    closure: LossClosure | GraphClosure
    batch: Batch
    validation_closure: GraphClosure | None = None

    def step_keywords(self, capabilities: Capabilities) -> dict[str, Any]:
        """The keyword arguments of ``optimizer.step(closure, **keywords)``."""
        keywords: dict[str, Any] = {}
        if capabilities.validation_every:
            keywords["validation_closure"] = self.validation_closure
        if capabilities.instance_indices:
            keywords["batch"] = self.batch
        return keywords


@runtime_checkable
class Averager(Protocol):
    """Weight averaging beside an optimizer (Polyak EMA, DoG's polynomial averager): updated
    after every step; ``averaged_model`` is what gets evaluated."""

    def update(self) -> None: ...

    @property
    def averaged_model(self) -> nn.Module: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None: ...


AveragerFactory = Callable[[nn.Module, int], Averager]
Diagnostics = Callable[[torch.optim.Optimizer], dict[str, float]]


def learning_rate_diagnostics(optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The LR report every method gets: ``lr`` of param group 0, then whatever the optimizer
    reports itself through a ``diagnostics()`` method (lrkit's methods: ``effective_lr``, the
    LR they actually applied, and their own quantities)."""
    values: dict[str, float] = {}
    lr = optimizer.param_groups[0].get("lr")
    if lr is not None:
        values["lr"] = float(lr)
    own = getattr(optimizer, "diagnostics", None)
    if callable(own):
        values.update(own())
    return values


@dataclass(frozen=True)
class SolverProblem:
    """A whole-run solver's problem (a method that is no torch optimizer: Levenberg–Marquardt,
    the offline schedule optimiser LRS-OPT): the model (solved in place) and the task's data.

    Args:
        model: the model whose parameters are solved for; the solution is written into it.
        train_inputs: all training inputs (full batch).
        train_targets: all training targets.
        per_example_loss: ``per_example_loss(outputs, targets)`` → one loss per row.
        reduction: "mean" or "sum".
        max_iterations: the iteration budget (Levenberg–Marquardt: Jacobian evaluations).
        validation_inputs: the held-out validation inputs (a solver that optimises a
            validation objective), or ``None``.
        validation_targets: their targets.
        batch_size: the task's mini-batch size (``None``: full batch).
        total_steps: the run's budget in optimizer steps (the length of a schedule).
        seed: the run's seed; mini-batches drawn with it follow the order
            ``Task.train_batches`` draws for that seed.
    """

    model: nn.Module
    train_inputs: torch.Tensor
    train_targets: torch.Tensor
    per_example_loss: PerExampleLoss
    reduction: Literal["mean", "sum"]
    max_iterations: int
    validation_inputs: torch.Tensor | None = None
    validation_targets: torch.Tensor | None = None
    batch_size: int | None = None
    total_steps: int = 0
    seed: int = 0

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The task's loss: the per-example losses reduced."""
        losses = self.per_example_loss(outputs, targets)
        return losses.sum() if self.reduction == "sum" else losses.mean()


@dataclass
class SolverTrace:
    """What a solver reports: the training loss per iteration (with the seconds since it
    started) and its closing message; the solution is already in the model. ``curves`` are
    further per-iteration values (same length as ``steps``), ``schedule`` a learned
    learning-rate schedule (one value per training step) for solvers that produce one."""

    steps: list[int]
    train_losses: list[float]
    times_s: list[float]
    message: str = ""
    curves: dict[str, list[float]] = field(default_factory=dict)
    schedule: list[float] | None = None


Solver = Callable[..., SolverTrace]
"""``solver(problem, **hyperparameters)`` → :class:`SolverTrace`."""
