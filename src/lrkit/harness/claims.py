"""Claim checks and their evaluation.

Each builder returns a named :class:`lrkit.harness.experiments.Claim` whose check reads
measured results and returns a :class:`Verdict`. Comparisons use the noise rule of
:mod:`lrkit.harness.statistics` (better / tie / worse / undecided); "at least as good" holds
on better or tie, "beats" only on better. A method that failed (diverged or stayed at chance)
on more seeds than its baseline is worse, whatever its other seeds did.
:func:`evaluate_claims` turns a suite's results into verdict records for results.json.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lrkit.harness.experiments import Claim
from lrkit.harness.results import ExperimentResult, mean_std
from lrkit.harness.statistics import (
    MIN_SEEDS,
    Comparison,
    compare,
    describe,
)


@dataclass(frozen=True)
class Verdict:
    """What a claim check found.

    Args:
        held: True, False, or None when the numbers cannot decide.
        measured: the numbers, in words.
        comparison: the comparison behind the verdict, when there is one.
        method, baseline: what was compared (for the summary figure).
        metric: the metric compared.
    """

    held: bool | None
    measured: str
    comparison: Comparison | None = None
    method: str | None = None
    baseline: str | None = None
    metric: str | None = None


def _record(verdict: Verdict, experiment: str, claim: Claim) -> dict[str, Any]:
    comparison = verdict.comparison
    return {
        "experiment": experiment,
        "name": claim.name,
        "claim": claim.text,
        "held": verdict.held,
        "outcome": None if comparison is None else comparison.outcome,
        "comparison": None if comparison is None else comparison.to_dict(),
        "method": verdict.method,
        "baseline": verdict.baseline,
        "metric": verdict.metric,
        "measured": verdict.measured,
    }


def evaluate_claims(
    results: Sequence[ExperimentResult], suite_claims: Sequence[Claim] = ()
) -> list[dict[str, Any]]:
    """One record per claim of every experiment and of the suite. A check that fails on the
    data is undecided, with the reason."""
    records = []

    def run(claim: Claim, argument: Any, experiment: str) -> None:
        try:
            verdict = claim.check(argument)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            verdict = Verdict(None, f"could not be checked: {type(exc).__name__}: {exc}")
        records.append(_record(verdict, experiment, claim))

    for result in results:
        for claim in result.experiment.claims:
            run(claim, result, result.experiment.name)
    by_name = {result.experiment.name: result for result in results}
    for claim in suite_claims:
        run(claim, by_name, "suite")
    return records


def evaluate_cost_claims(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For every cost row with a target: whether the method's median step-time ratio to its
    base (over the repeated measurements) stays within it."""
    claims = []
    for row in rows:
        ratio, target = row["ratio_to_base"], row.get("max_ratio")
        if target is None or ratio is None:
            continue
        spread = ""
        if row.get("ratio_min") is not None:
            spread = f" (min–max {row['ratio_min']:.3f}–{row['ratio_max']:.3f})"
        repeats = row.get("repeats", 1)
        claims.append(
            {
                "experiment": "cost",
                "name": f"cost_{row['method']}_{row['task']}",
                "claim": f"A step of {row['method']} costs at most {target:g}× a step of "
                f"{row['base']} on {row['task']}"
                + (f" ({row['source']})." if row.get("source") else "."),
                "held": ratio <= target,
                "outcome": None,
                "comparison": None,
                "method": row["method"],
                "baseline": row["base"],
                "metric": "ratio_to_base",
                "measured": f"median ratio {ratio:.3f}{spread} over {repeats} repeated "
                f"measurements of {row['steps']} interleaved steps",
            }
        )
    return claims


# ----------------------------------------------------------------------------- builders


def compare_labels(
    result: ExperimentResult, method: str, baseline: str, metric: str, log_scale: bool
) -> Comparison:
    """The noise-rule comparison of two contenders' selected runs on ``metric``, with the
    failure rule first."""
    failed_m, failed_b = result.failures(method), result.failures(baseline)
    runs_m, runs_b = len(result.selected_runs(method)), len(result.selected_runs(baseline))
    if runs_m == 0 or runs_b == 0:
        raise KeyError(f"no runs of {method if runs_m == 0 else baseline!r}")
    if failed_m > failed_b:
        return Comparison(
            "worse",
            None,
            None,
            None,
            runs_m - failed_m,
            runs_b - failed_b,
            "log10" if log_scale else "linear",
            f"{method} failed (diverged or stayed at chance) on {failed_m}/{runs_m} seeds, "
            f"{baseline} on {failed_b}/{runs_b}",
        )
    maximize = result.maximize if metric == result.primary_metric else maximized(metric)
    return compare(
        result.values(method, metric),
        result.values(baseline, metric),
        maximize=maximize,
        log_scale=log_scale,
        deterministic=result.experiment.deterministic,
    )


def maximized(metric: str) -> bool:
    """Whether a metric other than the task's primary one is better when larger."""
    return metric.endswith("accuracy")


def _comparison_claim(
    name: str,
    method: str,
    baseline: str,
    text: str,
    metric: str | None,
    log_scale: bool,
    holds_on: tuple[str, ...],
) -> Claim:
    def check(result: ExperimentResult) -> Verdict:
        used = metric or result.primary_metric
        comparison = compare_labels(result, method, baseline, used, log_scale)
        held = None if comparison.outcome == "undecided" else comparison.outcome in holds_on
        measured = (
            f"{method} {mean_std(result.row(method, used))} vs {baseline} "
            f"{mean_std(result.row(baseline, used))} ({used}); {describe(comparison)}"
        )
        return Verdict(held, measured, comparison, method, baseline, used)

    return Claim(name, text, check)


def at_least_as_good(
    name: str,
    method: str,
    baseline: str,
    text: str,
    metric: str | None = None,
    log_scale: bool = False,
) -> Claim:
    """Held when ``method`` is better than ``baseline`` or tied within noise."""
    return _comparison_claim(name, method, baseline, text, metric, log_scale, ("better", "tie"))


def beats(
    name: str,
    method: str,
    baseline: str,
    text: str,
    metric: str | None = None,
    log_scale: bool = False,
) -> Claim:
    """Held only when ``method`` is better than ``baseline`` beyond noise."""
    return _comparison_claim(name, method, baseline, text, metric, log_scale, ("better",))


def reaches_relative_loss(name: str, method: str, threshold: float, text: str) -> Claim:
    """Held when every seed (at least MIN_SEEDS, or one of a deterministic experiment) of
    ``method`` drove the training loss to ``threshold`` × its initial value (the experiment's
    ``loss_thresholds`` must contain it)."""

    def check(result: ExperimentResult) -> Verdict:
        runs = result.selected_runs(method)
        if not runs:
            raise KeyError(f"no runs of {method!r}")
        reached = sum(1 for r in runs if r["thresholds"].get(f"{threshold:g}") is not None)
        needed = 1 if result.experiment.deterministic else MIN_SEEDS
        final = mean_std(result.row(method))
        measured = (
            f"{reached}/{len(runs)} seeds reached {threshold:g} × the initial loss; final "
            f"{result.primary_metric}: {final}"
        )
        if reached < len(runs):
            return Verdict(False, measured, method=method, metric=result.primary_metric)
        if len(runs) < needed:
            return Verdict(None, measured + f" (fewer than {needed} seeds)", method=method)
        return Verdict(True, measured, method=method, metric=result.primary_metric)

    return Claim(name, text, check)


def _steps_to(runs: list[dict[str, Any]], threshold: float) -> list[float] | None:
    """Steps to the threshold of every run, or None when some run never got there."""
    hits = [r["thresholds"].get(f"{threshold:g}") for r in runs]
    if not runs or any(hit is None for hit in hits):
        return None
    return [float(hit["step"]) for hit in hits]


def fewer_steps_than_grid(
    name: str, method: str, baselines: tuple[str, ...], threshold: float, text: str
) -> Claim:
    """Held when ``method`` reaches ``threshold`` × the initial loss on every seed in fewer
    steps, beyond noise, than the fastest grid point of each baseline that got there on every
    seed. Undecided when neither side ever got there; worse when only the baselines did."""

    def check(result: ExperimentResult) -> Verdict:
        ours = _steps_to(result.selected_runs(method), threshold)
        parts = [
            f"{method}: "
            + ("never (not every seed)" if ours is None else f"{statistics.fmean(ours):.0f} steps")
        ]
        fastest: list[float] | None = None
        fastest_label = ""
        for baseline in baselines:
            by_point: dict[str, list[dict[str, Any]]] = {}
            for run in result.runs:
                if run["label"] == baseline:
                    by_point.setdefault(repr(sorted(run["config"]["hparams"].items())), []).append(
                        run
                    )
            for point, runs in by_point.items():
                steps = _steps_to(runs, threshold)
                if steps is not None and (
                    fastest is None or statistics.fmean(steps) < statistics.fmean(fastest)
                ):
                    fastest, fastest_label = steps, f"{baseline} {point}"
        parts.append(
            "fastest grid point: "
            + (
                "none got there on every seed"
                if fastest is None
                else f"{fastest_label}, {statistics.fmean(fastest):.0f} steps"
            )
        )
        measured = f"to {threshold:g} × initial — " + "; ".join(parts)
        if ours is None and fastest is None:
            return Verdict(None, measured + " (neither side got there)", method=method)
        if ours is None:
            return Verdict(False, measured, method=method)
        if fastest is None:
            return Verdict(True, measured, method=method)
        comparison = compare(
            ours, fastest, maximize=False, deterministic=result.experiment.deterministic
        )
        held = None if comparison.outcome == "undecided" else comparison.outcome == "better"
        return Verdict(held, f"{measured}; {describe(comparison)}", comparison, method)

    return Claim(name, text, check)
