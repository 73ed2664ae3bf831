"""One training run: a task, a method with its hyperparameters, a seed, a budget.

The run logs the training loss, time and the method's diagnostics (LR, effective LR, ...)
every ``log_every`` steps, evaluates every ``eval_every`` steps, and records a diverged run
(non-finite loss, a logged loss above ``DIVERGENCE_FACTOR`` × the first logged loss, or a
method refusing a non-finite loss) as diverged with its history so far.
Under ``torchrun`` (torch.distributed initialised) the model is wrapped in
DistributedDataParallel and each rank trains on its contiguous shard of every global batch.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from lrkit.harness.step import StepInputs, TrainingMethod, make_closure
from lrkit.methods import get_method
from lrkit.tasks import get_task

DIVERGENCE_FACTOR = 1e4
CURVE_KEYS = ("step", "train_loss", "time_s")
DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


@dataclass
class RunConfig:
    """What one run trains. ``hparams`` go to the method (``schedule`` to the harness);
    ``steps``/``batch_size``/``eval_every`` default to the task's; ``eval_subset`` evaluates
    on the first rows of the test set only (smoke runs)."""

    task: str
    method: str
    seed: int = 0
    hparams: dict[str, Any] = field(default_factory=dict)
    task_options: dict[str, Any] = field(default_factory=dict)
    steps: int | None = None
    batch_size: int | None = None
    eval_every: int | None = None
    log_every: int | None = None
    grad_clip: float | None = None
    dtype: str | None = None
    loss_thresholds: tuple[float, ...] = ()
    eval_subset: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train(config: RunConfig, progress: bool = False) -> dict[str, Any]:
    """Runs ``config`` and returns a JSON-ready record (see module docstring)."""
    spec = get_method(config.method)
    if spec.solver is not None:
        return spec.solver(config)
    task = get_task(config.task, **config.task_options)
    data = task.load_data(config.seed)
    if config.eval_subset is not None:
        data = replace(
            data,
            test_inputs=data.test_inputs[: config.eval_subset],
            test_targets=data.test_targets[: config.eval_subset],
        )
    torch.manual_seed(config.seed)
    model = task.build_model(config.seed)
    if config.dtype is not None:
        model = model.to(DTYPES[config.dtype])
    batch_size = config.batch_size if config.batch_size is not None else task.batch_size
    steps_per_epoch = task.steps_per_epoch(data, batch_size)
    total_steps = config.steps if config.steps is not None else task.steps
    eval_every = config.eval_every or task.eval_every
    log_every = config.log_every or max(1, min(eval_every, total_steps // 200 or 1))

    rank, world_size = _world()
    trained: nn.Module = model
    if world_size > 1:
        trained = nn.parallel.DistributedDataParallel(model)
    method = TrainingMethod(spec, model, config.hparams, total_steps, steps_per_epoch)
    generator = torch.Generator().manual_seed(config.seed)
    train_batches = task.train_batches(data, generator, batch_size)
    validation_batches = (
        task.validation_batches(data, torch.Generator().manual_seed(config.seed + 1), batch_size)
        if spec.needs_validation
        else None
    )

    curve: dict[str, list[float]] = {key: [] for key in CURVE_KEYS}
    evals: list[dict[str, float]] = []
    pending: list[torch.Tensor] = []
    diverged, error = False, None
    train_time = 0.0
    bar = progress_bar(total_steps, f"{config.method} on {config.task}", progress and rank == 0)

    def evaluate(step: int) -> None:
        with method.evaluation_model() as evaluated:
            metrics = task.evaluate(evaluated, data)
        evals.append({"step": step, **metrics})

    evaluate(0)
    steps_done = 0
    for step in range(1, total_steps + 1):
        batch = next(train_batches)
        if world_size > 1:
            batch = batch.shard(rank, world_size)
        validation = None if validation_batches is None else next(validation_batches)
        closure = make_closure(trained, task, batch, method.optimizer, config.grad_clip)
        started = time.perf_counter()
        try:
            loss = method.step(StepInputs(closure, batch, trained, task, validation))
        except FloatingPointError as exc:  # a method refusing a NaN/inf loss or gradient
            diverged, error = True, f"{type(exc).__name__}: {exc}"
            break
        train_time += time.perf_counter() - started
        steps_done = step
        pending.append(loss.detach().float())
        if step % log_every == 0 or step == total_steps:
            interval_loss = torch.stack(pending).mean()
            if world_size > 1:
                dist.all_reduce(interval_loss)
                interval_loss /= world_size
            mean_loss = float(interval_loss)
            pending.clear()
            curve["step"].append(step)
            curve["train_loss"].append(mean_loss)
            curve["time_s"].append(train_time)
            for name, value in method.diagnostics().items():
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
    final = dict(evals[-1])
    final.pop("step")
    if curve["train_loss"]:
        final["train_loss_end"] = curve["train_loss"][-1]
    reached = threshold_crossings(
        curve, config.loss_thresholds, initial_loss=evals[0].get("train_loss")
    )
    return {
        "config": config.to_dict(),
        "total_steps": total_steps,
        "steps_done": steps_done,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": batch_size,
        "diverged": diverged,
        "error": error,
        "train_time_s": train_time,
        "curve": curve,
        "evals": evals,
        "final": final,
        "thresholds": reached,
    }


def threshold_crossings(
    curve: dict[str, list[float]],
    thresholds: tuple[float, ...],
    initial_loss: float | None = None,
) -> dict[str, dict[str, float] | None]:
    """For each relative threshold r: the first logged step (and training time) at which
    the training loss fell to r × the initial loss (the task's train_loss at step 0 when it
    reports one, else the first logged loss); ``None`` if it never did."""
    reached: dict[str, dict[str, float] | None] = {}
    losses = curve["train_loss"]
    for threshold in thresholds:
        hit = None
        if losses:
            target = threshold * (losses[0] if initial_loss is None else initial_loss)
            for step, loss, seconds in zip(curve["step"], losses, curve["time_s"], strict=True):
                if loss <= target:
                    hit = {"step": step, "time_s": seconds}
                    break
        reached[f"{threshold:g}"] = hit
    return reached


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, description: str, enabled: bool):
    """A tqdm bar when enabled and tqdm is installed, else an object that ignores updates."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=description, unit="step", leave=False)
