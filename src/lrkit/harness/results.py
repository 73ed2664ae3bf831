"""The run-record schema and the summaries computed from records (the leaf of the harness).

A run record is a JSON-ready dict, built only by :func:`run_record`::

    config          the RunConfig as a dict
    total_steps     the budget; steps_done: steps taken (fewer when diverged)
    steps_per_epoch, batch_size
    diverged, error whether (and why) the run was stopped as diverged
    train_time_s    seconds spent in training steps (evaluation excluded)
    curve           logged every log_every steps: step, train_loss, time_s and every value
                    the method's diagnostics report (lr, effective_lr, ...)
    evals           [{step, metrics...}] at step 0, every eval_every steps and at the end
    final           the last evaluation's metrics, plus train_loss_end (last logged loss)
    thresholds      relative loss level → {step, time_s} of its first crossing, or None
    num_classes     classes of a classification task (for the chance-level rule), or None
    solver_message  (solvers only) the solver's closing message
    schedule        (solvers that learn one, e.g. lrs_opt) {step, lr}: the learned LR per
                    training step, replayable with the "replay" schedule

The bench runner adds ``experiment``, ``label``, ``role`` ("grid": a tuning run, or
"selected": a reported run) and ``provenance`` (code state, versions, threads).

A run *failed* when it diverged or ended at chance level (accuracy below 1/C +
``CHANCE_MARGIN``): a failed run has no value in summaries, tuning ranks it last, and
verdicts count it against its method (:func:`run_failure`).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from lrkit.harness.experiments import Contender, Experiment, Suite
from lrkit.tasks import get_task

CURVE_KEYS = ("step", "train_loss", "time_s")
CURVE_POINTS_KEPT = 400
REPORTED_CURVE_POINTS = 120
CHANCE_MARGIN = 0.05


@dataclass
class RunConfig:
    """What one run trains.

    Args:
        task: the task's registry name; ``task_options`` its options.
        method: the method's registry name; ``hparams`` its hyperparameters (``schedule``
            and ``schedule_options`` go to the harness's LR schedule).
        seed: seeds the model's initialisation, the batch order and synthetic data.
        steps, batch_size, eval_every, log_every: override the task's defaults.
        grad_clip: clip the global gradient norm before each step.
        dtype: "float32", "float64" or "bfloat16" (default: the task's own).
        loss_thresholds: relative training-loss levels whose first crossing is recorded.
        eval_subset: evaluate on the first rows of the validation and test sets only (smoke
            runs; the validation batches of methods that need them come from those rows too).
        device: "cpu" or "cuda" (default: cpu).
    """

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
    device: str | None = None

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        if values["device"] is None:
            values.pop("device")
        return values


def run_record(
    config: RunConfig,
    *,
    total_steps: int,
    steps_done: int,
    steps_per_epoch: int,
    batch_size: int | None,
    diverged: bool,
    error: str | None,
    train_time_s: float,
    curve: dict[str, list[float]],
    evals: list[dict[str, float]],
    **extra: Any,
) -> dict[str, Any]:
    """The one way a run record is made (module docstring)."""
    final = dict(evals[-1])
    final.pop("step")
    if curve["train_loss"]:
        final["train_loss_end"] = curve["train_loss"][-1]
    return {
        "config": config.to_dict(),
        "total_steps": total_steps,
        "steps_done": steps_done,
        "steps_per_epoch": steps_per_epoch,
        "batch_size": batch_size,
        "diverged": diverged,
        "error": error,
        "train_time_s": train_time_s,
        "curve": curve,
        "evals": evals,
        "final": final,
        "thresholds": threshold_crossings(
            curve, config.loss_thresholds, initial_loss=evals[0].get("train_loss")
        ),
        **extra,
    }


def threshold_crossings(
    curve: dict[str, list[float]],
    thresholds: Iterable[float],
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


def downsample(
    curve: dict[str, list[float]], points: int = CURVE_POINTS_KEPT
) -> dict[str, list[float]]:
    """The curve at ``points`` evenly spaced logged steps (first and last kept)."""
    n = len(curve.get("step", []))
    if n <= points:
        return curve
    keep = sorted({round(i * (n - 1) / (points - 1)) for i in range(points)})
    return {key: [values[i] for i in keep] for key, values in curve.items()}


def reported_record(record: dict[str, Any]) -> dict[str, Any]:
    """The run as results.json keeps it: every curve (loss, time and whatever the method's
    diagnostics logged) thinned to REPORTED_CURVE_POINTS points (thresholds and metrics are
    computed from the full curve before this)."""
    return {**record, "curve": downsample(record["curve"], REPORTED_CURVE_POINTS)}


def format_value(value: Any) -> str:
    """Hyperparameter values one way: compact scientific notation below 0.01 and from 1000
    (1e-5, 3e-4, 1.5e-3), plain otherwise (0.03, 0.15, 1); everything else as written."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    number = float(value)
    if number != 0 and (abs(number) < 1e-2 or abs(number) >= 1e3):
        mantissa, exponent = f"{number:.3e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{number:.4g}"


def hparam_text(hparams: dict[str, Any]) -> str:
    """``lr=1e-5,schedule=multistep``: hyperparameters as one short string."""
    return ",".join(f"{k}={format_value(v)}" for k, v in hparams.items())


def grid_points(contender: Contender) -> list[dict[str, Any]]:
    """Every hyperparameter combination of the contender's grid (its fixed hparams alone
    when it has none)."""
    import itertools

    if not contender.grid:
        return [dict(contender.hparams)]
    names = list(contender.grid)
    return [
        {**contender.hparams, **dict(zip(names, values, strict=True))}
        for values in itertools.product(*(contender.grid[name] for name in names))
    ]


def fmt(value: float | None, digits: int = 4) -> str:
    """A number for tables: 4 significant digits, scientific below 1e-3 and from 1e5."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    magnitude = abs(value)
    if magnitude != 0 and (magnitude < 1e-3 or magnitude >= 1e5):
        return f"{value:.{max(1, digits - 1)}e}"
    return f"{value:.{digits}g}"


def mean_std(row: dict[str, Any] | None) -> str:
    """``mean ± std`` of a summary row (``value (n = 1)`` for a single value), with n/N where
    some runs gave no value."""
    if row is None or row["mean"] is None:
        return "—"
    if row["n"] == 1:
        text = f"{fmt(row['mean'])} (n = 1)"
    else:
        text = f"{fmt(row['mean'])} ± {fmt(row['std'], 2)}"
    return text if row["n"] == row["runs"] else f"{text} ({row['n']}/{row['runs']})"


# ----------------------------------------------------------------------------- summaries


@dataclass
class ExperimentResult:
    """The runs and summary rows of one experiment, with lookups for claim checks."""

    experiment: Experiment
    primary_metric: str
    maximize: bool
    runs: list[dict[str, Any]]
    rows: list[dict[str, Any]]

    def values(self, label: str, metric: str | None = None) -> list[float]:
        """The metric's values over the selected runs of ``label`` (failed runs left out)."""
        return metric_values(self.selected_runs(label), metric or self.primary_metric)

    def failures(self, label: str) -> int:
        """Selected runs of ``label`` that failed (diverged or at chance)."""
        return sum(1 for run in self.selected_runs(label) if run_failure(run) is not None)

    def row(self, label: str, metric: str | None = None) -> dict[str, Any] | None:
        metric = metric or self.primary_metric
        for row in self.rows:
            if row["method"] == label and row["metric"] == metric:
                return row
        return None

    def selected_runs(self, label: str) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["label"] == label and r["role"] == "selected"]

    def better(self, a: float, b: float) -> bool:
        return a > b if self.maximize else a < b


def run_failure(run: dict[str, Any]) -> str | None:
    """ "diverged", "at chance" (final accuracy below 1/C + CHANCE_MARGIN), or None."""
    if run["diverged"]:
        return "diverged"
    classes = run.get("num_classes")
    accuracy = run["final"].get("test_accuracy")
    if classes and accuracy is not None and accuracy < 1.0 / classes + CHANCE_MARGIN:
        return "at chance"
    return None


def metric_values(runs: list[dict[str, Any]], metric: str) -> list[float]:
    """The metric of every run that has it: ``steps_to_r``/``time_to_r`` read the threshold
    crossings (runs that never crossed are left out), ``seconds_per_step`` the run's training
    time over its steps, other metrics the final evaluation of runs that did not fail
    (:func:`run_failure`)."""
    values = []
    for run in runs:
        if metric == "seconds_per_step":
            if run["steps_done"]:
                values.append(run["train_time_s"] / run["steps_done"])
            continue
        if metric.startswith(("steps_to_", "time_to_")):
            kind, threshold = metric.split("_to_")
            hit = run.get("thresholds", {}).get(threshold)
            if hit is not None:
                values.append(float(hit["step" if kind == "steps" else "time_s"]))
            continue
        value = run["final"].get(metric)
        if value is not None and run_failure(run) is None and math.isfinite(value):
            values.append(float(value))
    return values


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"median": None, "q25": None, "q75": None, "min": None, "max": None}
    ordered = sorted(values)
    if len(ordered) == 1:
        q25 = q75 = ordered[0]
    else:
        q25, _, q75 = statistics.quantiles(ordered, n=4, method="inclusive")
    return {
        "median": statistics.median(ordered),
        "q25": q25,
        "q75": q75,
        "min": ordered[0],
        "max": ordered[-1],
    }


def _rows_for(
    experiment: Experiment, label: str, runs: list[dict], metrics: list[str], **extra: Any
) -> list[dict[str, Any]]:
    rows = []
    for metric in metrics:
        values = metric_values(runs, metric)
        rows.append(
            {
                "experiment": experiment.name,
                "task": experiment.task,
                "method": label,
                "metric": metric,
                "mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else 0.0 if values else None,
                **_quantiles(values),
                "n": len(values),
                "runs": len(runs),
                "diverged": sum(1 for r in runs if r["diverged"]),
                "at_chance": sum(1 for r in runs if run_failure(r) == "at chance"),
                "hparams": runs[0]["config"]["hparams"] if runs else {},
                **extra,
            }
        )
    return rows


def experiment_results(suite: Suite, records: list[dict[str, Any]]) -> list[ExperimentResult]:
    """Per experiment of ``suite``: its runs among ``records`` and the summary rows (the
    selected configuration of each contender, and every grid point of ``report_grid``
    contenders)."""
    results = []
    for experiment in suite.experiments:
        task = get_task(experiment.task, **experiment.task_options)
        runs = [r for r in records if r["experiment"] == experiment.name]
        metrics = [task.primary_metric, *experiment.metrics]
        metrics += [
            f"{kind}_to_{threshold:g}"
            for threshold in experiment.loss_thresholds
            for kind in ("steps", "time")
        ]
        rows: list[dict[str, Any]] = []
        for contender in experiment.contenders:
            selected = [r for r in runs if r["label"] == contender.name and r["role"] == "selected"]
            if not selected:
                continue
            rows += _rows_for(experiment, contender.name, selected, metrics, role="selected")
            if contender.report_grid:
                for hparams in grid_points(contender):
                    point = [
                        r
                        for r in runs
                        if r["label"] == contender.name and r["config"]["hparams"] == hparams
                    ]
                    tuned = {k: hparams[k] for k in contender.grid}
                    label = f"{contender.name} [{hparam_text(tuned)}]"
                    rows += _rows_for(experiment, label, point, metrics, role="grid")
        results.append(ExperimentResult(experiment, task.primary_metric, task.maximize, runs, rows))
    return results


def summarize(suite: Suite, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for result in experiment_results(suite, records) for row in result.rows]
