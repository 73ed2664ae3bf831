"""`lrkit bench`: runs a suite (task × method × seed), tunes baselines, writes results.

Layout of the output directory::

    DIR/runs/*.json     one file per finished run (what an interrupted bench resumes from)
    DIR/results.json    suite, command, environment, runs, summary, claims
    DIR/report.md       tables and claims (lrkit.harness.report)
    DIR/*.png           curves and LR trajectories
"""

from __future__ import annotations

import itertools
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

import lrkit
from lrkit.harness.suites import Entry, Experiment, Suite
from lrkit.harness.training import RunConfig, progress_bar, train
from lrkit.methods import get_method
from lrkit.tasks import get_task

CURVE_POINTS_KEPT = 400
REPORTED_CURVE_POINTS = 120
REPORTED_CURVE_KEYS = ("step", "train_loss", "time_s", "lr", "effective_lr", "l_min")


def environment() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if "model name" in line]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "lrkit": lrkit.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.is_available(),
    }


def _hparam_text(hparams: dict[str, Any]) -> str:
    return ",".join(
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in hparams.items()
    )


def _run_file(directory: Path, experiment: str, label: str, hparams: dict, seed: int) -> Path:
    stem = f"{experiment}__{label}__{_hparam_text(hparams)}__seed{seed}"
    return directory / "runs" / (re.sub(r"[^A-Za-z0-9_.=,+-]", "_", stem) + ".json")


def _grid_points(entry: Entry) -> list[dict[str, Any]]:
    if not entry.grid:
        return [dict(entry.hparams)]
    names = list(entry.grid)
    return [
        {**entry.hparams, **dict(zip(names, values, strict=True))}
        for values in itertools.product(*(entry.grid[name] for name in names))
    ]


def _score(run: dict[str, Any], metric: str, maximize: bool) -> float:
    value = run["final"].get(metric)
    if run["diverged"] or value is None or not math.isfinite(value):
        return -math.inf
    return value if maximize else -value


def _downsample(
    curve: dict[str, list[float]], points: int = CURVE_POINTS_KEPT
) -> dict[str, list[float]]:
    n = len(curve.get("step", []))
    if n <= points:
        return curve
    keep = sorted({round(i * (n - 1) / (points - 1)) for i in range(points)})
    return {key: [values[i] for i in keep] for key, values in curve.items()}


def reported_record(record: dict[str, Any]) -> dict[str, Any]:
    """The run as results.json keeps it: the curve thinned to REPORTED_CURVE_POINTS points
    of the logged loss, time and learning rates (thresholds and metrics are computed from
    the full curve before this)."""
    curve = {k: v for k, v in record["curve"].items() if k in REPORTED_CURVE_KEYS}
    return {**record, "curve": _downsample(curve, REPORTED_CURVE_POINTS)}


@dataclass
class Runner:
    """Runs the planned configurations of a suite, resuming finished runs from disk."""

    suite: Suite
    out: Path
    seeds: int
    progress: bool = True
    records: list[dict[str, Any]] = field(default_factory=list)
    resumed: int = 0

    def run(self, experiment: Experiment, entry: Entry, hparams: dict, seed: int, role: str):
        path = _run_file(self.out, experiment.name, entry.name, hparams, seed)
        if path.exists():
            record = json.loads(path.read_text())
            self.resumed += 1
        else:
            config = RunConfig(
                task=experiment.task,
                method=entry.method,
                seed=seed,
                hparams=hparams,
                task_options=dict(experiment.task_options),
                steps=experiment.steps,
                batch_size=experiment.batch_size,
                eval_every=experiment.eval_every,
                log_every=experiment.log_every,
                grad_clip=entry.grad_clip,
                loss_thresholds=experiment.loss_thresholds,
                eval_subset=experiment.eval_subset,
            )
            record = train(config)
            record["curve"] = _downsample(record["curve"])
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(record))
            tmp.replace(path)
        record.update(experiment=experiment.name, label=entry.name, role=role)
        self.records.append(record)
        return record

    def run_entry(self, experiment: Experiment, entry: Entry, bar) -> None:
        task = get_task(experiment.task, **experiment.task_options)
        seeds = experiment.seeds or self.seeds
        points = _grid_points(entry)
        if len(points) == 1:
            for seed in range(seeds):
                self.run(experiment, entry, points[0], seed, "selected")
                bar.update(1)
            return
        tuning_seeds = range(seeds) if entry.report_grid else range(1)
        by_point: list[list[dict]] = []
        for hparams in points:
            runs = []
            for seed in tuning_seeds:
                runs.append(self.run(experiment, entry, hparams, seed, "grid"))
                bar.update(1)
            by_point.append(runs)
        scores = [
            statistics.fmean(_score(r, task.primary_metric, task.maximize) for r in runs)
            for runs in by_point
        ]
        best = max(range(len(points)), key=lambda i: scores[i])
        for record in by_point[best]:
            record["role"] = "selected"
        for seed in range(len(tuning_seeds), seeds):
            self.run(experiment, entry, points[best], seed, "selected")
            bar.update(1)


def count_runs(suite: Suite, seeds: int) -> int:
    total = 0
    for experiment in suite.experiments:
        n = experiment.seeds or seeds
        for entry in experiment.entries:
            points = len(_grid_points(entry))
            if points == 1:
                total += n
            elif entry.report_grid:
                total += points * n
            else:
                total += points + n - 1
    return total


def select(
    suite: Suite, *, tasks: list[str] | None = None, methods: list[str] | None = None
) -> Suite:
    """The suite restricted to the given tasks and methods (by task name / method name or
    entry label)."""
    experiments = []
    for experiment in suite.experiments:
        if tasks and experiment.task not in tasks and experiment.name not in tasks:
            continue
        entries = tuple(
            e for e in experiment.entries if not methods or e.method in methods or e.name in methods
        )
        if entries:
            experiments.append(replace(experiment, entries=entries))
    if not experiments:
        raise ValueError("the --tasks/--methods filters leave no experiment to run")
    return replace(suite, experiments=tuple(experiments))


def run_suite(
    suite: Suite,
    out: Path,
    *,
    seeds: int | None = None,
    command: str | None = None,
    progress: bool = True,
    smoke: bool = False,
) -> dict[str, Any]:
    """Runs (or resumes) ``suite`` into ``out`` and writes results.json, report and plots."""
    from lrkit.harness.report import write_report

    out.mkdir(parents=True, exist_ok=True)
    n_seeds = seeds or suite.seeds
    _check_available(suite)
    started = time.time()
    runner = Runner(suite, out, n_seeds, progress)
    bar = progress_bar(count_runs(suite, n_seeds), f"lrkit bench {suite.name}", progress)
    for experiment in suite.experiments:
        for entry in experiment.entries:
            runner.run_entry(experiment, entry, bar)
    bar.close()
    cost_rows = []
    for check in suite.costs:
        from lrkit.harness.cost import measure_cost

        for row in measure_cost(
            check.task, list(check.methods), steps=check.steps, memory=check.memory
        ):
            row["max_ratio"] = check.max_ratio if row["method"] in check.methods else None
            cost_rows.append(row)
    results = {
        "suite": suite.name,
        "smoke": smoke,
        "command": command or " ".join(["lrkit", *sys.argv[1:]]),
        "environment": environment(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "duration_s": time.time() - started,
        "resumed_runs": runner.resumed,
        "train_time_s": sum(r["train_time_s"] for r in runner.records),
        "seeds": n_seeds,
        "runs": [reported_record(r) for r in runner.records],
        "cost": cost_rows,
    }
    results["summary"] = summarize(suite, runner.records)
    write_report(results, out, suite)
    return results


def _check_available(suite: Suite) -> None:
    for experiment in suite.experiments:
        for entry in experiment.entries:
            spec = get_method(entry.method)
            if not spec.available:
                raise ImportError(
                    f"suite {suite.name!r} uses {entry.method!r}, which is not available "
                    f"(needs {spec.requires or 'an implementation'}); pip install 'lrkit[all]' "
                    f"or leave it out with --methods"
                )


@dataclass
class ExperimentResult:
    """The runs and summary rows of one experiment, with lookups for claim checks."""

    experiment: Experiment
    primary_metric: str
    maximize: bool
    runs: list[dict[str, Any]]
    rows: list[dict[str, Any]]

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


def _metric_values(runs: list[dict[str, Any]], metric: str) -> list[float]:
    values = []
    for run in runs:
        if metric.startswith(("steps_to_", "time_to_")):
            kind, threshold = metric.split("_to_")
            hit = run.get("thresholds", {}).get(threshold)
            if hit is not None:
                values.append(float(hit["step" if kind == "steps" else "time_s"]))
            continue
        value = run["final"].get(metric)
        if value is not None and not run["diverged"] and math.isfinite(value):
            values.append(float(value))
    return values


def _rows_for(experiment: Experiment, label: str, runs: list[dict], metrics: list[str], **extra):
    rows = []
    for metric in metrics:
        values = _metric_values(runs, metric)
        rows.append(
            {
                "experiment": experiment.name,
                "task": experiment.task,
                "method": label,
                "metric": metric,
                "mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else 0.0 if values else None,
                "n": len(values),
                "runs": len(runs),
                "diverged": sum(1 for r in runs if r["diverged"]),
                "hparams": runs[0]["config"]["hparams"] if runs else {},
                **extra,
            }
        )
    return rows


def experiment_results(suite: Suite, records: list[dict[str, Any]]) -> list[ExperimentResult]:
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
        for entry in experiment.entries:
            selected = [r for r in runs if r["label"] == entry.name and r["role"] == "selected"]
            if not selected:
                continue
            rows += _rows_for(experiment, entry.name, selected, metrics, role="selected")
            if entry.report_grid:
                for hparams in _grid_points(entry):
                    point = [
                        r
                        for r in runs
                        if r["label"] == entry.name and r["config"]["hparams"] == hparams
                    ]
                    label = f"{entry.name} [{_hparam_text({k: hparams[k] for k in entry.grid})}]"
                    rows += _rows_for(experiment, label, point, metrics, role="grid")
        results.append(ExperimentResult(experiment, task.primary_metric, task.maximize, runs, rows))
    return results


def summarize(suite: Suite, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [row for result in experiment_results(suite, records) for row in result.rows]
