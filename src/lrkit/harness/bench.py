"""`lrkit bench`: runs a suite's plan (experiments and stages), tunes contenders, and
returns the results (the report is rendered by :mod:`lrkit.harness.report`).

Layout of the output directory::

    DIR/runs/*.json       one file per finished run (what an interrupted bench resumes from)
    DIR/artifacts/*.json  one file per stage's artifact (resumed the same way)
    DIR/results.json      suite, command, environment, runs, artifacts, summary, claims, cost
    DIR/report.md, *.png  written by lrkit.harness.report

Tuning follows DeepOBS: every grid point runs with seed 0, the best by the task's primary
metric (a diverged run is worst) is rerun with the remaining seeds.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

import lrkit
from lrkit.harness.claims import evaluate_claims, evaluate_cost_claims
from lrkit.harness.cost import measure_cost
from lrkit.harness.experiments import (
    ArtifactRef,
    Contender,
    Experiment,
    Stage,
    StageInputs,
    Suite,
)
from lrkit.harness.progress import progress_bar
from lrkit.harness.results import (
    RunConfig,
    downsample,
    experiment_results,
    grid_points,
    hparam_text,
    reported_record,
    summarize,
)
from lrkit.harness.training import train
from lrkit.methods import get_method
from lrkit.tasks import get_task


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


def _file_text(hparams: Mapping[str, Any]) -> str:
    """Hyperparameters for a file name: scalars as they are, anything longer (a replayed
    schedule) by a short digest of its JSON."""
    short = {}
    for key, value in hparams.items():
        if isinstance(value, (list, tuple, dict)):
            digest = hashlib.sha1(json.dumps(value, sort_keys=True).encode()).hexdigest()[:10]
            short[key] = f"sha1-{digest}"
        else:
            short[key] = value
    return hparam_text(short)


def _run_file(directory: Path, experiment: str, label: str, hparams: dict, seed: int) -> Path:
    stem = f"{experiment}__{label}__{_file_text(hparams)}__seed{seed}"
    return directory / "runs" / (re.sub(r"[^A-Za-z0-9_.=,+-]", "_", stem) + ".json")


def _score(run: dict[str, Any], metric: str, maximize: bool) -> float:
    value = run["final"].get(metric)
    if run["diverged"] or value is None or not math.isfinite(value):
        return -math.inf
    return value if maximize else -value


def _write_json(path: Path, value: Any) -> None:
    """Writes ``value`` atomically (a crash never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(value))
    tmp.replace(path)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{what} {path} is not valid JSON ({exc}); delete it to recompute it"
        ) from None


def _resolve(value: Any, artifacts: Mapping[str, dict[str, Any]]) -> Any:
    """``value`` with every :class:`ArtifactRef` (also inside dicts) replaced by its value."""
    if isinstance(value, ArtifactRef):
        if value.artifact not in artifacts:
            raise KeyError(f"artifact {value.artifact!r} has not been made yet")
        made = artifacts[value.artifact]
        return made if value.key is None else made[value.key]
    if isinstance(value, Mapping):
        return {key: _resolve(item, artifacts) for key, item in value.items()}
    return value


@dataclass
class Runner:
    """Runs the planned configurations of a suite, resuming finished runs from disk."""

    suite: Suite
    out: Path
    seeds: int
    device: str | None = None
    records: list[dict[str, Any]] = field(default_factory=list)
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    resumed: int = 0

    def run(
        self, experiment: Experiment, contender: Contender, hparams: dict, seed: int, role: str
    ) -> dict[str, Any]:
        path = _run_file(self.out, experiment.name, contender.name, hparams, seed)
        if path.exists():
            record = _read_json(path, "run file")
            self.resumed += 1
        else:
            config = RunConfig(
                task=experiment.task,
                method=contender.method,
                seed=seed,
                hparams=hparams,
                task_options=dict(experiment.task_options),
                steps=experiment.steps,
                batch_size=experiment.batch_size,
                eval_every=experiment.eval_every,
                log_every=experiment.log_every,
                grad_clip=contender.grad_clip,
                loss_thresholds=experiment.loss_thresholds,
                eval_subset=experiment.eval_subset,
                device=self.device,
            )
            record = train(config)
            record["curve"] = downsample(record["curve"])
            _write_json(path, record)
        record.update(experiment=experiment.name, label=contender.name, role=role)
        self.records.append(record)
        return record

    def run_contender(self, experiment: Experiment, contender: Contender, bar) -> None:
        task = get_task(experiment.task, **experiment.task_options)
        seeds = experiment.seeds or self.seeds
        resolved = replace(
            contender,
            hparams=_resolve(contender.hparams, self.artifacts),
        )
        points = grid_points(resolved)
        if len(points) == 1:
            for seed in range(seeds):
                self.run(experiment, resolved, points[0], seed, "selected")
                bar.update(1)
            return
        tuning_seeds = range(seeds) if contender.report_grid else range(1)
        by_point: list[list[dict]] = []
        for hparams in points:
            runs = []
            for seed in tuning_seeds:
                runs.append(self.run(experiment, resolved, hparams, seed, "grid"))
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
            self.run(experiment, resolved, points[best], seed, "selected")
            bar.update(1)

    def make_artifact(self, stage: Stage) -> None:
        path = self.out / "artifacts" / f"{stage.name}.json"
        if path.exists():
            self.artifacts[stage.name] = _read_json(path, "artifact file")
            return
        inputs = StageInputs(
            runs={
                name: [r for r in self.records if r["experiment"] == name]
                for name in stage.experiments
            },
            artifacts={name: self.artifacts[name] for name in stage.artifacts},
        )
        artifact = stage.build(inputs)
        _write_json(path, artifact)
        self.artifacts[stage.name] = artifact


def count_runs(suite: Suite, seeds: int) -> int:
    total = 0
    for experiment in suite.experiments:
        n = experiment.seeds or seeds
        for contender in experiment.contenders:
            points = 1
            for values in contender.grid.values():
                points *= len(values)
            if not contender.grid:
                total += n
            elif contender.report_grid:
                total += points * n
            else:
                total += points + n - 1
    return total


def select(
    suite: Suite, *, tasks: list[str] | None = None, methods: list[str] | None = None
) -> Suite:
    """The suite restricted to the given tasks and methods (by task name / method name or
    contender label). Stages stay when every experiment they read stays."""
    plan: list[Experiment | Stage] = []
    kept: set[str] = set()
    for item in suite.plan:
        if isinstance(item, Stage):
            if all(name in kept for name in (*item.experiments, *item.artifacts)):
                plan.append(item)
                kept.add(item.name)
            continue
        if tasks and item.task not in tasks and item.name not in tasks:
            continue
        contenders = tuple(
            c for c in item.contenders if not methods or c.method in methods or c.name in methods
        )
        if contenders:
            plan.append(replace(item, contenders=contenders))
            kept.add(item.name)
    if not any(isinstance(item, Experiment) for item in plan):
        raise ValueError("the --tasks/--methods filters leave no experiment to run")
    return replace(suite, plan=tuple(plan))


def check_available(suite: Suite) -> None:
    """Raises before any run when a contender's method is not installed or reserved."""
    for experiment in suite.experiments:
        for contender in experiment.contenders:
            spec = get_method(contender.method)
            if not spec.available:
                raise ImportError(
                    f"suite {suite.name!r} uses {contender.method!r}, which is not available "
                    f"(needs {spec.requires or 'an implementation'}); pip install "
                    f"'lrkit[{spec.extra}]' or leave it out with --methods"
                )


def finalize(results: dict[str, Any], suite: Suite) -> dict[str, Any]:
    """Adds the summary rows and the claim verdicts computed from ``results["runs"]``
    (what `lrkit bench` does after its runs and `lrkit report` does again)."""
    results["summary"] = summarize(suite, results["runs"])
    results["claims"] = evaluate_claims(experiment_results(suite, results["runs"]))
    results["claims"] += evaluate_cost_claims(results.get("cost", []))
    return results


def run_suite(
    suite: Suite,
    out: Path,
    *,
    seeds: int | None = None,
    command: str | None = None,
    progress: bool = True,
    smoke: bool = False,
    device: str | None = None,
) -> dict[str, Any]:
    """Runs (or resumes) ``suite`` into ``out`` and returns the results (also written to
    ``out/results.json``)."""
    out.mkdir(parents=True, exist_ok=True)
    n_seeds = seeds or suite.seeds
    check_available(suite)
    started = time.time()
    runner = Runner(suite, out, n_seeds, device)
    bar = progress_bar(count_runs(suite, n_seeds), f"lrkit bench {suite.name}", progress, "run")
    for item in suite.plan:
        if isinstance(item, Stage):
            runner.make_artifact(item)
            continue
        for contender in item.contenders:
            runner.run_contender(item, contender, bar)
    bar.close()
    cost_rows = []
    for check in suite.costs:
        for row in measure_cost(
            check.task, list(check.methods), steps=check.steps, memory=check.memory
        ):
            targeted = row["method"] in check.methods
            row["max_ratio"] = check.max_ratio if targeted else None
            row["source"] = check.source if targeted else ""
            cost_rows.append(row)
    results = {
        "suite": suite.name,
        "scale": suite.scale,
        "smoke": smoke,
        "command": command or " ".join(["lrkit", *sys.argv[1:]]),
        "environment": environment(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "duration_s": time.time() - started,
        "resumed_runs": runner.resumed,
        "train_time_s": sum(r["train_time_s"] for r in runner.records),
        "seeds": n_seeds,
        "runs": [reported_record(r) for r in runner.records],
        "artifacts": runner.artifacts,
        "cost": cost_rows,
    }
    finalize(results, suite)
    _write_json(out / "results.json", results)
    return results
