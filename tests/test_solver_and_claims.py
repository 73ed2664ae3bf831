"""Levenberg–Marquardt (the second-order reference of L4's Table 2) and the claim checks
that turn a suite's measured summary into held / did not hold."""

from __future__ import annotations

import pytest

from lrkit.harness.claims import (
    evaluate_cost_claims,
    fewer_steps_than_grid,
    matches_or_beats,
    reaches_relative_loss,
)
from lrkit.harness.experiments import Contender, Experiment
from lrkit.harness.results import ExperimentResult, RunConfig
from lrkit.harness.training import train

pytest.importorskip("scipy")


def test_levenberg_marquardt_solves_the_regression_to_machine_precision():
    record = train(
        RunConfig(
            "recht_regression",
            "levenberg_marquardt",
            seed=1,
            steps=60,
            loss_thresholds=(1e-6, 1e-10),
        )
    )
    initial = record["evals"][0]["train_loss"]
    assert record["final"]["train_loss"] <= 1e-12 * initial
    assert record["thresholds"]["1e-06"]["step"] <= record["thresholds"]["1e-10"]["step"]
    assert record["curve"]["train_loss"][0] == pytest.approx(initial)


def test_levenberg_marquardt_rejects_a_mean_reduced_task():
    with pytest.raises(ValueError, match="sum-of-squares"):
        train(RunConfig("digits_mlp", "levenberg_marquardt", steps=2))


def _result(rows: list[dict], maximize: bool = True) -> ExperimentResult:
    experiment = Experiment(name="e", title="e", task="digits_mlp", contenders=(Contender("adam"),))
    return ExperimentResult(experiment, "test_accuracy", maximize, runs=[], rows=rows)


def _row(method: str, metric: str, mean, std=0.0, n=3, runs=3, diverged=0) -> dict:
    return {
        "method": method,
        "metric": metric,
        "mean": mean,
        "std": std,
        "n": n,
        "runs": runs,
        "diverged": diverged,
    }


def test_matches_or_beats_uses_the_baseline_spread():
    claim = matches_or_beats("c", "ours", "base", "ours ≥ base")
    close = _result(
        [_row("ours", "test_accuracy", 0.90), _row("base", "test_accuracy", 0.91, 0.02)]
    )
    far = _result([_row("ours", "test_accuracy", 0.80), _row("base", "test_accuracy", 0.91, 0.02)])
    assert claim.check(close)[0] is True
    assert claim.check(far)[0] is False
    lower_is_better = _result(
        [_row("ours", "test_accuracy", 0.5), _row("base", "test_accuracy", 0.3, 0.1)],
        maximize=False,
    )
    assert claim.check(lower_is_better)[0] is False
    assert claim.check(_result([]))[0] is None
    ours_diverged = _result(
        [
            _row("ours", "test_accuracy", None, n=0, diverged=3),
            _row("base", "test_accuracy", 0.9, 0.01),
        ]
    )
    assert claim.check(ours_diverged)[0] is False
    some_diverged = _result(
        [
            _row("ours", "test_accuracy", 0.95, n=2, diverged=1),
            _row("base", "test_accuracy", 0.9, 0.01),
        ]
    )
    assert claim.check(some_diverged)[0] is False


def test_reaches_relative_loss_needs_every_seed():
    claim = reaches_relative_loss("c", "ours", 1e-10, "reaches")
    every = _result([_row("ours", "steps_to_1e-10", 100.0)])
    some = _result([_row("ours", "steps_to_1e-10", 100.0, n=2)])
    assert claim.check(every)[0] is True
    assert claim.check(some)[0] is False


def test_fewer_steps_than_grid_compares_with_the_fastest_complete_point():
    claim = fewer_steps_than_grid("c", "ours", ("gd",), 1e-6, "faster")
    rows = [
        _row("ours", "steps_to_1e-06", 50.0),
        _row("gd [lr=0.1]", "steps_to_1e-06", 40.0, n=2),  # not every seed: counts as never
        _row("gd [lr=0.01]", "steps_to_1e-06", 60.0),
    ]
    assert claim.check(_result(rows))[0] is True
    rows[2] = _row("gd [lr=0.01]", "steps_to_1e-06", 45.0)
    assert claim.check(_result(rows))[0] is False


def test_cost_claims_check_the_target_ratio():
    rows = [
        {
            "task": "t",
            "method": "fast",
            "base": "b",
            "ms_per_step": 1.0,
            "ratio_to_base": 1.05,
            "max_ratio": 1.1,
            "peak_memory_mb": 1.0,
            "steps": 10,
        },
        {
            "task": "t",
            "method": "slow",
            "base": "b",
            "ms_per_step": 2.0,
            "ratio_to_base": 1.5,
            "max_ratio": 1.1,
            "peak_memory_mb": None,
            "steps": 10,
        },
        {
            "task": "t",
            "method": "b",
            "base": None,
            "ms_per_step": 1.0,
            "ratio_to_base": None,
            "max_ratio": None,
            "peak_memory_mb": 1.0,
            "steps": 10,
        },
    ]
    claims = evaluate_cost_claims(rows)
    assert [c["held"] for c in claims] == [True, False]
    assert [c["name"] for c in claims] == ["cost_fast_t", "cost_slow_t"]
