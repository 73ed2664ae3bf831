"""The training loop, bench runner (tuning, resume, report), cost benchmark and CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lrkit.cli import main
from lrkit.harness import executors as executors_module
from lrkit.harness.bench import run_suite
from lrkit.harness.claims import at_least_as_good
from lrkit.harness.cost import measure_cost
from lrkit.harness.experiments import Contender, Experiment, Suite
from lrkit.harness.plan import count_runs, select
from lrkit.harness.report import write_report
from lrkit.harness.results import RunConfig, threshold_crossings
from lrkit.harness.training import train
from lrkit.suites import SUITES, get_suite


def test_train_record_has_curves_evals_and_final_metrics():
    record = train(RunConfig("digits_mlp", "momentum", hparams={"lr": 0.05}, steps=30))
    assert not record["diverged"]
    assert record["steps_done"] == 30
    assert record["evals"][0]["step"] == 0 and record["evals"][-1]["step"] == 30
    assert record["final"]["test_accuracy"] > record["evals"][0]["test_accuracy"]
    assert len(record["curve"]["train_loss"]) == len(record["curve"]["step"])
    assert record["curve"]["lr"][-1] == pytest.approx(0.05)


def test_train_is_deterministic_per_seed():
    first = train(RunConfig("digits_mlp", "adam", seed=3, steps=15))
    second = train(RunConfig("digits_mlp", "adam", seed=3, steps=15))
    other = train(RunConfig("digits_mlp", "adam", seed=4, steps=15))
    assert first["curve"]["train_loss"] == second["curve"]["train_loss"]
    assert first["curve"]["train_loss"] != other["curve"]["train_loss"]


def test_diverged_run_is_recorded_not_dropped():
    record = train(RunConfig("digits_mlp", "sgd", hparams={"lr": 1e4}, steps=40))
    assert record["diverged"]
    assert record["error"]
    assert record["steps_done"] < 40
    assert record["evals"][-1]["step"] == record["steps_done"]


def _raising_method(monkeypatch, error: Exception) -> str:
    """Registers (for this test only) momentum SGD whose 6th step raises ``error``."""
    import dataclasses

    from lrkit.methods import registry

    calls = {"n": 0}

    def factory(params, **hparams):
        optimizer = registry.get_method("momentum").make_optimizer(params, **hparams)
        original = optimizer.step

        def step(closure=None):
            calls["n"] += 1
            if calls["n"] == 6:
                raise error
            return original(closure)

        optimizer.step = step
        return optimizer

    spec = dataclasses.replace(
        registry.get_method("momentum"), name="raises", make_optimizer=factory
    )
    monkeypatch.setitem(registry.METHODS, "raises", spec)
    return "raises"


def test_method_refusing_a_non_finite_loss_is_a_divergence(monkeypatch):
    name = _raising_method(monkeypatch, FloatingPointError("loss is nan"))
    record = train(RunConfig("digits_mlp", name, hparams={"lr": 0.05}, steps=20))
    assert record["diverged"] and record["steps_done"] == 5
    assert record["error"] == "FloatingPointError: loss is nan"


def test_other_method_errors_propagate_instead_of_counting_as_divergence(monkeypatch):
    name = _raising_method(monkeypatch, ValueError("a bug, not a divergence"))
    with pytest.raises(ValueError, match="a bug, not a divergence"):
        train(RunConfig("digits_mlp", name, hparams={"lr": 0.05}, steps=20))


def test_schedule_changes_the_learning_rate():
    record = train(
        RunConfig(
            "digits_mlp",
            "momentum",
            hparams={"lr": 0.1, "schedule": "multistep"},
            steps=40,
            log_every=1,
        )
    )
    lrs = record["curve"]["lr"]
    assert lrs[0] == pytest.approx(0.1) and lrs[-1] == pytest.approx(1e-4)


def test_threshold_crossings_reads_the_curve():
    curve = {"step": [1, 2, 3], "train_loss": [10.0, 0.5, 0.01], "time_s": [0.1, 0.2, 0.3]}
    reached = threshold_crossings(curve, (0.1, 1e-3, 1e-9))
    assert reached["0.1"] == {"step": 2, "time_s": 0.2}
    assert reached["0.001"] == {"step": 3, "time_s": 0.3}
    assert reached["1e-09"] is None


def _tiny_suite() -> Suite:
    return Suite(
        name="quick",
        description="test suite",
        seeds=2,
        plan=(
            Experiment(
                name="digits_mlp",
                title="digits",
                task="digits_mlp",
                steps=12,
                eval_every=6,
                contenders=(Contender("sgd", grid={"lr": (1e-3, 0.1, 1e4)}), Contender("adam")),
                claims=(
                    at_least_as_good(
                        "adam_vs_sgd", "adam", "sgd", "Adam is at least as good as SGD."
                    ),
                ),
            ),
        ),
    )


def test_bench_tunes_writes_outputs_and_resumes(tmp_path, monkeypatch):
    suite = _tiny_suite()
    results = run_suite(suite, tmp_path, progress=False)
    write_report(results, tmp_path, suite)
    # 3 tuning runs (seed 1000) + 2 reported seeds of the winner + 2 of adam
    assert len(results["runs"]) == count_runs(suite, 2) == 3 + 2 + 2
    assert set(results) >= {"suite", "command", "environment", "runs", "summary", "tuning"}
    tuning = [r for r in results["runs"] if r["role"] == "tuning"]
    assert {r["config"]["seed"] for r in tuning} == {1000}
    selected = [r for r in results["runs"] if r["role"] == "selected"]
    assert {r["config"]["seed"] for r in selected} == {0, 1}
    rows = [r for r in results["summary"] if r["metric"] == "test_accuracy"]
    assert {r["method"] for r in rows} == {"sgd", "adam"}
    sgd = next(r for r in rows if r["method"] == "sgd")
    assert sgd["hparams"]["lr"] == 0.1 and sgd["n"] == 2
    assert {"task", "method", "metric", "mean", "std", "median", "q25", "q75", "n"} <= set(sgd)
    diverged = [r for r in results["runs"] if r["diverged"]]
    assert len(diverged) == 1 and diverged[0]["config"]["hparams"]["lr"] == 1e4
    assert all(r["provenance"]["code_state"] for r in results["runs"])
    report = (tmp_path / "report.md").read_text()
    assert "Adam is at least as good as SGD." in report
    assert (tmp_path / "digits_mlp.png").stat().st_size > 0
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["claims"][0]["held"] is None  # 2 seeds: below the noise rule's minimum
    assert "undecided" in saved["claims"][0]["measured"]

    def must_not_train(config, progress=False):
        raise AssertionError(f"finished run retrained: {config}")

    monkeypatch.setattr(executors_module, "train", must_not_train)
    again = run_suite(suite, tmp_path, progress=False)
    assert [r["final"] for r in again["runs"]] == [r["final"] for r in results["runs"]]


def test_report_is_rebuilt_from_results_json(tmp_path):
    suite = get_suite("quick").smoke()
    write_report(run_suite(suite, tmp_path, progress=False, smoke=True), tmp_path, suite)
    (tmp_path / "report.md").unlink()
    assert main(["report", str(tmp_path)]) == 0
    assert "lrkit bench `quick` (smoke run)" in (tmp_path / "report.md").read_text()


def test_cost_rows_and_base_ratio():
    rows = measure_cost("digits_mlp", ["polyak"], steps=4, warmup=1, memory=False, repeats=3)
    by_name = {row["method"]: row for row in rows}
    assert set(by_name) == {"polyak", "momentum"}
    polyak = by_name["polyak"]
    assert polyak["base"] == "momentum" and polyak["repeats"] == 3
    assert polyak["ratio_min"] <= polyak["ratio_to_base"] <= polyak["ratio_max"]
    assert by_name["momentum"]["ratio_to_base"] is None


def test_cost_repeats_report_the_median_ratio_and_its_range():
    rows = measure_cost("digits_mlp", ["l4adam"], steps=3, warmup=1, memory=False, repeats=3)
    row = next(row for row in rows if row["method"] == "l4adam")
    assert row["repeats"] == 3
    assert row["ratio_min"] <= row["ratio_to_base"] <= row["ratio_max"]
    with pytest.raises(ValueError, match="repeats"):
        measure_cost("digits_mlp", ["l4adam"], steps=3, memory=False, repeats=0)


def test_cli_version_list_cost_train(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    for name in ("digits_mlp", "adam", "quick", "mlrsnet"):
        assert name in listing
    out = tmp_path / "cost.json"
    assert (
        main(
            [
                "cost",
                "--task",
                "digits_mlp",
                "--methods",
                "adam",
                "--steps",
                "3",
                "--warmup",
                "1",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())
    assert {"method", "base", "ms_per_step", "ratio_to_base", "peak_memory_mb"} <= set(rows[0])
    assert rows[0]["peak_memory_mb"] is not None
    record_file = tmp_path / "run.json"
    assert (
        main(
            [
                "train",
                "--task",
                "digits_mlp",
                "--method",
                "sgd",
                "--steps",
                "5",
                "--hparam",
                "lr=0.1",
                "--json",
                str(record_file),
                "--no-progress",
            ]
        )
        == 0
    )
    assert json.loads(record_file.read_text())["config"]["hparams"] == {"lr": 0.1}


def test_report_without_results_fails_clearly(tmp_path):
    with pytest.raises(SystemExit, match="results.json does not exist"):
        main(["report", str(tmp_path)])


def test_torchrun_matches_single_process(tmp_path):
    """`lrkit train` under torchrun (2 gloo ranks, each half of every global batch) ends
    with the same model as one process on the full batches."""
    common = [
        "train",
        "--task",
        "digits_mlp",
        "--method",
        "momentum",
        "--steps",
        "8",
        "--hparam",
        "lr=0.05",
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = tmp_path / "single.json"
    subprocess.run(
        [sys.executable, "-m", "lrkit", *common, "--json", str(single)],
        check=True,
        env=env,
        timeout=120,
    )
    double = tmp_path / "ddp.json"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--standalone",
            "-m",
            "lrkit",
            *common,
            "--json",
            str(double),
        ],
        check=True,
        env=env,
        timeout=180,
    )
    one, two = json.loads(single.read_text()), json.loads(double.read_text())
    assert one["final"]["test_loss"] == pytest.approx(two["final"]["test_loss"], rel=1e-5)
    assert one["curve"]["train_loss"] == pytest.approx(two["curve"]["train_loss"], rel=1e-4)


@pytest.mark.parametrize("suite_name", sorted(SUITES))
def test_every_suite_runs_as_smoke_from_the_cli(suite_name, tmp_path):
    assert main(["bench", suite_name, "--smoke", "--out", str(tmp_path), "--no-progress"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["smoke"] and results["runs"]
    assert Path(tmp_path / "report.md").exists()
    # every claim finds the runs it names (a renamed entry must not make a claim vanish)
    for claim in results["claims"]:
        assert "could not be checked" not in claim["measured"], claim


def test_select_keeps_only_the_stages_a_kept_experiment_uses():
    """--tasks keeps a stage when a kept experiment reads its artifact (MARTHE's κ for Sec. 6,
    LRS-OPT's schedule for the replay) and drops it otherwise, so a partial run does not pay
    for a stage whose artifact nothing uses."""
    from lrkit.suites import get_suite

    suite = get_suite("marthe")
    kept = select(suite, tasks=["sec5", "sec5_replay"])
    assert [item.name for item in kept.plan] == ["sec5", "lrs_opt_schedule", "sec5_replay"]
    assert [item.name for item in select(suite, tasks=["sec6_adam"]).plan] == [
        "kappa_sec6_adam",
        "sec6_adam",
    ]


def test_select_keeps_the_claims_across_experiments_whose_experiments_it_keeps():
    """A --tasks run keeps a claim across experiments (the batch-size trend, the dropout
    comparison) when it keeps every experiment the claim reads, and records its filters."""
    suite = get_suite("l4")
    sweep = [f"mlp_batch{b}" for b in (8, 16, 32, 64)]
    kept = select(suite, tasks=sweep)
    assert {claim.name for claim in kept.claims} == {
        "l4adam_batch_trend_mlp",
        "l4mom_batch_trend_mlp",
    }
    assert kept.selection == {"tasks": sweep, "methods": []}
    assert select(suite, tasks=sweep[:3]).claims == ()
    assert all(claim.experiments for claim in suite.claims)


def test_report_of_a_selected_run_rebuilds_the_same_experiments_and_claims(tmp_path):
    """`lrkit report` applies the run's --tasks again: the rebuilt report has the run's
    experiments and verdicts only, not the rest of the suite as unchecked claims."""
    args = ["bench", "quick", "--smoke", "--tasks", "beale", "--out", str(tmp_path)]
    assert main([*args, "--no-progress", "--workers", "1"]) == 0
    first = (tmp_path / "report.md").read_text()
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["selection"] == {"tasks": ["beale"], "methods": []}
    assert main(["report", str(tmp_path)]) == 0
    rebuilt = json.loads((tmp_path / "results.json").read_text())
    assert [c["name"] for c in rebuilt["claims"]] == [c["name"] for c in results["claims"]]
    assert (tmp_path / "report.md").read_text().count("\n## ") == first.count("\n## ")
    del results["selection"]  # a results.json written before the filters were recorded
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert main(["report", str(tmp_path)]) == 0
    assert "could not be checked" not in (tmp_path / "report.md").read_text()


def test_cost_table_reads_every_number_from_the_rows(tmp_path):
    """scripts/cost_table.py writes its README from the JSON rows: a ratio above its target
    is marked as not met, one below as met."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "cost_table", Path(__file__).resolve().parents[1] / "scripts" / "cost_table.py"
    )
    cost_table = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cost_table)
    row = {"base": "adam", "ms_per_step": 2.0, "peak_memory_mb": None}
    rows = [
        {**row, "method": "slow", "ratio_to_base": 1.3, "ratio_min": 1.2, "ratio_max": 1.4},
        {**row, "method": "fast", "ratio_to_base": 1.01, "ratio_min": 1.0, "ratio_max": 1.02},
    ]
    (tmp_path / "t.json").write_text(json.dumps(rows))
    meta = {
        "machine": "m",
        "torch": "t",
        "commit": "c",
        "runs": [{"task": "t", "command": "x", "seconds": 1.0}],
    }
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    text = cost_table.readme(tmp_path, {"slow": 1.1, "fast": 1.1}, "rows")
    assert "| t | slow | adam | 2.00 | 1.300 (1.200–1.400) | ≤ 1.10 | no | — |" in text
    assert "| t | fast | adam | 2.00 | 1.010 (1.000–1.020) | ≤ 1.10 | yes | — |" in text
