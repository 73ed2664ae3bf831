"""What a benchmark suite is made of: experiments of contenders, claims, stages, cost checks.

A :class:`Suite` is an ordered plan of :class:`Experiment` s and :class:`Stage` s. An
experiment trains every :class:`Contender` on one task; a contender with a ``grid`` is tuned
(see :mod:`lrkit.harness.bench`). A stage turns earlier runs and artifacts into an artifact —
a meta-learned schedule, an averaged LR trajectory, a k-fold split — that later contenders
consume through :class:`ArtifactRef` hyperparameters. :class:`Claim` s are named checks of a
paper's statement on one experiment's measured results. The suites themselves live in
:mod:`lrkit.suites`, one module per paper.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

SMOKE_STEPS = 12
SMOKE_EVAL_ROWS = 64
SMOKE_BATCH_CAP = 32
SCALES = ("cpu", "paper")


@dataclass(frozen=True)
class ArtifactRef:
    """A hyperparameter value taken from a stage's artifact: ``artifact[key]`` (the whole
    artifact when ``key`` is None), resolved before the run is built."""

    artifact: str
    key: str | None = None


@dataclass(frozen=True)
class Contender:
    """One method configuration in an experiment.

    Args:
        method: the registry name.
        hparams: fixed hyperparameters (``schedule``/``schedule_options`` go to the harness).
        grid: hyperparameter → values to tune over.
        label: the name in tables and plots (default: method, plus its schedule).
        report_grid: run every grid point with every seed and report each as its own row.
        grad_clip: clip the global gradient norm at this value (baselines of L4's recurrent
            task).
    """

    method: str
    hparams: Mapping[str, Any] = field(default_factory=dict)
    grid: Mapping[str, tuple[Any, ...]] = field(default_factory=dict)
    label: str | None = None
    report_grid: bool = False
    grad_clip: float | None = None

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        schedule = self.hparams.get("schedule", "constant")
        return self.method if schedule == "constant" else f"{self.method}+{schedule}"


@dataclass(frozen=True)
class Claim:
    """A paper's statement and how to check it on measured results.

    Args:
        name: a stable identifier (results.json, tests).
        text: the statement, with where in the paper it stands.
        check: for a claim of an experiment, ``check(result)`` with its
            :class:`lrkit.harness.results.ExperimentResult`; for a claim of the suite,
            ``check(results)`` with a mapping experiment name → result. Returns a
            :class:`lrkit.harness.claims.Verdict`.
        experiments: for a claim of the suite, the experiments it reads (a run restricted
            with ``--tasks`` keeps the claim when it keeps all of them).
    """

    name: str
    text: str
    check: Callable[[Any], Any]
    experiments: tuple[str, ...] = ()


@dataclass(frozen=True)
class Experiment:
    """One task and the contenders trained on it.

    Args:
        name: identifier (file names, ``--tasks`` filter).
        title: the report's heading.
        task: registry name; ``task_options`` its options.
        contenders: what is trained.
        steps, batch_size, eval_every, log_every: override the task's defaults.
        seeds: seeds per configuration (default: the suite's).
        metrics: metrics reported besides the task's primary metric.
        loss_thresholds: relative training-loss levels whose crossing is recorded.
        claims: the paper's statements checked on this experiment.
        eval_subset: evaluate on the first rows of the test set only (smoke runs).
        notes: text for the report.
        extra: ``extra(result)`` → Markdown for a table only this experiment has.
        figure: ``figure(result, out)`` → the path of a figure only this experiment has
            (written into ``out``), or None.
        deterministic: no data sampling and a fixed start (one run is exact; seeds repeat
            it), so verdicts compare values without a noise rule.
        grid_extensions: how many log steps a grid may grow on each side while its best
            point sits on that edge.
        batch_size_cap: the largest mini-batch (smoke runs; full-batch tasks are left alone).
        smoke_steps: the steps of a smoke run (fewer for an experiment whose steps are slow).
    """

    name: str
    title: str
    task: str
    contenders: tuple[Contender, ...]
    task_options: Mapping[str, Any] = field(default_factory=dict)
    steps: int | None = None
    batch_size: int | None = None
    eval_every: int | None = None
    log_every: int | None = None
    seeds: int | None = None
    metrics: tuple[str, ...] = ()
    loss_thresholds: tuple[float, ...] = ()
    claims: tuple[Claim, ...] = ()
    eval_subset: int | None = None
    notes: str = ""
    extra: Callable[[Any], str] | None = None
    figure: Callable[[Any, Path], Path | None] | None = None
    deterministic: bool = False
    grid_extensions: int = 3
    batch_size_cap: int | None = None
    smoke_steps: int = SMOKE_STEPS

    def smoke(self) -> Experiment:
        """A few steps of every contender, one seed, grids cut to their first two points and
        extended at most once, mini-batches of at most SMOKE_BATCH_CAP rows, evaluation on
        the first rows of the validation and test sets."""
        return replace(
            self,
            steps=self.smoke_steps,
            eval_every=self.smoke_steps,
            log_every=1,
            seeds=1,
            eval_subset=SMOKE_EVAL_ROWS,
            batch_size_cap=SMOKE_BATCH_CAP,
            grid_extensions=min(1, self.grid_extensions),
            contenders=tuple(
                replace(contender, grid={k: v[:2] for k, v in contender.grid.items()})
                for contender in self.contenders
            ),
        )


@dataclass(frozen=True)
class StageInputs:
    """What a stage reads: the finished runs of the experiments it names (by experiment) and
    the artifacts of the stages it names (by stage); ``smoke`` is set in a smoke run (a stage
    that trains runs a few steps then), ``device`` is the bench's ``--device``."""

    runs: Mapping[str, list[dict[str, Any]]]
    artifacts: Mapping[str, dict[str, Any]]
    smoke: bool = False
    device: str | None = None


@dataclass(frozen=True)
class Stage:
    """A step of a suite that makes an artifact from earlier runs and artifacts.

    Args:
        name: the artifact's name (``DIR/artifacts/<name>.json``, :class:`ArtifactRef`).
        build: ``build(inputs)`` → a JSON-ready dict.
        experiments: the experiments whose runs it reads (they run before it).
        artifacts: the stages whose artifacts it reads.
        title: what it makes, for the report.
        smoke: set by :meth:`Suite.smoke`; passed on in :class:`StageInputs`.
    """

    name: str
    build: Callable[[StageInputs], dict[str, Any]]
    experiments: tuple[str, ...] = ()
    artifacts: tuple[str, ...] = ()
    title: str = ""
    smoke: bool = False


@dataclass(frozen=True)
class CostCheck:
    """A `lrkit cost` measurement the suite makes (methods interleaved with their bases on
    one task) and the largest step-time ratio to the base each method may have; ``source``
    says where the target comes from; ``warmup`` steps are taken before the timing;
    ``batch_size_cap`` caps the task's mini-batch (smoke runs)."""

    task: str
    methods: tuple[str, ...]
    max_ratio: float
    steps: int = 100
    memory: bool = True
    source: str = ""
    repeats: int = 3
    warmup: int = 5
    batch_size_cap: int | None = None


@dataclass(frozen=True)
class Suite:
    """A benchmark suite.

    Args:
        name: the registry name.
        description: the report's introduction.
        plan: experiments and stages, in the order they run.
        seeds: seeds per configuration.
        scaled: how this scale differs from the paper's experiments.
        costs: cost checks made after the runs.
        scale: "cpu" (runs on this kind of machine) or "paper" (the paper's models, data and
            epochs).
        claims: claims that read several experiments (a trend across batch sizes, one
            setting against another).
        selection: the ``--tasks``/``--methods`` filters this suite was restricted with
            (:func:`lrkit.harness.plan.select`), recorded in results.json so that
            ``lrkit report`` rebuilds the same report.
    """

    name: str
    description: str
    plan: tuple[Experiment | Stage, ...]
    seeds: int = 3
    scaled: str = ""
    costs: tuple[CostCheck, ...] = ()
    scale: str = "cpu"
    claims: tuple[Claim, ...] = ()
    selection: dict[str, list[str]] | None = None

    def __post_init__(self) -> None:
        names = [item.name for item in self.plan]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"suite {self.name!r} names {duplicated} more than once")
        seen: set[str] = set()
        for item in self.plan:
            if isinstance(item, Stage):
                missing = [n for n in (*item.experiments, *item.artifacts) if n not in seen]
                if missing:
                    raise ValueError(
                        f"stage {item.name!r} of suite {self.name!r} reads {missing}, which do "
                        "not come before it in the plan"
                    )
            seen.add(item.name)

    @property
    def experiments(self) -> tuple[Experiment, ...]:
        return tuple(item for item in self.plan if isinstance(item, Experiment))

    @property
    def stages(self) -> tuple[Stage, ...]:
        return tuple(item for item in self.plan if isinstance(item, Stage))

    def smoke(self) -> Suite:
        """The CI version: every experiment, stage and contender for a few steps."""
        plan = tuple(
            item.smoke() if isinstance(item, Experiment) else replace(item, smoke=True)
            for item in self.plan
        )
        costs = tuple(
            replace(
                cost, steps=2, warmup=1, memory=False, repeats=1, batch_size_cap=SMOKE_BATCH_CAP
            )
            for cost in self.costs
        )
        return replace(self, plan=plan, seeds=1, costs=costs)
