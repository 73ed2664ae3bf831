"""Levenberg–Marquardt (scipy.optimize.least_squares, method "lm") as a whole-run solver
for least-squares tasks — the second-order reference of L4's Table 2.

The residual vector is r(θ) = vec(model_θ(X) − Y) over the full training set, the loss
the task's sum of squared errors ‖r‖² (the true SSE: Recht's notebook minimised (Σ r)²,
which is not the regression's loss), and the Jacobian ∂r/∂θ comes from
``torch.func.jacfwd`` in float64 (forward mode: few parameters, many residuals). A "step"
is one Jacobian evaluation (one LM iteration); the trace records the loss and the wall time
at each.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch.func import functional_call, jacfwd

from lrkit.methods.contract import SolverProblem, SolverTrace
from lrkit.methods.registry import MethodSpec, register_method


def _check_least_squares(
    problem: SolverProblem, outputs: torch.Tensor, targets: torch.Tensor
) -> None:
    """LM minimises ‖outputs − targets‖²: the problem's loss must be exactly that."""
    if problem.reduction != "sum":
        raise ValueError(
            "levenberg_marquardt needs a sum-of-squares task (reduction 'sum'); this one "
            f"reduces by {problem.reduction!r}"
        )
    if outputs.shape != targets.shape:
        raise ValueError(
            f"levenberg_marquardt needs outputs shaped like the targets, got "
            f"{tuple(outputs.shape)} and {tuple(targets.shape)}"
        )
    squared = (outputs - targets).pow(2).reshape(outputs.shape[0], -1).sum(dim=1)
    loss = problem.per_example_loss(outputs, targets)
    if not torch.allclose(loss.reshape(-1), squared, rtol=1e-9, atol=1e-12):
        raise ValueError(
            "levenberg_marquardt needs a sum-of-squares task: the task's per-example loss is "
            "not the squared error of its outputs"
        )


def levenberg_marquardt(problem: SolverProblem) -> SolverTrace:
    """Solves ``problem`` with scipy's LM for at most ``problem.max_iterations`` Jacobian
    evaluations, writes the solution into the model and returns the trace."""
    from scipy.optimize import least_squares

    model = problem.model.to(torch.float64)
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    inputs = problem.train_inputs.to(torch.float64)
    targets = problem.train_targets.to(torch.float64)
    with torch.no_grad():
        _check_least_squares(problem, model(inputs), targets)

    def unflatten(theta: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(theta, sizes)
        return {n: t.view(s) for n, t, s in zip(names, parts, shapes, strict=True)}

    def residual(theta: torch.Tensor) -> torch.Tensor:
        return (functional_call(model, unflatten(theta), (inputs,)) - targets).reshape(-1)

    jacobian = jacfwd(residual)
    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    trace = SolverTrace(steps=[], train_losses=[], times_s=[])
    started = time.perf_counter()

    def fun(theta: np.ndarray) -> np.ndarray:
        return residual(torch.from_numpy(theta)).numpy()

    def jac(theta: np.ndarray) -> np.ndarray:
        point = torch.from_numpy(theta)
        trace.steps.append(len(trace.steps))
        trace.train_losses.append(float(residual(point).pow(2).sum()))
        trace.times_s.append(time.perf_counter() - started)
        return jacobian(point).numpy()

    solution = least_squares(
        fun,
        theta0.numpy(),
        jac=jac,
        method="lm",
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
        max_nfev=problem.max_iterations,
    )
    trace.steps.append(len(trace.steps))
    trace.train_losses.append(float(np.sum(solution.fun**2)))
    trace.times_s.append(time.perf_counter() - started)
    trace.message = str(solution.message)
    with torch.no_grad():
        for param, value in zip(
            model.parameters(), unflatten(torch.from_numpy(solution.x)).values(), strict=True
        ):
            param.copy_(value)
    return trace


register_method(
    MethodSpec(
        name="levenberg_marquardt",
        summary="scipy Levenberg–Marquardt on the residuals of a least-squares task (L4 Table 2)",
        kind="solver",
        make_optimizer=None,
        solver=levenberg_marquardt,
        requires="scipy",
        extra="scipy",
        paper="Rolinek & Martius 2018, Table 2",
    )
)
