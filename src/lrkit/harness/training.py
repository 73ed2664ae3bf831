"""One training run: a task, a method with its hyperparameters, a seed, a budget.

The run logs the training loss, time and the method's diagnostics (LR, effective LR, ...)
every ``log_every`` steps, evaluates every ``eval_every`` steps, and records a diverged run
(non-finite loss, a logged loss above ``DIVERGENCE_FACTOR`` × the first logged loss, or a
method refusing a non-finite loss with ``FloatingPointError``) as diverged with its history
so far. Under ``torchrun`` (torch.distributed initialised) the model is wrapped in
DistributedDataParallel and each rank trains on its contiguous shard of every global batch
(:func:`lrkit.harness.setup.prepare_run`). A whole-run solver (kind "solver") is run by
:func:`solve` and recorded in the same schema.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Any

import torch
import torch.distributed as dist

from lrkit.harness.progress import progress_bar
from lrkit.harness.results import CURVE_KEYS, RunConfig, run_record
from lrkit.harness.setup import DTYPES, prepare_run, resolve_device
from lrkit.methods import get_method
from lrkit.methods.contract import SolverProblem
from lrkit.methods.registry import MethodSpec
from lrkit.tasks import get_task
from lrkit.tasks.base import Task, TaskData

DIVERGENCE_FACTOR = 1e4


def _task_and_data(config: RunConfig) -> tuple[Task, TaskData]:
    task = get_task(config.task, **config.task_options)
    data = task.load_data(config.seed)
    if config.eval_subset is not None:
        data = replace(
            data,
            validation_inputs=data.validation_inputs[: config.eval_subset],
            validation_targets=data.validation_targets[: config.eval_subset],
            test_inputs=data.test_inputs[: config.eval_subset],
            test_targets=data.test_targets[: config.eval_subset],
        )
    return task, data


def train(config: RunConfig, progress: bool = False) -> dict[str, Any]:
    """Runs ``config`` and returns its run record (:mod:`lrkit.harness.results`)."""
    spec = get_method(config.method)
    task, data = _task_and_data(config)
    if spec.solver is not None:
        return solve(config, spec, task, data)
    run = prepare_run(
        task,
        spec,
        hparams=config.hparams,
        seed=config.seed,
        steps=config.steps,
        batch_size=config.batch_size,
        dtype=None if config.dtype is None else DTYPES[config.dtype],
        grad_clip=config.grad_clip,
        device=config.device,
        data=data,
    )
    total_steps = run.total_steps
    eval_every = config.eval_every or task.eval_every
    log_every = config.log_every or max(1, min(eval_every, total_steps // 200 or 1))

    curve: dict[str, list[float]] = {key: [] for key in CURVE_KEYS}
    evals: list[dict[str, float]] = []
    pending: list[torch.Tensor] = []
    diverged, error = False, None
    train_time = 0.0
    bar = progress_bar(total_steps, f"{config.method} on {config.task}", progress and run.rank == 0)

    def evaluate(step: int) -> None:
        with run.method.evaluation_model() as evaluated:
            metrics = task.evaluate(evaluated, data)
        evals.append({"step": step, **metrics})

    evaluate(0)
    steps_done = 0
    for step in range(1, total_steps + 1):
        inputs = run.draw_inputs()
        started = time.perf_counter()
        try:
            loss = run.take_step(inputs)
        except FloatingPointError as exc:  # a method refusing a NaN/inf loss or gradient
            diverged, error = True, f"{type(exc).__name__}: {exc}"
            break
        train_time += time.perf_counter() - started
        steps_done = step
        pending.append(loss.detach().float())
        if step % log_every == 0 or step == total_steps:
            interval_loss = torch.stack(pending).mean()
            if run.world_size > 1:
                dist.all_reduce(interval_loss)
                interval_loss /= run.world_size
            mean_loss = float(interval_loss)
            pending.clear()
            curve["step"].append(step)
            curve["train_loss"].append(mean_loss)
            curve["time_s"].append(train_time)
            for name, value in run.method.diagnostics().items():
                key = f"optimizer_{name}" if name in CURVE_KEYS else name
                curve.setdefault(key, []).append(value)
            if not math.isfinite(mean_loss):
                diverged, error = True, "non-finite training loss"
                break
            if mean_loss > DIVERGENCE_FACTOR * abs(curve["train_loss"][0]):
                diverged, error = True, f"training loss grew over {DIVERGENCE_FACTOR:g}× its start"
                break
        if step % eval_every == 0 or step == total_steps:
            evaluate(step)
        bar.update(1)
    bar.close()
    if diverged and evals[-1]["step"] != steps_done:
        evaluate(steps_done)
    return run_record(
        config,
        total_steps=total_steps,
        steps_done=steps_done,
        steps_per_epoch=run.steps_per_epoch,
        batch_size=run.batch_size,
        diverged=diverged,
        error=error,
        train_time_s=train_time,
        curve=curve,
        evals=evals,
        num_classes=data.num_classes,
    )


def solve(config: RunConfig, spec: MethodSpec, task: Task, data: TaskData) -> dict[str, Any]:
    """Runs a whole-run solver with the method's hyperparameters and records it like a
    training run: a "step" is one solver iteration; a learned schedule is kept in the record
    (``schedule``: the training step and the LR at it)."""
    assert spec.solver is not None
    spec.check_available()
    model = task.build_model(config.seed).to(resolve_device(config.device))
    max_iterations = config.steps if config.steps is not None else task.steps
    evals = [{"step": 0, **task.evaluate(model, data)}]
    problem = SolverProblem(
        model=model,
        train_inputs=data.train_inputs,
        train_targets=data.train_targets,
        per_example_loss=task.per_example_loss,
        reduction=task.reduction,
        max_iterations=max_iterations,
        validation_inputs=data.validation_inputs,
        validation_targets=data.validation_targets,
        batch_size=task.batch_size if config.batch_size is None else config.batch_size,
        total_steps=max_iterations,
        seed=config.seed,
    )
    trace = spec.solver(problem, **{**spec.defaults, **config.hparams})
    final_loss = trace.train_losses[-1]
    steps_done = trace.steps[-1]
    evals.append({"step": steps_done, **task.evaluate(problem.model, data)})
    extra: dict[str, Any] = {}
    if trace.schedule is not None:
        extra["schedule"] = {"step": list(range(len(trace.schedule))), "lr": trace.schedule}
    return run_record(
        config,
        total_steps=max_iterations,
        steps_done=steps_done,
        steps_per_epoch=1,
        batch_size=None,
        diverged=not math.isfinite(final_loss),
        error=None,
        train_time_s=trace.times_s[-1],
        curve={
            "step": trace.steps,
            "train_loss": trace.train_losses,
            "time_s": trace.times_s,
            **trace.curves,
        },
        evals=evals,
        num_classes=data.num_classes,
        solver_message=trace.message,
        **extra,
    )
