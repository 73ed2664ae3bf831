"""`lrkit bench`: runs a suite's plan (experiments and stages) and returns its results (the
report is rendered by :mod:`lrkit.harness.report`).

Layout of the output directory::

    DIR/runs/*.json       one file per finished run (what an interrupted bench resumes from)
    DIR/artifacts/*.json  one file per stage's artifact (resumed the same way)
    DIR/results.json      suite, command, environment, provenance, runs, tuning, artifacts,
                          summary, claims, cost

Contenders are tuned as :mod:`lrkit.harness.tuning` says; their runs go to an executor
(:mod:`lrkit.harness.executors`: this process, worker processes, or Ray) in rounds, and the
records are ordered by the plan, so results.json does not depend on the number of workers.
A run file recorded by another code state is not resumed unless ``allow_mixed``; then the
report says how many runs came from other code states.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from lrkit.harness.claims import evaluate_claims, evaluate_cost_claims
from lrkit.harness.cost import measure_cost
from lrkit.harness.executors import Executor, LocalExecutor, write_json
from lrkit.harness.experiments import ArtifactRef, Experiment, Stage, StageInputs, Suite
from lrkit.harness.plan import check_available, count_runs
from lrkit.harness.progress import progress_bar
from lrkit.harness.provenance import code_state, environment
from lrkit.harness.results import (
    RunConfig,
    experiment_results,
    hparam_text,
    reported_record,
    summarize,
)
from lrkit.harness.tuning import RunRequest, TuningRecord, contender_plan
from lrkit.tasks import get_task


class MixedCodeStateError(RuntimeError):
    """A run file in the output directory was recorded by another code state."""


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


def run_file(directory: Path, request: RunRequest) -> Path:
    stem = (
        f"{request.experiment.name}__{request.contender.name}__"
        f"{_file_text(request.hparams)}__seed{request.seed}"
    )
    return directory / "runs" / (re.sub(r"[^A-Za-z0-9_.=,+-]", "_", stem) + ".json")


def read_json(path: Path, what: str) -> Any:
    """The JSON in ``path``; a clear error naming the file when it is not valid JSON."""
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


def _batch_size(experiment: Experiment) -> int | None:
    """The experiment's batch size, capped by ``batch_size_cap`` (full batch stays full)."""
    return _capped_batch_size(
        experiment.task, experiment.task_options, experiment.batch_size, experiment.batch_size_cap
    )


def _capped_batch_size(
    task: str, options: Mapping[str, Any], size: int | None, cap: int | None
) -> int | None:
    """``size`` (None: the task's), at most ``cap``; a full-batch task stays full batch."""
    if cap is None:
        return size
    if size is None:
        size = get_task(task, **options).batch_size
    return None if size is None else min(size, cap)


def _config(request: RunRequest, device: str | None) -> dict[str, Any]:
    experiment, contender = request.experiment, request.contender
    return RunConfig(
        task=experiment.task,
        method=contender.method,
        seed=request.seed,
        hparams=request.hparams,
        task_options=dict(experiment.task_options),
        steps=experiment.steps,
        batch_size=_batch_size(experiment),
        eval_every=experiment.eval_every,
        log_every=experiment.log_every,
        grad_clip=contender.grad_clip,
        loss_thresholds=experiment.loss_thresholds,
        eval_subset=experiment.eval_subset,
        device=device,
    ).__dict__


@dataclass
class Runner:
    """Drives the contenders' tuning plans, resuming finished runs from disk."""

    out: Path
    seeds: int
    executor: Executor
    bar: Any
    device: str | None = None
    allow_mixed: bool = False
    artifacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    tuning: list[TuningRecord] = field(default_factory=list)
    resumed: int = 0
    mixed: int = 0

    def _load(self, path: Path) -> dict[str, Any] | None:
        if not path.exists():
            return None
        record = read_json(path, "run file")
        recorded = record.get("provenance", {}).get("code_state")
        current = code_state()["code_state"]
        if recorded != current:
            if not self.allow_mixed:
                raise MixedCodeStateError(
                    f"run file {path} was recorded by code state {recorded or 'unrecorded'}, "
                    f"this is {current}; use a fresh --out directory, delete the old runs, or "
                    "pass --allow-mixed to resume them anyway (the report will say so)"
                )
            self.mixed += 1
        self.resumed += 1
        return record

    def execute(self, requests: list[RunRequest]) -> list[dict[str, Any]]:
        """Records of ``requests`` in order: resumed from disk, or run by the executor."""
        records: list[dict[str, Any] | None] = []
        jobs, slots = [], []
        for request in requests:
            path = run_file(self.out, request)
            record = self._load(path)
            if record is None:
                jobs.append((_config(request, self.device), str(path)))
                slots.append(len(records))
            else:
                self.bar.update(1)
            records.append(record)
        for slot, record in zip(
            slots, self.executor.map(jobs, lambda: self.bar.update(1)), strict=True
        ):
            records[slot] = record
        for request, record in zip(requests, records, strict=True):
            assert record is not None
            record.update(
                experiment=request.experiment.name, label=request.contender.name, role=request.role
            )
        return [r for r in records if r is not None]

    def run_experiments(self, experiments: list[Experiment]) -> list[dict[str, Any]]:
        """Runs all contenders of ``experiments`` together, round by round; returns their
        records in plan order."""
        plans: list[tuple[Generator, list[dict[str, Any]]]] = []
        for experiment in experiments:
            task = get_task(experiment.task, **experiment.task_options)
            for contender in experiment.contenders:
                resolved = replace(contender, hparams=_resolve(contender.hparams, self.artifacts))
                plan = contender_plan(
                    experiment,
                    resolved,
                    experiment.seeds or self.seeds,
                    task.selection_metric,
                    task.maximize,
                )
                plans.append((plan, []))
        pending: dict[int, list[RunRequest]] = {}
        for index, (plan, _) in enumerate(plans):
            pending[index] = next(plan)
        while pending:
            order = sorted(pending)
            batch = [request for index in order for request in pending[index]]
            records = self.execute(batch)
            cursor, pending_next = 0, {}
            for index in order:
                count = len(pending[index])
                chunk, cursor = records[cursor : cursor + count], cursor + count
                plan, collected = plans[index]
                collected.extend(chunk)
                try:
                    pending_next[index] = plan.send(chunk)
                except StopIteration as done:
                    if done.value is not None:
                        self.tuning.append(done.value)
                else:
                    extension = [r for r in pending_next[index] if r.role != "selected"]
                    if extension:  # a grid extension: runs count_runs did not foresee
                        self.bar.total += len(extension)
                        self.bar.refresh()
            pending = pending_next
        return [record for _, collected in plans for record in collected]

    def make_artifact(self, stage: Stage, records: list[dict[str, Any]]) -> None:
        path = self.out / "artifacts" / f"{stage.name}.json"
        if path.exists():
            self.artifacts[stage.name] = read_json(path, "artifact file")
            return
        inputs = StageInputs(
            runs={
                name: [r for r in records if r["experiment"] == name] for name in stage.experiments
            },
            artifacts={name: self.artifacts[name] for name in stage.artifacts},
            smoke=stage.smoke,
            device=self.device,
        )
        artifact = stage.build(inputs)
        write_json(path, artifact)
        self.artifacts[stage.name] = artifact


def finalize(results: dict[str, Any], suite: Suite) -> dict[str, Any]:
    """Adds the summary rows and the claim verdicts computed from ``results["runs"]``
    (what `lrkit bench` does after its runs and `lrkit report` does again)."""
    results["summary"] = summarize(suite, results["runs"])
    results["claims"] = evaluate_claims(experiment_results(suite, results["runs"]), suite.claims)
    results["claims"] += evaluate_cost_claims(results.get("cost", []))
    return results


def run_suite(
    suite: Suite,
    out: Path,
    executor: Executor | None = None,
    *,
    seeds: int | None = None,
    command: str | None = None,
    progress: bool = True,
    smoke: bool = False,
    device: str | None = None,
    allow_mixed: bool = False,
    threads: int = 1,
    backend: str = "local",
) -> dict[str, Any]:
    """Runs (or resumes) ``suite`` into ``out`` with ``executor`` (default: this process,
    ``threads`` torch threads) and returns the results (also written to
    ``out/results.json``)."""
    if executor is None:
        executor = LocalExecutor(1, threads, code_state())
    out.mkdir(parents=True, exist_ok=True)
    n_seeds = seeds or suite.seeds
    check_available(suite)
    started = time.time()
    bar = progress_bar(count_runs(suite, n_seeds), f"lrkit bench {suite.name}", progress, "run")
    runner = Runner(out, n_seeds, executor, bar, device, allow_mixed)
    records: list[dict[str, Any]] = []
    segment: list[Experiment] = []
    for item in (*suite.plan, None):
        if isinstance(item, Experiment):
            segment.append(item)
            continue
        if segment:
            records += runner.run_experiments(segment)
            segment = []
        if isinstance(item, Stage):
            runner.make_artifact(item, records)
    bar.close()
    cost_rows = []
    for check in suite.costs:
        for row in measure_cost(
            check.task,
            list(check.methods),
            steps=check.steps,
            warmup=check.warmup,
            batch_size=_capped_batch_size(check.task, {}, None, check.batch_size_cap),
            memory=check.memory,
            repeats=check.repeats,
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
        "selection": suite.selection,
        "provenance": code_state(),
        "environment": environment(threads, executor.workers, backend),
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started)),
        "duration_s": time.time() - started,
        "resumed_runs": runner.resumed,
        "mixed_runs": runner.mixed,
        "train_time_s": sum(r["train_time_s"] for r in records),
        "seeds": n_seeds,
        "runs": [reported_record(r) for r in records],
        "tuning": [t.to_dict() for t in runner.tuning],
        "artifacts": runner.artifacts,
        "cost": cost_rows,
    }
    finalize(results, suite)
    write_json(out / "results.json", results)
    return results
