"""Benchmark suites: which tasks, methods, grids, seeds and claims a `lrkit bench` runs.

A suite is a list of experiments; an experiment trains every entry on one task. An entry
with a ``grid`` is tuned by the DeepOBS protocol: every grid point is run with seed 0, the
best by the task's primary metric (a diverged run is worst) is rerun with the remaining
seeds. Claims are checked on the measured summary and reported as held / not held.
Adding a suite is one :func:`register_suite` call (see :mod:`lrkit.harness.suite_defs`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

SMOKE_STEPS = 12
SMOKE_EVAL_ROWS = 256


@dataclass(frozen=True)
class Entry:
    """One method in an experiment. ``hparams`` are fixed; ``grid`` maps a hyperparameter
    to the values tuned over; ``report_grid`` keeps every grid point as its own row."""

    method: str
    hparams: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, tuple[Any, ...]] = field(default_factory=dict)
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
    """A paper's claim and how to check it on an experiment's summary: ``check`` gets the
    :class:`lrkit.harness.bench.ExperimentResult` and returns (held, measured text);
    ``held`` is None when the numbers cannot decide (e.g. every run diverged)."""

    text: str
    check: Callable[[Any], tuple[bool | None, str]]


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    task: str
    entries: tuple[Entry, ...]
    task_options: dict[str, Any] = field(default_factory=dict)
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


@dataclass(frozen=True)
class CostCheck:
    """A `lrkit cost` measurement the suite makes (methods interleaved with their bases on
    one task) and the largest step-time ratio to the base each method may have."""

    task: str
    methods: tuple[str, ...]
    max_ratio: float
    steps: int = 100
    memory: bool = True


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    experiments: tuple[Experiment, ...]
    seeds: int = 3
    scaled: str = ""
    costs: tuple[CostCheck, ...] = ()

    def smoke(self) -> Suite:
        """The CI version: every experiment and entry, a few steps, one seed, grids cut to
        their first two points, evaluation on the first rows of the test set."""
        experiments = tuple(
            replace(
                experiment,
                steps=SMOKE_STEPS,
                eval_every=SMOKE_STEPS,
                log_every=1,
                seeds=1,
                eval_subset=SMOKE_EVAL_ROWS,
                entries=tuple(
                    replace(entry, grid={k: v[:2] for k, v in entry.grid.items()})
                    for entry in experiment.entries
                ),
            )
            for experiment in self.experiments
        )
        costs = tuple(replace(cost, steps=3, memory=False) for cost in self.costs)
        return replace(self, experiments=experiments, seeds=1, costs=costs)


SUITES: dict[str, Callable[[], Suite]] = {}
SUITE_SUMMARIES: dict[str, str] = {}


def register_suite(name: str, summary: str) -> Callable[[Callable[[], Suite]], Callable[[], Suite]]:
    def decorate(factory: Callable[[], Suite]) -> Callable[[], Suite]:
        if name in SUITES:
            raise ValueError(f"suite {name!r} is registered twice")
        SUITES[name] = factory
        SUITE_SUMMARIES[name] = summary
        return factory

    return decorate


def get_suite(name: str) -> Suite:
    from lrkit.harness import suite_defs  # noqa: F401  (registers the suites)

    if name not in SUITES:
        raise KeyError(f"unknown suite {name!r}; known suites: {', '.join(sorted(SUITES))}")
    return SUITES[name]()
