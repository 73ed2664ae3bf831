"""Levenberg–Marquardt (scipy.optimize.least_squares, method "lm") as a whole-run solver
for least-squares tasks — the second-order reference of L4's Table 2.

The residual vector is r(θ) = vec(model_θ(X) − Y) over the full training set, the loss
the task's sum of squared errors ‖r‖² (the true SSE: Recht's notebook minimised
(Σ r)², a bug named in METHODS.md §1), and the Jacobian ∂r/∂θ comes from
``torch.func.jacfwd`` in float64 (forward mode: few parameters, many residuals). A "step"
is one Jacobian evaluation (one LM iteration); the curve records the loss and the wall time
at each.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from torch.func import functional_call, jacfwd

from lrkit.methods.registry import MethodSpec, register_method


def levenberg_marquardt_run(config: Any) -> dict[str, Any]:
    """Solves ``config.task`` (a sum-of-squares task) with scipy's LM for at most
    ``config.steps`` iterations and returns a run record like the harness's ``train``."""
    from scipy.optimize import least_squares

    from lrkit.harness.training import threshold_crossings
    from lrkit.tasks import get_task

    task = get_task(config.task, **config.task_options)
    if task.reduction != "sum":
        raise ValueError(
            f"levenberg_marquardt needs a sum-of-squares task; {task.name!r} reduces by "
            f"{task.reduction!r}"
        )
    data = task.load_data(config.seed)
    model = task.build_model(config.seed).to(torch.float64)
    names = [name for name, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    inputs = data.train_inputs.to(torch.float64)
    targets = data.train_targets.to(torch.float64)

    def unflatten(theta: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = torch.split(theta, sizes)
        return {n: t.view(s) for n, t, s in zip(names, parts, shapes, strict=True)}

    def residual(theta: torch.Tensor) -> torch.Tensor:
        return (functional_call(model, unflatten(theta), (inputs,)) - targets).reshape(-1)

    jacobian = jacfwd(residual)
    theta0 = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    curve: dict[str, list[float]] = {"step": [], "train_loss": [], "time_s": []}
    started = time.perf_counter()

    def fun(theta: np.ndarray) -> np.ndarray:
        return residual(torch.from_numpy(theta)).numpy()

    def jac(theta: np.ndarray) -> np.ndarray:
        point = torch.from_numpy(theta)
        loss = float(residual(point).pow(2).sum())
        curve["step"].append(len(curve["step"]))
        curve["train_loss"].append(loss)
        curve["time_s"].append(time.perf_counter() - started)
        return jacobian(point).numpy()

    max_iterations = config.steps if config.steps is not None else task.steps
    evals = [{"step": 0, **task.evaluate(model, data)}]
    solution = least_squares(
        fun,
        theta0.numpy(),
        jac=jac,
        method="lm",
        xtol=1e-15,
        ftol=1e-15,
        gtol=1e-15,
        max_nfev=max_iterations,
    )
    train_time = time.perf_counter() - started
    final_loss = float(np.sum(solution.fun**2))
    curve["step"].append(len(curve["step"]))
    curve["train_loss"].append(final_loss)
    curve["time_s"].append(train_time)
    with torch.no_grad():
        for param, value in zip(
            model.parameters(), unflatten(torch.from_numpy(solution.x)).values(), strict=True
        ):
            param.copy_(value)
    steps_done = curve["step"][-1]
    evals.append({"step": steps_done, **task.evaluate(model, data)})
    final = {k: v for k, v in evals[-1].items() if k != "step"}
    final["train_loss_end"] = final_loss
    return {
        "config": config.to_dict(),
        "total_steps": max_iterations,
        "steps_done": steps_done,
        "steps_per_epoch": 1,
        "batch_size": None,
        "diverged": not np.isfinite(final_loss),
        "error": None,
        "train_time_s": train_time,
        "curve": curve,
        "evals": evals,
        "final": final,
        "thresholds": threshold_crossings(
            curve, config.loss_thresholds, initial_loss=evals[0].get("train_loss")
        ),
        "solver_message": solution.message,
    }


register_method(
    MethodSpec(
        name="levenberg_marquardt",
        summary="scipy Levenberg–Marquardt on the residuals of a least-squares task (L4 Table 2)",
        kind="solver",
        make_optimizer=None,
        solver=levenberg_marquardt_run,
        requires="scipy",
        paper="Rolinek & Martius 2018, Table 2",
    )
)
