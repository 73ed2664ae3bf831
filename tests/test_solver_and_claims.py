"""Levenberg–Marquardt (the second-order reference of L4's Table 2) and the cost claims."""

from __future__ import annotations

import pytest

from lrkit.harness.claims import evaluate_cost_claims
from lrkit.harness.results import RunConfig
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
