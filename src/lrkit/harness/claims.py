"""Reusable claim checks for suites: each returns a :class:`lrkit.harness.suites.Claim`
whose check reads the measured summary of one experiment."""

from __future__ import annotations

from lrkit.harness.bench import ExperimentResult
from lrkit.harness.suites import Claim


def _describe(result: ExperimentResult, label: str, metric: str) -> str:
    from lrkit.harness.report import mean_std

    return f"{label} {mean_std(result.row(label, metric))}"


def matches_or_beats(method: str, baseline: str, text: str, metric: str | None = None) -> Claim:
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

    return Claim(text, check)


def reaches_relative_loss(method: str, threshold: float, text: str) -> Claim:
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

    return Claim(text, check)


def _steps_text(steps: float) -> str:
    return "never (not every seed)" if steps == float("inf") else f"{steps:.0f} steps"


def fewer_steps_than_grid(
    method: str, baselines: tuple[str, ...], threshold: float, text: str
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

    return Claim(text, check)
