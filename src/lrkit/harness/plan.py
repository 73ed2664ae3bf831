"""Operations on a suite's plan before it runs: how many runs it holds, the part of it that
``--tasks``/``--methods`` keep, and whether every method it names is installed."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from lrkit.errors import MissingExtraError
from lrkit.harness.experiments import ArtifactRef, Experiment, Stage, Suite
from lrkit.methods import get_method


def count_runs(suite: Suite, seeds: int) -> int:
    """Runs of the plan before any grid extension."""
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
                total += points + n
    return total


def select(
    suite: Suite, *, tasks: list[str] | None = None, methods: list[str] | None = None
) -> Suite:
    """The suite restricted to the given tasks and methods (by task name / method name or
    contender label). Stages stay when everything they read stays and a kept experiment or
    stage uses their artifact; claims across experiments stay when every experiment they read
    stays; cost checks stay for the kept tasks and methods. The filters are recorded in
    ``selection``."""
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
    plan = _without_unused_stages(plan)
    costs = tuple(
        replace(check, methods=tuple(m for m in check.methods if not methods or m in methods))
        for check in suite.costs
        if not tasks or check.task in tasks
    )
    costs = tuple(check for check in costs if check.methods)
    names = {item.name for item in plan}
    claims = tuple(
        claim
        for claim in suite.claims
        if claim.experiments and all(name in names for name in claim.experiments)
    )
    selection = {"tasks": list(tasks or []), "methods": list(methods or [])}
    return replace(suite, plan=tuple(plan), claims=claims, costs=costs, selection=selection)


def check_available(suite: Suite) -> None:
    """Raises before any run when a contender's method is not installed or reserved."""
    for experiment in suite.experiments:
        for contender in experiment.contenders:
            spec = get_method(contender.method)
            if not spec.available:
                raise MissingExtraError(
                    f"suite {suite.name!r} uses {contender.method!r}, which is not available "
                    f"(needs {spec.requires or 'an implementation'}); pip install "
                    f"'lrkit[{spec.extra}]' or leave it out with --methods"
                )


def _artifact_names(value: Any) -> set[str]:
    """The artifacts an :class:`ArtifactRef` in ``value`` (also inside dicts) names."""
    if isinstance(value, ArtifactRef):
        return {value.artifact}
    if isinstance(value, Mapping):
        return set().union(*(_artifact_names(item) for item in value.values()))
    return set()


def _without_unused_stages(plan: list[Experiment | Stage]) -> list[Experiment | Stage]:
    """``plan`` without the stages whose artifact no later kept item uses."""
    used: set[str] = set()
    kept: list[Experiment | Stage] = []
    for item in reversed(plan):
        if isinstance(item, Stage):
            if item.name not in used:
                continue
            used.update(item.artifacts)
        else:
            for contender in item.contenders:
                used.update(_artifact_names(contender.hparams))
        kept.append(item)
    return kept[::-1]


def selection_in_command(command: str) -> dict[str, list[str]] | None:
    """The --tasks/--methods filters of a bench command line (a results.json written before
    the filters were recorded on their own), or None."""
    words = shlex.split(command)
    found: dict[str, list[str]] = {"tasks": [], "methods": []}
    for index, word in enumerate(words):
        for key in found:
            flag = f"--{key}"
            value = None
            if word == flag and index + 1 < len(words):
                value = words[index + 1]
            elif word.startswith(flag + "="):
                value = word.split("=", 1)[1]
            if value is not None:
                found[key] = [item for item in value.split(",") if item]
    return found if found["tasks"] or found["methods"] else None
