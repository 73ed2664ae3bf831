"""How a contender is tuned: which runs to make, in which order, and which grid point wins.

A contender without a grid runs its hyperparameters with the reported seeds 0…N−1. A
contender with a grid is tuned on its own seed (``TUNING_SEED``, never a reported seed):
every grid point runs once, the best by the task's *selection metric* (validation accuracy
or loss; the training loss for tasks whose objective it is) wins, a failed run (diverged or
at chance) ranks last. While the best point sits on an edge of a one-hyperparameter
log-spaced grid, the grid is extended by one more step in that direction, at most the
experiment's ``grid_extensions`` times per side; a best point still on an edge is flagged.
The winner then runs with the reported seeds. A ``report_grid`` contender (a table of
every grid point, as L4's Table 2) runs every point with every reported seed and marks the
best as selected.

:func:`contender_plan` is a generator: it yields lists of :class:`RunRequest`, receives
their records in the same order, and returns the :class:`TuningRecord`; the bench runner
drives many such plans at once so that independent runs can go to parallel workers.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from typing import Any

from lrkit.harness.experiments import Contender, Experiment
from lrkit.harness.results import grid_points, run_failure

TUNING_SEED = 1000


@dataclass(frozen=True)
class RunRequest:
    """One run the plan needs: a contender's hyperparameters with a seed, and its role
    ("tuning": a tuning run, never reported; "grid": a reported grid point; "selected": a
    reported run of the winning configuration)."""

    experiment: Experiment
    contender: Contender
    hparams: dict[str, Any]
    seed: int
    role: str


@dataclass
class TuningRecord:
    """What tuning did for one contender (results.json ``tuning``)."""

    experiment: str
    contender: str
    hyperparameter: str | None
    values: list[Any] = field(default_factory=list)
    scores: list[float | None] = field(default_factory=list)
    selected: Any = None
    at_edge: bool = False
    extended: int = 0
    selection_metric: str = ""
    seed: int | str = TUNING_SEED

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score(record: dict[str, Any], metric: str, maximize: bool) -> float:
    """Higher is better; a failed run or a missing value is −inf."""
    value = record["final"].get(metric)
    if run_failure(record) is not None or value is None or not math.isfinite(value):
        return -math.inf
    return value if maximize else -value


def _extendable(contender: Contender) -> str | None:
    """The grid's one hyperparameter when its values are positive numbers (log-spaced
    extension applies), else None."""
    if len(contender.grid) != 1:
        return None
    ((name, values),) = contender.grid.items()
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if len(values) < 2 or not numeric or min(values) <= 0:
        return None
    return name


def contender_plan(
    experiment: Experiment,
    contender: Contender,
    seeds: int,
    selection_metric: str,
    maximize: bool,
) -> Generator[list[RunRequest], list[dict[str, Any]], TuningRecord | None]:
    """The runs of one contender, in rounds (module docstring)."""
    points = grid_points(contender)
    if not contender.grid:
        yield [RunRequest(experiment, contender, points[0], s, "selected") for s in range(seeds)]
        return None
    name = _extendable(contender)
    tuning_seeds = list(range(seeds)) if contender.report_grid else [TUNING_SEED]
    role = "grid" if contender.report_grid else "tuning"

    def requests(point: dict[str, Any]) -> list[RunRequest]:
        return [RunRequest(experiment, contender, point, s, role) for s in tuning_seeds]

    by_point: dict[int, list[dict[str, Any]]] = {}
    batch = [request for point in points for request in requests(point)]
    records = yield batch
    for index in range(len(points)):
        by_point[index] = records[index * len(tuning_seeds) : (index + 1) * len(tuning_seeds)]

    def mean_score(index: int) -> float:
        return statistics.fmean(score(r, selection_metric, maximize) for r in by_point[index])

    def ordered() -> list[int]:
        return sorted(by_point, key=lambda i: points[i][name]) if name else list(by_point)

    extended = 0
    while name is not None:
        order = ordered()
        best = max(order, key=mean_score)
        if mean_score(best) == -math.inf or best not in (order[0], order[-1]):
            break
        values = [points[i][name] for i in order]
        original = contender.grid[name]
        if best == order[0]:
            if sum(1 for v in values if v < min(original)) >= experiment.grid_extensions:
                break
            new_value = values[0] ** 2 / values[1]
        else:
            if sum(1 for v in values if v > max(original)) >= experiment.grid_extensions:
                break
            new_value = values[-1] ** 2 / values[-2]
        new_point = {**points[best], name: _round(new_value)}
        points.append(new_point)
        by_point[len(points) - 1] = yield requests(new_point)
        extended += 1
    order = ordered()
    best = max(order, key=mean_score)
    tuning = TuningRecord(
        experiment=experiment.name,
        contender=contender.name,
        hyperparameter=name or ",".join(contender.grid),
        values=[points[i][name] if name else _grid_values(contender, points[i]) for i in order],
        scores=[None if mean_score(i) == -math.inf else mean_score(i) for i in order],
        selected=points[best][name] if name else _grid_values(contender, points[best]),
        at_edge=name is not None and len(order) > 1 and best in (order[0], order[-1]),
        extended=extended,
        selection_metric=selection_metric,
        seed="reported seeds" if contender.report_grid else TUNING_SEED,
    )
    if contender.report_grid:
        for record in by_point[best]:
            record["role"] = "selected"
        return tuning
    yield [RunRequest(experiment, contender, points[best], s, "selected") for s in range(seeds)]
    return tuning


def _grid_values(contender: Contender, point: dict[str, Any]) -> dict[str, Any]:
    return {key: point[key] for key in contender.grid}


def _round(value: float) -> float:
    """A new grid value with 6 significant digits (1e-5 instead of 1.0000000000000002e-05)."""
    return float(f"{value:.6g}")
