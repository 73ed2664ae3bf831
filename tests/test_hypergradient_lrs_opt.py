"""LRS-OPT (Donini et al., Sec. 5): the reverse-mode hypergradient of E(w_T) with respect to
every η_t against RTHO's forward-mode hypergradient and finite differences (float64), the
checkpointing, the outer loop, and the schedule replayed through LambdaLR and the harness."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from lrkit.cli import main
from lrkit.methods.hypergradient import MARTHE, InnerOptimizer, lrs_opt, replay
from lrkit.methods.hypergradient.lrs_opt import Unroll

T = 12
INNERS = {
    "sgd": (InnerOptimizer(), 0.2),
    "momentum": (InnerOptimizer(momentum=0.9, weight_decay=0.05), 0.05),
    "adam": (InnerOptimizer("adam", betas=(0.8, 0.99)), 0.02),
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return ((outputs - targets) ** 2).mean()


def problem(seed: int = 0, dropout: float = 0.0):
    gen = torch.Generator().manual_seed(seed)
    weights = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    x = torch.randn(48, 4, generator=gen, dtype=torch.float64)
    xv = torch.randn(16, 4, generator=gen, dtype=torch.float64)
    torch.manual_seed(seed)
    layers = [nn.Linear(4, 6), nn.Tanh(), nn.Dropout(dropout), nn.Linear(6, 2)]
    model = nn.Sequential(*layers).double()
    return model, (x, torch.sin(x @ weights)), (xv, torch.sin(xv @ weights))


def batches(train, steps: int = T, size: int = 8):
    x, y = train
    return [(x[size * (t % 6) : size * (t % 6) + size], y[size * (t % 6) : size * (t % 6) + size])
            for t in range(steps)]  # fmt: skip


def unrolled_torch(model, train, validation, inner, schedule) -> float:
    """E(w_T) after the torch optimizer takes ``schedule[t]`` on batch t."""
    copy = problem()[0]
    copy.load_state_dict(model.state_dict())
    if inner.kind == "adam":
        optimizer = torch.optim.Adam(copy.parameters(), betas=inner.betas)
    else:
        optimizer = torch.optim.SGD(
            copy.parameters(), lr=1.0, momentum=inner.momentum, weight_decay=inner.weight_decay
        )
    for (x, y), rate in zip(batches(train, len(schedule)), schedule, strict=True):
        optimizer.param_groups[0]["lr"] = rate
        optimizer.zero_grad()
        mse(copy(x), y).backward()
        optimizer.step()
    with torch.no_grad():
        return float(mse(copy(validation[0]), validation[1]))


@pytest.mark.parametrize("name", sorted(INNERS))
def test_rtho_hypergradient_at_a_constant_schedule_equals_lrs_opt(name: str) -> None:
    """RTHO (μ = 1, β = 0) carries Z_T = dw_T/dη for η_t ≡ η; one more step reports
    δ = ∇E(w_T)·Z_T, which must equal Σ_t ∂E(w_T)/∂η_t from reverse mode."""
    inner, rate = INNERS[name]
    model, train, validation = problem()
    objective, gradient, _ = Unroll(model, mse, validation, inner).hypergradient(
        [rate] * T, batches(train)
    )
    online = problem()[0]
    online.load_state_dict(model.state_dict())
    options = {"momentum": inner.momentum, "weight_decay": inner.weight_decay}
    if inner.kind == "adam":
        options = {"inner": "adam", "betas": inner.betas}
    optimizer = MARTHE(online.parameters(), lr=rate, mu=1.0, beta=0.0, kappa=None, **options)
    data = batches(train, T + 1)
    for x, y in data:
        optimizer.step(
            lambda x=x, y=y: mse(online(x), y),
            validation_closure=lambda: mse(online(validation[0]), validation[1]),
        )
    assert abs(float(gradient.sum())) > 1e-3
    assert optimizer.diagnostics()["hypergradient"] == pytest.approx(
        float(gradient.sum()), rel=1e-9
    )
    assert optimizer.diagnostics()["validation_loss"] == pytest.approx(objective, rel=1e-12)


@pytest.mark.parametrize("name", sorted(INNERS))
def test_reverse_mode_hypergradient_equals_finite_differences(name: str) -> None:
    inner, rate = INNERS[name]
    model, train, validation = problem()
    schedule = [rate * (1.0 + 0.3 * torch.sin(torch.tensor(t)).item()) for t in range(T)]
    _, gradient, _ = Unroll(model, mse, validation, inner).hypergradient(schedule, batches(train))
    eps = 1e-6
    for t in (0, T // 2, T - 1):
        up, down = list(schedule), list(schedule)
        up[t] += eps
        down[t] -= eps
        estimate = (
            unrolled_torch(model, train, validation, inner, up)
            - unrolled_torch(model, train, validation, inner, down)
        ) / (2 * eps)
        assert float(gradient[t]) == pytest.approx(estimate, rel=1e-6, abs=1e-10), t


def test_checkpointing_and_dropout_replay_give_the_same_gradient() -> None:
    """Recomputed segments replay the same dropout masks: every checkpoint interval gives
    the same hypergradient as storing every state."""
    model, train, validation = problem(dropout=0.3)
    results = [
        Unroll(model, mse, validation, INNERS["momentum"][0], every).hypergradient(
            [0.05] * T, batches(train)
        )
        for every in (1, 3, 5, T)
    ]
    for objective, gradient, loss in results[1:]:
        assert objective == results[0][0] and loss == results[0][2]
        torch.testing.assert_close(gradient, results[0][1], rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("outer, outer_lr", [("gd", 0.5), ("adam", 0.02)])
def test_lrs_opt_lowers_the_validation_loss_and_returns_a_replayable_schedule(
    outer: str, outer_lr: float
) -> None:
    model, train, validation = problem()
    before = [p.detach().clone() for p in model.parameters()]
    result = lrs_opt(
        model, mse, train, validation, steps=T, batch_size=8, iterations=8, lr=0.05,
        outer_lr=outer_lr, outer=outer,
    )  # fmt: skip
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    assert len(result.schedule) == T and min(result.schedule) >= 0
    assert result.validation_losses[-1] < 0.9 * result.validation_losses[0]
    # replay through LambdaLR with any torch optimizer (lr = 1: the values are absolute)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, result.lr_lambda)
    applied = []
    for _ in range(T):
        applied.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert applied == pytest.approx(result.schedule)


def test_replay_helper_trains_with_the_schedule() -> None:
    model, train, _ = problem()
    with torch.no_grad():
        start = float(mse(model(train[0]), train[1]))
    mean_loss = replay(model, mse, train, [0.2] * 30, batch_size=8)
    with torch.no_grad():
        assert float(mse(model(train[0]), train[1])) < start
    assert mean_loss > 0


def test_lrs_opt_through_the_cli_and_its_replay_by_the_harness(tmp_path) -> None:
    """``lrkit train --method lrs_opt`` records the learned schedule; SGD with the registered
    "replay" schedule (lr = 1) retraces the solver's final model exactly."""
    solved = tmp_path / "lrs_opt.json"
    common = ["--task", "digits_mlp", "--steps", "15", "--no-progress"]
    hparams = ["--hparam", "iterations=2", "--hparam", "lr=0.1", "--hparam", "outer_lr=0.01"]
    assert main(["train", "--method", "lrs_opt", *common, *hparams, "--json", str(solved)]) == 0
    record = json.loads(solved.read_text())
    schedule = record["schedule"]["lr"]
    assert len(schedule) == 15 and record["curve"]["step"] == [0, 1, 2]
    assert len(record["curve"]["validation_loss"]) == 3
    from lrkit.harness.results import RunConfig
    from lrkit.harness.training import train

    replayed = train(
        RunConfig(
            task="digits_mlp",
            method="sgd",
            steps=15,
            hparams={"lr": 1.0, "schedule": "replay", "schedule_options": {"values": schedule}},
        )
    )
    assert replayed["final"]["test_loss"] == record["final"]["test_loss"]
