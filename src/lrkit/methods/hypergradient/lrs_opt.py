"""LRS-OPT: the offline optimal learning-rate schedule (Donini et al., Sec. 5).

The schedule η_0 … η_{T−1} minimises the validation loss E(w_T) after T steps of the inner
optimizer from a fixed initialisation. Each outer iteration unrolls the T steps on a fresh
sequence of mini-batches (the initialisation stays the same), takes the exact
hypergradient ∂E(w_T)/∂η_t for every t by reverse mode through the unrolled steps, and
takes one projected gradient step η ← max(η − outer_lr·∂E/∂η, 0).

Reverse mode: with the state s_t = (w_t, buffers) and s_{t+1} = Φ_t(s_t, η_t), the adjoint
λ_T = ∇E(w_T) runs backwards as ∂E/∂η_t = λ_{t+1}·∂Φ_t/∂η and λ_t = (∂Φ_t/∂s)ᵀ·λ_{t+1}: one
vector–Jacobian product through each step (the gradient inside Φ_t is differentiated, so it
costs one forward, one backward with ``create_graph`` and one backward through that). The
states are not all kept: every ``checkpoint_every``-th state is stored on the way forward
and each segment is recomputed on the way back (memory ≈ T/c + c states, one extra forward
step per step); the random-number state of every step is kept so that dropout draws the
same masks when a step is recomputed. Model buffers (BatchNorm statistics) are evaluated on
copies and are not part of the differentiated state.

The result replays with any torch optimizer through ``torch.optim.lr_scheduler.LambdaLR``
(``lr=1`` and ``result.lr_lambda``) or lrkit's registered "replay" schedule.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.func import functional_call

from lrkit.data.batches import iterate_batches
from lrkit.methods.contract import SolverProblem, SolverTrace
from lrkit.methods.hypergradient.inner import InnerOptimizer, functional_step

LossFunction = Callable[[Tensor, Tensor], Tensor]
State = tuple[list[Tensor], dict[str, list[Tensor]]]
PLAIN_SGD = InnerOptimizer()


@dataclass
class LRSOptResult:
    """The optimised schedule and the history of the outer iterations.

    ``schedule[t]`` is η_t (absolute). ``validation_losses[i]`` and ``train_losses[i]`` are
    E(w_T) and the mean mini-batch loss of outer iteration i's unroll, before its update;
    ``times_s[i]`` the seconds since the start at its end."""

    schedule: list[float]
    validation_losses: list[float] = field(default_factory=list)
    train_losses: list[float] = field(default_factory=list)
    times_s: list[float] = field(default_factory=list)

    def lr_lambda(self, step: int) -> float:
        """η at ``step`` (the last value after the end): ``LambdaLR(optimizer with lr=1,
        result.lr_lambda)`` replays the schedule."""
        return self.schedule[min(step, len(self.schedule) - 1)]


class Unroll:
    """T steps of ``inner`` on a model's loss at a given schedule, differentiable in the
    schedule by reverse mode (module docstring).

    Args:
        model: the module (its parameters are the initialisation; it is not changed).
        loss: ``loss(outputs, targets)`` → the scalar mini-batch loss.
        validation: (inputs, targets) of E.
        inner: the inner optimizer.
        checkpoint_every: store every c-th state (default ⌈√T⌉; 1 stores all).
    """

    def __init__(
        self,
        model: nn.Module,
        loss: LossFunction,
        validation: tuple[Tensor, Tensor],
        inner: InnerOptimizer = PLAIN_SGD,
        checkpoint_every: int | None = None,
    ) -> None:
        self.model, self.loss, self.validation, self.inner = model, loss, validation, inner
        self.names = [name for name, p in model.named_parameters() if p.requires_grad]
        self.initial = [p.detach().clone() for p in model.parameters() if p.requires_grad]
        self.checkpoint_every = checkpoint_every

    def _loss_at(self, params: Sequence[Tensor], inputs: Tensor, targets: Tensor) -> Tensor:
        state = {name: buffer.clone() for name, buffer in self.model.named_buffers()}
        state.update(zip(self.names, params, strict=True))
        return self.loss(functional_call(self.model, state, (inputs,)), targets)

    def _initial_state(self) -> State:
        buffers = {name: [torch.zeros_like(p) for p in self.initial] for name in self.inner.buffers}
        return [p.clone() for p in self.initial], buffers

    def _forward_step(self, state: State, rate: float, batch, rng, step: int):
        _set_rng_state(rng)
        params, buffers = state
        with torch.enable_grad():
            leaves = [p.detach().requires_grad_() for p in params]
            loss = self._loss_at(leaves, *batch)
            grads = torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True)
        rate_tensor = torch.tensor(rate, dtype=params[0].dtype)
        return functional_step(self.inner, params, buffers, list(grads), rate_tensor, step), loss

    def _reverse_step(self, state: State, rate: float, batch, rng, step: int, adjoint):
        _set_rng_state(rng)
        params, buffers = state
        names = list(buffers)
        with torch.enable_grad():
            leaves = [p.detach().requires_grad_() for p in params]
            buffer_leaves = {n: [b.detach().requires_grad_() for b in buffers[n]] for n in names}
            eta = torch.tensor(rate, dtype=params[0].dtype, requires_grad=True)
            loss = self._loss_at(leaves, *batch)
            grads = torch.autograd.grad(loss, leaves, create_graph=True, materialize_grads=True)
            new_params, new_buffers = functional_step(
                self.inner, leaves, buffer_leaves, list(grads), eta, step
            )
            outputs = new_params + [b for n in names for b in new_buffers[n]]
            inputs = leaves + [b for n in names for b in buffer_leaves[n]] + [eta]
            pulled = torch.autograd.grad(
                outputs, inputs, grad_outputs=adjoint, allow_unused=True, materialize_grads=True
            )
        return list(pulled[:-1]), pulled[-1]

    def hypergradient(
        self, schedule: Sequence[float], batches: Sequence[tuple[Tensor, Tensor]]
    ) -> tuple[float, Tensor, float]:
        """(E(w_T), ∂E(w_T)/∂η_t for t < T as a float64 tensor, the mean mini-batch loss)
        for ``schedule`` on ``batches`` (one per step)."""
        steps = len(schedule)
        if len(batches) != steps:
            raise ValueError(f"{steps} learning rates need {steps} batches, got {len(batches)}")
        every = self.checkpoint_every or max(1, math.ceil(math.sqrt(steps)))
        device = self.initial[0].device
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            rngs, checkpoints, losses = [], {}, []
            state = self._initial_state()
            for t in range(steps):
                if t % every == 0:
                    checkpoints[t] = state
                rngs.append(_rng_state(device))
                state, loss = self._forward_step(state, schedule[t], batches[t], rngs[t], t + 1)
                losses.append(float(loss))
            final_params = [p.detach().requires_grad_() for p in state[0]]
            with torch.enable_grad():
                objective = self._loss_at(final_params, *self.validation)
                adjoint = list(torch.autograd.grad(objective, final_params, materialize_grads=True))
            adjoint += [torch.zeros_like(p) for _ in self.inner.buffers for p in state[0]]
            gradient = torch.zeros(steps, dtype=torch.float64)
            for start in reversed(range(0, steps, every)):
                segment = [checkpoints[start]]
                for t in range(start, min(start + every, steps) - 1):
                    segment.append(
                        self._forward_step(segment[-1], schedule[t], batches[t], rngs[t], t + 1)[0]
                    )
                for t in reversed(range(start, min(start + every, steps))):
                    adjoint, d_rate = self._reverse_step(
                        segment[t - start], schedule[t], batches[t], rngs[t], t + 1, adjoint
                    )
                    gradient[t] = float(d_rate)
        return float(objective.detach()), gradient, sum(losses) / steps


def _rng_state(device: torch.device) -> tuple[Tensor, Tensor | None]:
    """The random-number state a step's dropout draws from (CPU, and the device's on CUDA)."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


def _set_rng_state(state: tuple[Tensor, Tensor | None]) -> None:
    torch.set_rng_state(state[0])
    if state[1] is not None:
        torch.cuda.set_rng_state(state[1])


def _batch_stream(
    inputs: Tensor, targets: Tensor, batch_size: int | None, seed: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """Endless reshuffled epochs, exactly as ``Task.train_batches`` draws them for ``seed``."""
    generator = torch.Generator().manual_seed(seed)
    while True:
        for batch in iterate_batches(inputs, targets, batch_size, generator=generator):
            yield batch.inputs, batch.targets


def lrs_opt(
    model: nn.Module,
    loss: LossFunction,
    train: tuple[Tensor, Tensor],
    validation: tuple[Tensor, Tensor],
    *,
    steps: int,
    batch_size: int | None,
    iterations: int = 20,
    lr: float = 0.05,
    outer_lr: float = 5e-3,
    outer: str = "adam",
    inner: InnerOptimizer = PLAIN_SGD,
    seed: int = 0,
    checkpoint_every: int | None = None,
    callback: Callable[[int, LRSOptResult], None] | None = None,
) -> LRSOptResult:
    """LRS-OPT (module docstring): ``iterations`` projected steps (``outer``: "adam" or
    "gd") on the schedule η_0 … η_{steps−1}, starting from the constant ``lr``; outer
    iteration i draws its mini-batches with seed ``seed + 1 + i`` (fresh batches, the same
    initialisation: the model's current parameters, which are not changed).
    ``callback(i, result)`` runs after each outer iteration. Returns the schedule after
    the last update and the history."""
    if steps < 1 or iterations < 0:
        raise ValueError(f"lrs_opt needs steps >= 1 and iterations >= 0, got {steps}, {iterations}")
    if not (lr >= 0.0 and outer_lr >= 0.0):
        raise ValueError(f"lr and outer_lr must be >= 0, got {lr!r}, {outer_lr!r}")
    if outer not in ("gd", "adam"):
        raise ValueError(f"outer must be 'gd' or 'adam', got {outer!r}")
    unroll = Unroll(model, loss, validation, inner, checkpoint_every)
    schedule = torch.full((steps,), float(lr), dtype=torch.float64)
    moments = torch.zeros(2, steps, dtype=torch.float64)
    result = LRSOptResult(schedule=schedule.tolist())
    started = time.perf_counter()
    for iteration in range(iterations):
        stream = _batch_stream(*train, batch_size, seed + 1 + iteration)
        batches = [next(stream) for _ in range(steps)]
        objective, gradient, train_loss = unroll.hypergradient(schedule.tolist(), batches)
        if not (math.isfinite(objective) and bool(torch.isfinite(gradient).all())):
            raise FloatingPointError(
                f"lrs_opt: the unrolled training diverged at outer iteration {iteration} "
                f"(E = {objective}); lower lr or outer_lr"
            )
        if outer == "adam":
            moments[0].lerp_(gradient, 0.1)
            moments[1].lerp_(gradient * gradient, 0.001)
            first = moments[0] / (1.0 - 0.9 ** (iteration + 1))
            second = moments[1] / (1.0 - 0.999 ** (iteration + 1))
            gradient = first / (second.sqrt() + 1e-12)
        schedule = torch.clamp_min(schedule - outer_lr * gradient, 0.0)
        result.schedule = schedule.tolist()
        result.validation_losses.append(objective)
        result.train_losses.append(train_loss)
        result.times_s.append(time.perf_counter() - started)
        if callback is not None:
            callback(iteration, result)
    return result


def replay(
    model: nn.Module,
    loss: LossFunction,
    train: tuple[Tensor, Tensor],
    schedule: Sequence[float],
    *,
    batch_size: int | None,
    inner: InnerOptimizer = PLAIN_SGD,
    seed: int = 0,
) -> float:
    """Trains ``model`` in place for ``len(schedule)`` steps with the torch optimizer that
    ``inner`` describes at lr 1 and ``LambdaLR`` giving η_t, on the mini-batches
    ``Task.train_batches`` draws for ``seed``; returns the mean mini-batch loss."""
    params = [p for p in model.parameters() if p.requires_grad]
    if inner.kind == "adam":
        optimizer: torch.optim.Optimizer = torch.optim.Adam(
            params, lr=1.0, betas=inner.betas, eps=inner.eps, weight_decay=inner.weight_decay
        )
    else:
        optimizer = torch.optim.SGD(
            params,
            lr=1.0,
            momentum=inner.momentum,
            nesterov=inner.nesterov,
            weight_decay=inner.weight_decay,
        )
    last = len(schedule) - 1
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: schedule[min(step, last)])
    stream = _batch_stream(*train, batch_size, seed)
    total = 0.0
    for _ in range(len(schedule)):
        inputs, targets = next(stream)
        optimizer.zero_grad(set_to_none=True)
        value = loss(model(inputs), targets)
        value.backward()
        optimizer.step()
        scheduler.step()
        total += float(value.detach())
    return total / max(1, len(schedule))


def solve(
    problem: SolverProblem,
    *,
    iterations: int = 20,
    lr: float = 0.05,
    outer_lr: float = 5e-3,
    outer: str = "adam",
    inner: str = "sgd",
    momentum: float = 0.0,
    nesterov: bool = False,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    checkpoint_every: int | None = None,
) -> SolverTrace:
    """LRS-OPT as lrkit's whole-run solver: the schedule for ``problem.total_steps`` steps
    optimised on the problem's validation split, then replayed on the run's own mini-batch
    order (:func:`replay`) to train ``problem.model``. The trace has one entry per outer
    iteration (E(w_T) as ``validation_loss``, the unroll's mean mini-batch loss as the
    training loss) and a last one for the replay; ``schedule`` is the learned η_t."""
    if problem.validation_inputs is None or problem.validation_targets is None:
        raise ValueError("lrs_opt optimises a validation loss: the problem has no validation split")
    spec = InnerOptimizer(inner, momentum, nesterov, tuple(betas), eps, weight_decay)
    train = (problem.train_inputs, problem.train_targets)
    validation = (problem.validation_inputs, problem.validation_targets)
    result = lrs_opt(
        problem.model,
        problem.loss,
        train,
        validation,
        steps=problem.total_steps,
        batch_size=problem.batch_size,
        iterations=iterations,
        lr=lr,
        outer_lr=outer_lr,
        outer=outer,
        inner=spec,
        seed=problem.seed,
        checkpoint_every=checkpoint_every,
    )
    started = time.perf_counter()
    train_loss = replay(
        problem.model,
        problem.loss,
        train,
        result.schedule,
        batch_size=problem.batch_size,
        inner=spec,
        seed=problem.seed,
    )
    with torch.no_grad():
        final_validation = float(problem.loss(problem.model(validation[0]), validation[1]))
    offset = result.times_s[-1] if result.times_s else 0.0
    return SolverTrace(
        steps=list(range(iterations + 1)),
        train_losses=[*result.train_losses, train_loss],
        times_s=[*result.times_s, offset + time.perf_counter() - started],
        message=f"{iterations} outer iterations; schedule replayed on the run's batches",
        curves={"validation_loss": [*result.validation_losses, final_validation]},
        schedule=result.schedule,
    )
