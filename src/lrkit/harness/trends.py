"""Claims that read several experiments of a suite: a trend of a method's advantage along a
setting (batch size, problem size), and one setting against another (a higher dropout
rate). Each check gets a mapping experiment name → result and returns a
:class:`lrkit.harness.claims.Verdict`."""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

from lrkit.harness.claims import Verdict, maximized
from lrkit.harness.experiments import Claim
from lrkit.harness.results import ExperimentResult, mean_std
from lrkit.harness.statistics import MIN_SEEDS, Comparison, compare, describe, t_quantile


def _effect_and_variance(
    result: ExperimentResult, method: str, baseline: str, metric: str, log_scale: bool
) -> tuple[float, float, int] | None:
    """The method's effect over the baseline (positive: better), its variance and the
    smaller sample size; None when either side has fewer than two values."""
    m = result.values(method, metric)
    b = result.values(baseline, metric)
    if log_scale:
        m, b = [math.log10(v) for v in m if v > 0], [math.log10(v) for v in b if v > 0]
    if len(m) < 2 or len(b) < 2:
        return None
    sign = (
        1.0 if (result.maximize if metric == result.primary_metric else maximized(metric)) else -1.0
    )
    effect = sign * (statistics.fmean(m) - statistics.fmean(b))
    variance = statistics.variance(m) / len(m) + statistics.variance(b) / len(b)
    return effect, variance, min(len(m), len(b))


def advantage_grows_along(
    name: str,
    text: str,
    method: str,
    baseline: str,
    experiments: Sequence[tuple[str, float]],
    metric: str | None = None,
    log_scale: bool = False,
    towards: str = "smaller",
) -> Claim:
    """A trend across experiments ordered by x (batch sizes, problem sizes): held when the
    method's effect over its baseline is larger, beyond noise, at the end ``towards`` points
    to ("smaller" or "larger" x) than at the other end (difference of the two effects, 95 %
    interval with the smaller sample's degrees of freedom). A method that fails (diverges or
    stays at chance) on more seeds than its baseline at one end only has its worst effect
    there, as in a single comparison: failing at the ``towards`` end is "worse", at the
    other end "better". The effects at every x are reported."""
    if towards not in ("smaller", "larger"):
        raise ValueError(f"towards must be 'smaller' or 'larger', got {towards!r}")

    def check(results: Mapping[str, ExperimentResult]) -> Verdict:
        ordered = sorted(experiments, key=lambda item: item[1], reverse=towards == "larger")
        effects, fails_more = [], []
        for experiment, x in ordered:
            result = results[experiment]
            used = metric or result.primary_metric
            found = _effect_and_variance(result, method, baseline, used, log_scale)
            effects.append((x, found))
            fails_more.append(result.failures(method) > result.failures(baseline))
        text_effects = ", ".join(
            f"{x:g}: " + ("fails more" if failing else "—" if found is None else f"{found[0]:+.4g}")
            for (x, found), failing in zip(effects, fails_more, strict=True)
        )
        measured = f"effect of {method} over {baseline} by x: {text_effects}"
        if fails_more[0] != fails_more[-1]:
            # the failure rule of a single comparison, applied at both ends: failing on more
            # seeds than the baseline at one end only is the worst effect there
            grew = fails_more[-1]
            failing = results[ordered[-1 if grew else 0][0]]
            comparison = Comparison(
                "better" if grew else "worse",
                None,
                None,
                None,
                len(failing.selected_runs(method)) - failing.failures(method),
                len(failing.selected_runs(baseline)) - failing.failures(baseline),
                "log10" if log_scale else "linear",
                f"{method} fails on more seeds than {baseline} at the "
                + (f"other end of x only, not at the {towards}" if grew else f"{towards} end only"),
            )
            return Verdict(grew, f"{measured}; {comparison.reason}", comparison, method, baseline)
        first, last = effects[0][1], effects[-1][1]
        if first is None or last is None or min(first[2], last[2]) < MIN_SEEDS:
            return Verdict(None, measured + f" (fewer than {MIN_SEEDS} seeds at an end)")
        difference = first[0] - last[0]
        half = t_quantile(0.975, min(first[2], last[2]) - 1) * math.sqrt(first[1] + last[1])
        low, high = difference - half, difference + half
        outcome = "better" if low > 0 else "worse" if high < 0 else "tie"
        comparison = Comparison(
            outcome,
            difference,
            low,
            high,
            first[2],
            last[2],
            "log10" if log_scale else "linear",
            f"difference of the effects at the {towards} and the other end of x",
        )
        return Verdict(
            None if outcome == "undecided" else outcome == "better",
            f"{measured}; {towards} minus other end: {describe(comparison)}",
            comparison,
            method,
            baseline,
            metric,
        )

    return Claim(name, text, check, experiments=tuple(experiment for experiment, _ in experiments))


def setting_helps(
    name: str,
    text: str,
    method: str,
    helped: str,
    reference: str,
    metric: str | None = None,
    log_scale: bool = False,
) -> Claim:
    """Held when ``method`` does better, beyond noise, in experiment ``helped`` than in
    experiment ``reference`` (e.g. a higher dropout rate)."""

    def check(results: Mapping[str, ExperimentResult]) -> Verdict:
        a, b = results[helped], results[reference]
        used = metric or a.primary_metric
        comparison = compare(
            a.values(method, used),
            b.values(method, used),
            maximize=a.maximize if used == a.primary_metric else maximized(used),
            log_scale=log_scale,
        )
        measured = (
            f"{method} in {helped}: {mean_std(a.row(method, used))}, in {reference}: "
            f"{mean_std(b.row(method, used))} ({used}); {describe(comparison)}"
        )
        held = None if comparison.outcome == "undecided" else comparison.outcome == "better"
        return Verdict(held, measured, comparison, method, None, used)

    return Claim(name, text, check, experiments=(helped, reference))
