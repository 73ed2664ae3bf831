"""Lookahead against a float64 reference written from Zhang et al. 2019, Algorithm 1."""

from __future__ import annotations

import io

import pytest
import torch

from lrkit.methods import get_method
from lrkit.methods.lookahead import Lookahead

STEPS = 50


def least_squares_problem() -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """loss(w, b) = ½·‖A·w + b·1 − y‖², float64, with a 4-vector weight and a scalar bias
    (two parameter tensors)."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(12, 4, generator=generator, dtype=torch.float64)
    y = torch.randn(12, generator=generator, dtype=torch.float64)
    start = [
        torch.randn(4, generator=generator, dtype=torch.float64),
        torch.zeros(1, dtype=torch.float64),
    ]
    return a, y, start


def reference_lookahead_momentum(
    lr: float, momentum: float, k: int, alpha: float, steps: int
) -> list[list[float]]:
    """Algorithm 1 with SGD-momentum as the inner optimizer, in plain Python floats: for
    every parameter coordinate, buf ← μ·buf + g (buf = g at the first step), θ ← θ − lr·buf;
    after every k inner steps φ ← φ + α·(θ − φ), θ ← φ; φ starts at θ₀ and the momentum
    buffer is kept. Gradients by hand: r = A·w + b − y, ∂/∂w = Aᵀ·r, ∂/∂b = Σ r."""
    a, y, start = least_squares_problem()
    rows, cols = a.shape
    matrix = [[float(a[i, j]) for j in range(cols)] for i in range(rows)]
    targets = [float(v) for v in y]
    theta = [float(v) for v in start[0]] + [float(start[1][0])]
    slow = list(theta)
    buffer: list[float] | None = None
    for step in range(1, steps + 1):
        residual = [
            sum(matrix[i][j] * theta[j] for j in range(cols)) + theta[cols] - targets[i]
            for i in range(rows)
        ]
        grad = [sum(matrix[i][j] * residual[i] for i in range(rows)) for j in range(cols)]
        grad.append(sum(residual))
        if buffer is None:
            buffer = list(grad)
        else:
            buffer = [momentum * m + g for m, g in zip(buffer, grad, strict=True)]
        theta = [t - lr * m for t, m in zip(theta, buffer, strict=True)]
        if step % k == 0:
            slow = [s + alpha * (t - s) for s, t in zip(slow, theta, strict=True)]
            theta = list(slow)
    return [theta[:cols], theta[cols:]]


def make_params() -> list[torch.nn.Parameter]:
    _, _, start = least_squares_problem()
    return [torch.nn.Parameter(t.clone()) for t in start]


def make_closure(params: list[torch.Tensor], optimizer: torch.optim.Optimizer):
    a, y, _ = least_squares_problem()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = 0.5 * (a @ params[0] + params[1] - y).pow(2).sum()
        loss.backward()
        return loss

    return closure


def run(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], steps: int) -> None:
    closure = make_closure(params, optimizer)
    for _ in range(steps):
        optimizer.step(closure)


@pytest.mark.parametrize(("k", "alpha"), [(5, 0.5), (3, 0.8), (1, 0.3)])
def test_matches_float64_reference(k: int, alpha: float) -> None:
    lr, momentum = 0.01, 0.9
    params = make_params()
    optimizer = Lookahead(torch.optim.SGD(params, lr=lr, momentum=momentum), k=k, alpha=alpha)
    run(optimizer, params, STEPS)
    expected = reference_lookahead_momentum(lr, momentum, k, alpha, STEPS)
    for param, values in zip(params, expected, strict=True):
        torch.testing.assert_close(
            param.detach(), torch.tensor(values, dtype=torch.float64), rtol=1e-12, atol=1e-12
        )


def test_alpha_one_is_the_base_optimizer_bit_for_bit() -> None:
    """α = 1 makes φ ← θ at every synchronisation, i.e. plain SGD-momentum."""
    wrapped, plain = make_params(), make_params()
    run(Lookahead(torch.optim.SGD(wrapped, lr=0.01, momentum=0.9), k=4, alpha=1.0), wrapped, 23)
    run(torch.optim.SGD(plain, lr=0.01, momentum=0.9), plain, 23)
    for a, b in zip(wrapped, plain, strict=True):
        assert torch.equal(a, b)


def test_step_returns_the_closure_loss_and_calls_it_once() -> None:
    params = make_params()
    optimizer = Lookahead(torch.optim.SGD(params, lr=0.01))
    inner = make_closure(params, optimizer)
    calls = []

    def closure() -> torch.Tensor:
        calls.append(1)
        return inner()

    first = optimizer.step(closure)
    assert len(calls) == 1
    a, y, start = least_squares_problem()
    expected = 0.5 * (a @ start[0] + start[1] - y).pow(2).sum()
    torch.testing.assert_close(first.detach(), expected, rtol=0, atol=0)


def test_param_groups_are_the_base_optimizers() -> None:
    params = make_params()
    base = torch.optim.SGD([{"params": params[:1]}, {"params": params[1:], "lr": 0.1}], lr=0.01)
    optimizer = Lookahead(base)
    assert optimizer.param_groups is base.param_groups
    assert optimizer.defaults is base.defaults
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    run_closure = make_closure(params, optimizer)
    for _ in range(4):
        optimizer.step(run_closure)
        scheduler.step()
    assert [group["lr"] for group in base.param_groups] == pytest.approx([0.0025, 0.025])
    extra = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    optimizer.add_param_group({"params": [extra], "lr": 0.5})
    assert base.param_groups[-1]["params"] == [extra]
    assert optimizer.param_groups is base.param_groups


def test_zero_grad_clears_gradients() -> None:
    params = make_params()
    optimizer = Lookahead(torch.optim.SGD(params, lr=0.01))
    make_closure(params, optimizer)()
    assert all(p.grad is not None for p in params)
    optimizer.zero_grad()
    assert all(p.grad is None for p in params)


def test_state_dict_resumes_bit_identically_mid_cycle() -> None:
    """Save after 7 steps (k = 5: two steps into the second cycle), reload into a fresh
    optimizer over fresh parameters, and compare the next 9 steps with the uninterrupted
    run; the state dict goes through torch.save/torch.load."""
    params = make_params()
    optimizer = Lookahead(torch.optim.SGD(params, lr=0.01, momentum=0.9), k=5, alpha=0.5)
    run(optimizer, params, 7)
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    saved_params = [p.detach().clone() for p in params]
    run(optimizer, params, 9)

    resumed = [torch.nn.Parameter(p.clone()) for p in saved_params]
    fresh = Lookahead(torch.optim.SGD(resumed, lr=0.5, momentum=0.1), k=2, alpha=0.9)
    buffer.seek(0)
    fresh.load_state_dict(torch.load(buffer))
    assert (fresh.k, fresh.alpha, fresh.lookahead_steps) == (5, 0.5, 7)
    assert fresh.param_groups is fresh.base_optimizer.param_groups
    run(fresh, resumed, 9)
    for a, b in zip(params, resumed, strict=True):
        assert torch.equal(a, b)


def test_load_rejects_a_bare_base_state_dict() -> None:
    params = make_params()
    optimizer = Lookahead(torch.optim.SGD(params, lr=0.01))
    with pytest.raises(ValueError, match="lookahead"):
        optimizer.load_state_dict(torch.optim.SGD(params, lr=0.01).state_dict())


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"k": 0}, ValueError),
        ({"k": 2.5}, ValueError),
        ({"alpha": 0.0}, ValueError),
        ({"alpha": 1.5}, ValueError),
    ],
)
def test_rejects_invalid_arguments(kwargs: dict, error: type[Exception]) -> None:
    params = make_params()
    with pytest.raises(error):
        Lookahead(torch.optim.SGD(params, lr=0.01), **kwargs)


def test_rejects_a_non_optimizer_base() -> None:
    with pytest.raises(TypeError, match="torch.optim.Optimizer"):
        Lookahead(make_params())  # type: ignore[arg-type]


def test_registry_entry_wraps_sgd_momentum() -> None:
    spec = get_method("lookahead")
    optimizer = spec.build_optimizer(make_params())
    assert isinstance(optimizer, Lookahead)
    assert isinstance(optimizer.base_optimizer, torch.optim.SGD)
    assert optimizer.param_groups[0]["momentum"] == 0.9
    assert (optimizer.k, optimizer.alpha) == (5, 0.5)
    assert spec.schedules and spec.tunable == ("lr",) and spec.base == "momentum"
