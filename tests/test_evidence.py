"""The evidence protocol: the noise rule behind every verdict, the claim checks, tuning on
the validation split with its own seed, grid extension, provenance, and worker-count
independence of the results."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from lrkit.harness import bench as bench_module
from lrkit.harness import provenance
from lrkit.harness.bench import MixedCodeStateError, run_suite
from lrkit.harness.claims import (
    at_least_as_good,
    beats,
    fewer_steps_than_grid,
    reaches_relative_loss,
)
from lrkit.harness.executors import LocalExecutor
from lrkit.harness.experiments import Contender, Experiment, Suite
from lrkit.harness.results import ExperimentResult
from lrkit.harness.statistics import compare
from lrkit.harness.trends import advantage_grows_along
from lrkit.tasks import TASKS
from lrkit.tasks.base import Task, TaskData

pytest.importorskip("scipy")


# --------------------------------------------------------------------------- noise rule


def test_a_constructed_better_tie_and_worse() -> None:
    base = [0.90, 0.91, 0.89, 0.90, 0.91]
    assert compare([0.95, 0.96, 0.94, 0.95, 0.96], base, maximize=True).outcome == "better"
    assert compare([0.90, 0.92, 0.88, 0.91, 0.89], base, maximize=True).outcome == "tie"
    assert compare([0.80, 0.81, 0.79, 0.80, 0.81], base, maximize=True).outcome == "worse"
    # a lower loss is better
    assert compare([0.1, 0.11, 0.09, 0.1, 0.1], base, maximize=False).outcome == "better"


def test_too_few_seeds_is_undecided_not_a_verdict() -> None:
    comparison = compare([0.99, 0.99, 0.99, 0.99], [0.1, 0.1, 0.1, 0.1, 0.1], maximize=True)
    assert comparison.outcome == "undecided" and comparison.effect is None


def test_log_scale_is_not_dominated_by_one_seed() -> None:
    method = [1e-8, 1e-8, 1e-8, 1e-8, 1.0]  # one bad seed
    baseline = [1e-2, 1e-2, 1e-2, 1e-2, 1e-2]
    assert compare(method, baseline, maximize=False).outcome == "tie"  # arithmetic means
    log = compare(method, baseline, maximize=False, log_scale=True)
    assert log.scale == "log10" and log.effect == pytest.approx(4.4)


def test_deterministic_experiments_compare_exact_values() -> None:
    assert compare([0.04], [5e-17], maximize=False, deterministic=True).outcome == "worse"
    assert compare([1.0], [1.0 + 1e-9], maximize=False, deterministic=True).outcome == "tie"


# ------------------------------------------------------------------------- claim checks


def _run(label: str, seed: int, value: float | None, diverged: bool = False, **extra) -> dict:
    return {
        "label": label,
        "role": extra.pop("role", "selected"),
        "config": {"method": label, "seed": seed, "hparams": extra.pop("hparams", {})},
        "final": {} if value is None else {"test_accuracy": value},
        "diverged": diverged,
        "thresholds": extra.pop("thresholds", {}),
        **extra,
    }


def _result(runs: list[dict], maximize: bool = True, deterministic: bool = False):
    experiment = Experiment(
        name="e",
        title="e",
        task="digits_mlp",
        contenders=(Contender("adam"),),
        deterministic=deterministic,
    )
    return ExperimentResult(experiment, "test_accuracy", maximize, runs=runs, rows=[])


def _seeds(label: str, values: list[float]) -> list[dict]:
    return [_run(label, seed, value) for seed, value in enumerate(values)]


def test_at_least_as_good_holds_on_a_tie_and_beats_does_not() -> None:
    runs = _seeds("ours", [0.90, 0.92, 0.88, 0.91, 0.89]) + _seeds(
        "base", [0.90, 0.91, 0.89, 0.90, 0.91]
    )
    tie = at_least_as_good("c", "ours", "base", "ours ≥ base").check(_result(runs))
    assert tie.held is True and tie.comparison.outcome == "tie"
    assert beats("c", "ours", "base", "ours > base").check(_result(runs)).held is False


def test_more_failures_than_the_baseline_is_worse() -> None:
    runs = (
        _seeds("ours", [0.99, 0.99, 0.99, 0.99])
        + [_run("ours", 4, None, diverged=True)]
        + _seeds("base", [0.90, 0.91, 0.89, 0.90, 0.91])
    )
    verdict = at_least_as_good("c", "ours", "base", "t").check(_result(runs))
    assert verdict.held is False and verdict.comparison.outcome == "worse"
    assert "failed" in verdict.comparison.reason


def test_a_run_at_chance_counts_as_failed() -> None:
    at_chance = [_run("ours", s, 0.1, num_classes=10) for s in range(5)]
    runs = at_chance + _seeds("base", [0.90, 0.91, 0.89, 0.90, 0.91])
    verdict = at_least_as_good("c", "ours", "base", "t").check(_result(runs))
    assert verdict.held is False and verdict.comparison.outcome == "worse"


def test_too_few_seeds_make_a_claim_undecided() -> None:
    runs = _seeds("ours", [0.99, 0.99]) + _seeds("base", [0.5, 0.5])
    verdict = at_least_as_good("c", "ours", "base", "t").check(_result(runs))
    assert verdict.held is None


def _reaching(label: str, steps: list[int | None], hparams: dict | None = None, role="selected"):
    return [
        _run(
            label,
            seed,
            0.5,
            role=role,
            hparams=hparams or {},
            thresholds={"1e-06": None if step is None else {"step": step, "time_s": 1.0}},
        )
        for seed, step in enumerate(steps)
    ]


def test_fewer_steps_than_grid() -> None:
    claim = fewer_steps_than_grid("c", "ours", ("gd",), 1e-6, "faster")
    ours = _reaching("ours", [50, 51, 49, 50, 50])
    never_grid = _reaching("gd", [None] * 5, {"lr": 0.1}, "grid")
    assert claim.check(_result(ours + never_grid)).held is True
    fast_grid = _reaching("gd", [40, 41, 39, 40, 40], {"lr": 0.01}, "grid")
    assert claim.check(_result(ours + never_grid + fast_grid)).held is False
    nobody = _reaching("ours", [None] * 5) + never_grid
    assert claim.check(_result(nobody)).held is None


def test_reaches_relative_loss_needs_every_seed() -> None:
    claim = reaches_relative_loss("c", "ours", 1e-6, "reaches")
    assert claim.check(_result(_reaching("ours", [5] * 5))).held is True
    assert claim.check(_result(_reaching("ours", [5, 5, None, 5, 5]))).held is False
    assert claim.check(_result(_reaching("ours", [5, 5]))).held is None


def test_a_trend_across_experiments() -> None:
    def experiment(gap: float) -> ExperimentResult:
        base = [0.80, 0.81, 0.79, 0.80, 0.81]
        return _result(_seeds("ours", [b + gap for b in base]) + _seeds("base", base))

    claim = advantage_grows_along("t", "text", "ours", "base", (("small", 8), ("large", 64)))
    shrinking = {"small": experiment(0.10), "large": experiment(0.0)}
    assert claim.check(shrinking).held is True
    flat = {"small": experiment(0.05), "large": experiment(0.05)}
    assert claim.check(flat).held is False


def test_a_trend_applies_the_failure_rule_at_each_end() -> None:
    """Failing on more seeds than the baseline at one end only is the worst effect there,
    as in a single comparison: diverging at the small batch means the advantage did not grow
    towards it; failing at both ends leaves it to the seed rule (3 seeds left: undecided)."""

    def experiment(ours_failed: int) -> ExperimentResult:
        base = [0.80, 0.81, 0.79, 0.80, 0.81]
        ours = _seeds("ours", [b + 0.1 for b in base[ours_failed:]])
        failed = [_run("ours", 10 + s, None, diverged=True) for s in range(ours_failed)]
        return _result(ours + failed + _seeds("base", base))

    claim = advantage_grows_along("t", "text", "ours", "base", (("small", 8), ("large", 64)))
    fails_small = claim.check({"small": experiment(2), "large": experiment(0)})
    assert fails_small.held is False and fails_small.comparison.outcome == "worse"
    assert "small" in fails_small.comparison.reason and "fails more" in fails_small.measured
    fails_large = claim.check({"small": experiment(0), "large": experiment(2)})
    assert fails_large.held is True and fails_large.comparison.outcome == "better"
    assert claim.check({"small": experiment(2), "large": experiment(2)}).held is None


# ------------------------------------------------------------------- tuning protocol


class Scalar(nn.Module):
    """One weight w, starting at 0; its output is w for every row."""

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.w.expand(inputs.shape[0])


def _scalar_task() -> Task:
    """Training pulls w to 1 ((w − 1)²); the validation split's target is 1 too, the test
    split's is 2. Five SGD steps with lr 1 oscillate 0 → 2 → 0 → … and end at w = 2 (test
    loss 0, validation loss 1); lr 0.1 ends at w = 1 − 0.8⁵ (validation loss 0.107). A
    selection on the test set would pick lr 1; on the validation split, lr 0.1."""

    def data(seed: int) -> TaskData:
        ones, twos = torch.ones(4), torch.full((4,), 2.0)
        return TaskData(torch.zeros(4, 1), ones, torch.zeros(4, 1), ones, torch.zeros(4, 1), twos)

    return Task(
        name="scalar",
        description="a scalar whose validation and test targets disagree",
        model_factory=Scalar,
        data_factory=data,
        per_example_loss=lambda outputs, targets: (outputs - targets).pow(2),
        batch_size=None,
        steps=5,
        eval_every=5,
        primary_metric="test_loss",
        maximize=False,
    )


@pytest.fixture
def scalar_task(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(TASKS, "scalar", lambda: _scalar_task())
    return "scalar"


def _scalar_suite(grid: tuple[float, ...], seeds: int = 1) -> Suite:
    return Suite(
        name="scalar",
        description="",
        seeds=seeds,
        plan=(
            Experiment(
                name="scalar",
                title="scalar",
                task="scalar",
                contenders=(Contender("sgd", grid={"lr": grid}),),
            ),
        ),
    )


def test_tuning_selects_on_the_validation_split_never_the_test_set(scalar_task, tmp_path):
    results = run_suite(_scalar_suite((0.01, 0.1, 1.0)), tmp_path, progress=False)
    tuning = results["tuning"][0]
    assert tuning["selection_metric"] == "validation_loss"
    assert tuning["selected"] == 0.1
    test_losses = {
        r["config"]["hparams"]["lr"]: r["final"]["test_loss"]
        for r in results["runs"]
        if r["role"] == "tuning"
    }
    assert min(test_losses, key=test_losses.get) == 1.0  # what the test set would pick


def test_a_grid_whose_best_point_is_on_an_edge_is_extended(scalar_task, tmp_path):
    results = run_suite(_scalar_suite((0.001, 0.01)), tmp_path, progress=False)
    tuning = results["tuning"][0]
    assert tuning["values"] == [0.001, 0.01, 0.1, 1.0]
    assert tuning["selected"] == 0.1 and tuning["extended"] == 2 and not tuning["at_edge"]


def test_a_best_point_still_on_an_edge_is_flagged(scalar_task, tmp_path):
    suite = _scalar_suite((1e-6, 1e-5))
    results = run_suite(suite, tmp_path, progress=False)
    tuning = results["tuning"][0]
    assert tuning["extended"] == 3 and tuning["at_edge"]


def test_resume_refuses_runs_of_another_code_state(scalar_task, tmp_path, monkeypatch):
    suite = _scalar_suite((0.01, 0.1, 1.0))
    run_suite(suite, tmp_path, progress=False)
    other = {**provenance.code_state(), "code_state": "0123456789ab"}
    monkeypatch.setattr(bench_module, "code_state", lambda: other)
    with pytest.raises(MixedCodeStateError, match="--allow-mixed"):
        run_suite(suite, tmp_path, progress=False)
    mixed = run_suite(suite, tmp_path, progress=False, allow_mixed=True)
    assert mixed["mixed_runs"] == len(mixed["runs"])


def test_a_truncated_run_file_is_named(scalar_task, tmp_path):
    suite = _scalar_suite((0.01, 0.1, 1.0))
    run_suite(suite, tmp_path, progress=False)
    victim = sorted((tmp_path / "runs").glob("*.json"))[0]
    victim.write_text(victim.read_text()[:40])
    with pytest.raises(ValueError, match=victim.name):
        run_suite(suite, tmp_path, progress=False)


def _comparable(results: dict) -> list:
    return [
        (r["experiment"], r["label"], r["role"], r["config"], r["final"]) for r in results["runs"]
    ]


def _workers_suite() -> Suite:
    return Suite(
        name="workers",
        description="",
        seeds=2,
        plan=(
            Experiment(
                name="digits",
                title="digits",
                task="digits_mlp",
                steps=6,
                eval_every=6,
                contenders=(Contender("adam", grid={"lr": (1e-3, 1e-2)}), Contender("l4adam")),
            ),
        ),
    )


def test_results_do_not_depend_on_the_number_of_workers(tmp_path):
    suite = _workers_suite()
    one = run_suite(
        suite, tmp_path / "one", LocalExecutor(1, 1, provenance.code_state()), progress=False
    )
    pool = LocalExecutor(2, 1, provenance.code_state())
    try:
        two = run_suite(suite, tmp_path / "two", pool, progress=False)
    finally:
        pool.close()
    assert _comparable(one) == _comparable(two)
    assert one["summary"] == two["summary"]
    assert (
        json.loads((tmp_path / "two" / "results.json").read_text())["environment"]["workers"] == 2
    )
    assert Path(tmp_path / "two" / "runs").is_dir()


def test_the_ray_backend_gives_the_same_results(tmp_path):
    pytest.importorskip("ray")
    from lrkit.harness.executors import RayExecutor

    suite = _workers_suite()
    one = run_suite(
        suite, tmp_path / "one", LocalExecutor(1, 1, provenance.code_state()), progress=False
    )
    ray_executor = RayExecutor(2, 1, provenance.code_state(), address=None)
    try:
        on_ray = run_suite(suite, tmp_path / "ray", ray_executor, progress=False, backend="ray")
    finally:
        ray_executor.close()
    assert _comparable(one) == _comparable(on_ray)
    assert on_ray["environment"]["backend"] == "ray"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; prctl is Linux")
def test_workers_end_when_the_bench_process_is_killed(tmp_path):
    """A bench killed with SIGKILL (or SIGTERM: no Ctrl-C handler runs) used to leave its
    worker processes running runs on their own; they now end with it."""
    import signal
    import subprocess
    import time

    out = tmp_path / "out"
    bench = subprocess.Popen(
        [sys.executable, "-m", "lrkit", "bench", "quick", "--smoke", "--workers", "2",
         "--out", str(out), "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip

    def children() -> list[int]:
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == bench.pid:
                found.append(int(stat.parent.name))
        return found

    deadline = time.monotonic() + 120
    workers: list[int] = []
    while time.monotonic() < deadline and not list(out.glob("runs/*.json")):
        workers = children() or workers
        time.sleep(0.2)
    workers = children() or workers
    assert workers, "the bench started no worker processes"
    bench.send_signal(signal.SIGKILL)
    bench.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in workers):
        time.sleep(0.2)
    alive = [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, f"workers {alive} outlived the bench"
