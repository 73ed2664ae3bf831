"""Claim checks and their evaluation: each builder returns a named
:class:`lrkit.harness.experiments.Claim` whose check reads the measured results of one
experiment; :func:`evaluate_claims` turns a suite's results into verdict records."""

from __future__ import annotations

from typing import Any

from lrkit.harness.experiments import Claim
from lrkit.harness.results import ExperimentResult, mean_std


def evaluate_claims(results: list[ExperimentResult]) -> list[dict[str, Any]]:
    """One record per claim of every experiment: name, text, held (True, False or None for
    undecided) and the measured numbers. A check that fails on the data is undecided, with
    the reason."""
    records = []
    for result in results:
        for claim in result.experiment.claims:
            try:
                held, measured = claim.check(result)
            except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
                held, measured = None, f"could not be checked: {type(exc).__name__}: {exc}"
            records.append(
                {
                    "experiment": result.experiment.name,
                    "name": claim.name,
                    "claim": claim.text,
                    "held": held,
                    "measured": measured,
                }
            )
    return records


def evaluate_cost_claims(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For every cost row with a target: whether the method's step-time ratio to its base
    stays within it."""
    claims = []
    for row in rows:
        ratio, target = row["ratio_to_base"], row.get("max_ratio")
        if target is None or ratio is None:
            continue
        claims.append(
            {
                "experiment": "cost",
                "name": f"cost_{row['method']}_{row['task']}",
                "claim": f"{row['method']} costs at most {target:g}× a {row['base']} step on "
                f"{row['task']}" + (f" ({row['source']})." if row.get("source") else "."),
                "held": ratio <= target,
                "measured": f"ratio {ratio:.3f} over {row['steps']} interleaved steps",
            }
        )
    return claims


def _describe(result: ExperimentResult, label: str, metric: str) -> str:
    return f"{label} {mean_std(result.row(label, metric))}"


def matches_or_beats(
    name: str, method: str, baseline: str, text: str, metric: str | None = None
) -> Claim:
    """Held when ``method``'s mean is at least as good as ``baseline``'s mean minus one
    standard deviation of the baseline (it beats it or ties within its seed noise) and
    ``method`` diverged on no more seeds than the baseline. Undecided when either has no runs
    or the baseline diverged on every seed."""

    def check(result: ExperimentResult) -> tuple[bool | None, str]:
        name = metric or result.primary_metric
        ours, theirs = result.row(method, name), result.row(baseline, name)
        if ours is None or theirs is None or theirs["mean"] is None:
            return None, "missing runs, or the baseline diverged on every seed"
        if ours["diverged"] > theirs["diverged"]:
            return False, (
                f"{method} diverged on {ours['diverged']}/{ours['runs']} seeds, {baseline} on "
                f"{theirs['diverged']}/{theirs['runs']}; {_describe(result, method, name)} vs "
                f"{_describe(result, baseline, name)} ({name})"
            )
        slack = theirs["std"] or 0.0
        bar = theirs["mean"] - slack if result.maximize else theirs["mean"] + slack
        held = ours["mean"] >= bar if result.maximize else ours["mean"] <= bar
        diff = ours["mean"] - theirs["mean"]
        return held, (
            f"{_describe(result, method, name)} vs {_describe(result, baseline, name)} "
            f"(difference {diff:+.4g}; {name})"
        )

    return Claim(name, text, check)


def reaches_relative_loss(name: str, method: str, threshold: float, text: str) -> Claim:
    """Held when every seed of ``method`` drove the training loss to ``threshold`` × its
    initial value (needs the experiment's ``loss_thresholds`` to contain it)."""

    def check(result: ExperimentResult) -> tuple[bool | None, str]:
        row = result.row(method, f"steps_to_{threshold:g}")
        if row is None:
            return None, f"no runs of {method}"
        held = row["n"] == row["runs"] and row["runs"] > 0
        final = _describe(result, method, result.primary_metric)
        return held, (
            f"{row['n']}/{row['runs']} seeds reached {threshold:g}×initial; final "
            f"{result.primary_metric}: {final}"
        )

    return Claim(name, text, check)


def _steps_text(steps: float) -> str:
    return "never (not every seed)" if steps == float("inf") else f"{steps:.0f} steps"


def fewer_steps_than_grid(
    name: str, method: str, baselines: tuple[str, ...], threshold: float, text: str
) -> Claim:
    """Held when every seed of ``method`` reached ``threshold`` × the initial loss, in
    fewer steps on average than the fastest grid point of each baseline (a grid point whose
    seeds did not all get there counts as never)."""

    def check(result: ExperimentResult) -> tuple[bool | None, str]:
        metric = f"steps_to_{threshold:g}"
        ours = result.row(method, metric)
        if ours is None or ours["runs"] == 0:
            return None, f"no runs of {method}"
        ours_steps = ours["mean"] if ours["n"] == ours["runs"] else float("inf")
        parts, held = [f"{method}: {_steps_text(ours_steps)}"], ours_steps < float("inf")
        for baseline in baselines:
            rows = [
                r
                for r in result.rows
                if r["metric"] == metric and r["method"].startswith(f"{baseline} [")
            ]
            complete = [r["mean"] for r in rows if r["n"] == r["runs"] and r["runs"]]
            best = min(complete) if complete else float("inf")
            parts.append(f"fastest {baseline}: {_steps_text(best)}")
            held = held and ours_steps < best
        return held, f"to {threshold:g}×initial — " + ", ".join(parts)

    return Claim(name, text, check)
