"""The noise rule every verdict uses: better, tie within noise, worse, or undecided.

Two samples — a method's values over seeds and a baseline's — are compared by the 95 %
Welch interval of the difference of their means (equivalently, Welch's two-sided t-test at
5 %): the interval above zero is *better*, below zero *worse*, containing zero a *tie*.
Fewer than ``MIN_SEEDS`` values on either side is *undecided*. Quantities that span orders
of magnitude (final losses of the regression or the recurrent task) are compared as log10
values, so the effect is a ratio in decades and no single seed dominates a mean. The effect
is oriented so that a positive value favours the method.

A deterministic experiment (a fixed start and no data sampling, e.g. the Beale function)
has no noise: one run per configuration is exact, the effect is the difference itself, and
values equal to ``DETERMINISTIC_RTOL`` (relative) are a tie.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

MIN_SEEDS = 5
CONFIDENCE = 0.95
DETERMINISTIC_RTOL = 1e-6
Outcome = Literal["better", "tie", "worse", "undecided"]


@dataclass(frozen=True)
class Comparison:
    """The outcome of comparing a method's sample with a baseline's.

    Args:
        outcome: "better", "tie", "worse" or "undecided".
        effect: difference of means (log10 ratio when ``scale`` is "log10"), positive when
            the method is better; None when undecided for lack of values.
        low, high: the 95 % interval of the effect (equal to it when deterministic).
        n_method, n_baseline: the values compared on each side.
        scale: "linear" or "log10".
        reason: why the outcome is what it is, in words.
    """

    outcome: Outcome
    effect: float | None
    low: float | None
    high: float | None
    n_method: int
    n_baseline: int
    scale: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def t_quantile(probability: float, df: float) -> float:
    """The Student-t quantile (scipy)."""
    try:
        from scipy.stats import t
    except ImportError as missing:
        raise ImportError(
            "verdicts use scipy's t distribution: pip install 'lrkit[scipy]'"
        ) from missing
    return float(t.ppf(probability, df))


def welch_interval(
    method: Sequence[float], baseline: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """(mean difference method − baseline, low, high) of the Welch interval."""
    difference = statistics.fmean(method) - statistics.fmean(baseline)
    var_m = statistics.variance(method) / len(method)
    var_b = statistics.variance(baseline) / len(baseline)
    standard_error = math.sqrt(var_m + var_b)
    if standard_error == 0.0:
        return difference, difference, difference
    df = (var_m + var_b) ** 2 / (var_m**2 / (len(method) - 1) + var_b**2 / (len(baseline) - 1))
    half_width = t_quantile(0.5 + confidence / 2, df) * standard_error
    return difference, difference - half_width, difference + half_width


def _transform(values: Sequence[float], log_scale: bool) -> list[float] | None:
    if not log_scale:
        return [float(v) for v in values]
    if any(v <= 0 for v in values):
        return None
    return [math.log10(v) for v in values]


def compare(
    method: Sequence[float],
    baseline: Sequence[float],
    *,
    maximize: bool,
    log_scale: bool = False,
    deterministic: bool = False,
    min_seeds: int = MIN_SEEDS,
) -> Comparison:
    """Compares a method's values with a baseline's by the noise rule (module docstring)."""
    scale = "log10" if log_scale else "linear"
    n_m, n_b = len(method), len(baseline)
    needed = 1 if deterministic else max(2, min_seeds)
    if n_m < needed or n_b < needed:
        return Comparison(
            "undecided",
            None,
            None,
            None,
            n_m,
            n_b,
            scale,
            f"{n_m} and {n_b} values; the rule needs at least {needed} on each side",
        )
    m, b = _transform(method, log_scale), _transform(baseline, log_scale)
    if m is None or b is None:
        return Comparison(
            "undecided", None, None, None, n_m, n_b, scale, "a value ≤ 0 on a log scale"
        )
    sign = 1.0 if maximize else -1.0
    if deterministic:
        effect = sign * (statistics.fmean(m) - statistics.fmean(b))
        raw_m, raw_b = statistics.fmean(method), statistics.fmean(baseline)
        tolerance = DETERMINISTIC_RTOL * max(abs(raw_m), abs(raw_b))
        if abs(raw_m - raw_b) <= tolerance:
            outcome: Outcome = "tie"
        else:
            outcome = "better" if effect > 0 else "worse"
        return Comparison(
            outcome, effect, effect, effect, n_m, n_b, scale, "deterministic: exact values"
        )
    difference, low, high = welch_interval(m, b)
    effect, low, high = sign * difference, *sorted((sign * low, sign * high))
    if low > 0:
        outcome = "better"
    elif high < 0:
        outcome = "worse"
    else:
        outcome = "tie"
    return Comparison(
        outcome,
        effect,
        low,
        high,
        n_m,
        n_b,
        scale,
        f"Welch {CONFIDENCE:.0%} interval of the {'log10 ' if log_scale else ''}difference",
    )


def describe(comparison: Comparison) -> str:
    """``better: +0.012 [+0.004, +0.020] (n = 5 vs 5)`` — the effect with its interval."""
    n = f"n = {comparison.n_method} vs {comparison.n_baseline}"
    if comparison.effect is None:
        return f"{comparison.outcome} ({comparison.reason}; {n})"
    unit = " decades" if comparison.scale == "log10" else ""
    if comparison.low == comparison.high:
        return f"{comparison.outcome}: {comparison.effect:+.4g}{unit} (exact; {n})"
    return (
        f"{comparison.outcome}: {comparison.effect:+.4g}{unit} "
        f"[{comparison.low:+.4g}, {comparison.high:+.4g}] ({n})"
    )
