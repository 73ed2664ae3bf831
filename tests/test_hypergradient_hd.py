"""HDSGD, HDAdam and HD(base) against float64 references written straight from Baydin et al.'s
equations (ICLR 2018, Algorithms 2-3; one Python loop per parameter, one global η), the
wrapper against the optimizers it must reproduce, and η ≥ 0 as a property over random
problems."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from lrkit.methods.hypergradient import HD, HDSGD, HDAdam
from lrkit.methods.hypergradient.rules import descend_learning_rate

STEPS = 25


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_problem(seed: int = 0, scale: float = 1.0):
    """A tanh MLP 5-8-2 regression on 4 mini-batches of 16 (cycled), float64; four
    parameter tensors, so a per-tensor η update would differ from one global η."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 5, generator=gen, dtype=torch.float64)
    y = torch.sin(x @ torch.randn(5, 2, generator=gen, dtype=torch.float64))
    init = [
        0.5 * torch.randn(5, 8, generator=gen, dtype=torch.float64),
        0.1 * torch.randn(8, generator=gen, dtype=torch.float64),
        0.5 * torch.randn(8, 2, generator=gen, dtype=torch.float64),
        0.1 * torch.randn(2, generator=gen, dtype=torch.float64),
    ]

    def loss_fn(params, step: int) -> torch.Tensor:
        rows = slice(16 * (step % 4), 16 * (step % 4) + 16)
        w1, b1, w2, b2 = params
        return scale * ((torch.tanh(x[rows] @ w1 + b1) @ w2 + b2 - y[rows]) ** 2).mean()

    return init, loss_fn


def run(make_optimizer, steps: int = STEPS, seed: int = 0, scale: float = 1.0):
    """Trains with an lrkit optimizer; returns final parameters and η after every step."""
    init, loss_fn = make_problem(seed, scale)
    params = [torch.nn.Parameter(p.clone()) for p in init]
    optimizer = make_optimizer(params)
    etas = []
    for step in range(steps):

        def closure(step=step):
            optimizer.zero_grad()
            loss = loss_fn(params, step)
            loss.backward()
            return loss

        optimizer.step(closure)
        etas.append(optimizer.diagnostics()["effective_lr"])
    return [p.detach() for p in params], etas


# ---------------------------------------------------------------------------- references


def reference_sgd(lr: float, beta: float, steps: int = STEPS, momentum: float = 0.0):
    """SGD-HD, Baydin et al. Algorithm 2 (momentum: u = the heavy-ball buffer, the previous
    update direction), with the projection η ≥ 0: per step g_t; h_t = −g_t·u_{t−1} summed over
    every element of every tensor; η_t = max(η_{t−1} − β·h_t, 0); u_t; w ← w − η_t·u_t."""
    init, loss_fn = make_problem()
    w = [p.clone() for p in init]
    buffers = [torch.zeros_like(p) for p in w]
    previous = None
    eta, etas = lr, []
    for step in range(steps):
        leaves = [p.clone().requires_grad_() for p in w]
        grads = torch.autograd.grad(loss_fn(leaves, step), leaves)
        if previous is not None:
            h = 0.0
            for g, u in zip(grads, previous, strict=True):
                for gi, ui in zip(g.reshape(-1).tolist(), u.reshape(-1).tolist(), strict=True):
                    h -= gi * ui
            eta = max(eta - beta * h, 0.0)
        directions = []
        for i, g in enumerate(grads):
            buffers[i] = momentum * buffers[i] + g
            directions.append(buffers[i] if momentum else g)
        w = [p - eta * u for p, u in zip(w, directions, strict=True)]
        previous = [u.clone() for u in directions]
        etas.append(eta)
    return w, etas


def reference_adam(
    lr: float,
    beta: float,
    steps: int = STEPS,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
):
    """Adam-HD, Baydin et al. Algorithm 3: h_t = g_t·(−m̂_{t−1}/(sqrt(v̂_{t−1}) + ε)), one
    global η_t = max(η_{t−1} − β·h_t, 0), then Adam's step with η_t."""
    init, loss_fn = make_problem()
    b1, b2 = betas
    w = [p.clone() for p in init]
    m = [torch.zeros_like(p) for p in w]
    v = [torch.zeros_like(p) for p in w]
    previous = None
    eta, etas = lr, []
    for t in range(1, steps + 1):
        leaves = [p.clone().requires_grad_() for p in w]
        grads = torch.autograd.grad(loss_fn(leaves, t - 1), leaves)
        if previous is not None:
            h = -sum(float((g * u).sum()) for g, u in zip(grads, previous, strict=True))
            eta = max(eta - beta * h, 0.0)
        directions = []
        for i, g in enumerate(grads):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g * g
            directions.append((m[i] / (1 - b1**t)) / ((v[i] / (1 - b2**t)).sqrt() + eps))
        w = [p - eta * u for p, u in zip(w, directions, strict=True)]
        previous = directions
        etas.append(eta)
    return w, etas


def assert_same_run(actual, expected, rtol: float = 1e-12) -> None:
    (params, etas), (ref_params, ref_etas) = actual, expected
    assert etas == pytest.approx(ref_etas, rel=rtol, abs=1e-15)
    for p, r in zip(params, ref_params, strict=True):
        torch.testing.assert_close(p, r, rtol=rtol, atol=1e-13)


# ---------------------------------------------------------------------------- HDSGD, HDAdam


@pytest.mark.parametrize("foreach", [True, False])
def test_hdsgd_matches_the_reference(foreach: bool) -> None:
    expected = reference_sgd(lr=0.05, beta=0.02)
    assert max(expected[1]) > 0.06, "η must move for the test to mean something"
    assert_same_run(run(lambda p: HDSGD(p, lr=0.05, hypergrad_lr=0.02, foreach=foreach)), expected)


def test_hdsgd_with_momentum_matches_the_reference() -> None:
    expected = reference_sgd(lr=0.02, beta=0.01, momentum=0.9)
    actual = run(lambda p: HDSGD(p, lr=0.02, hypergrad_lr=0.01, momentum=0.9))
    assert_same_run(actual, expected)


@pytest.mark.parametrize("foreach", [True, False])
def test_hdadam_matches_the_reference(foreach: bool) -> None:
    expected = reference_adam(lr=0.01, beta=1e-4)
    assert max(expected[1]) > 0.011
    actual = run(lambda p: HDAdam(p, lr=0.01, hypergrad_lr=1e-4, foreach=foreach))
    assert_same_run(actual, expected)


def test_eta_is_clamped_at_zero_and_the_rule_is_projected_descent() -> None:
    eta = torch.tensor(0.1, dtype=torch.float64)
    assert float(descend_learning_rate(eta, torch.tensor(2.0, dtype=torch.float64), 0.01)) == 0.08
    assert float(descend_learning_rate(eta, torch.tensor(50.0, dtype=torch.float64), 0.01)) == 0
    _, etas = run(lambda p: HDSGD(p, lr=0.05, hypergrad_lr=50.0), steps=6)
    assert min(etas) == 0.0 and all(e >= 0 for e in etas)


def test_groups_share_eta_and_may_differ_in_the_rest() -> None:
    init, _ = make_problem()
    params = [torch.nn.Parameter(p.clone()) for p in init]
    HDSGD([{"params": params[:2]}, {"params": params[2:], "weight_decay": 0.1}])
    with pytest.raises(ValueError, match="lr must be the same in every param group"):
        HDSGD([{"params": params[:2]}, {"params": params[2:], "lr": 0.5}])
    with pytest.raises(ValueError, match="hypergrad_lr must be the same"):
        HDAdam([{"params": params[:2]}, {"params": params[2:], "hypergrad_lr": 1.0}])


def test_non_finite_gradient_is_refused_before_anything_changes() -> None:
    init, loss_fn = make_problem()
    params = [torch.nn.Parameter(p.clone()) for p in init]
    optimizer = HDAdam(params, lr=0.01, hypergrad_lr=1e-4)
    for step in range(3):
        optimizer.zero_grad()
        loss_fn(params, step).backward()
        optimizer.step()
    state = copy.deepcopy(optimizer.state_dict())
    before = [p.detach().clone() for p in params]
    optimizer.zero_grad()
    loss_fn(params, 3).backward()
    params[1].grad[0] = math.inf
    with pytest.raises(FloatingPointError, match="training gradient for parameter 1"):
        optimizer.step()
    assert all(torch.equal(a, b) for a, b in zip(before, params, strict=True))
    torch.testing.assert_close(optimizer.state_dict()["hd"], state["hd"], rtol=0, atol=0)


# ------------------------------------------------------------------------------ HD(base)


@pytest.mark.parametrize(
    "base, ours",
    [
        (lambda p: torch.optim.SGD(p, lr=0.05), lambda p: HDSGD(p, lr=0.05, hypergrad_lr=0.02)),
        (
            lambda p: torch.optim.SGD(p, lr=0.02, momentum=0.9, nesterov=True, weight_decay=0.1),
            lambda p: HDSGD(
                p, lr=0.02, hypergrad_lr=0.02, momentum=0.9, nesterov=True, weight_decay=0.1
            ),
        ),
        (
            lambda p: torch.optim.Adam(p, lr=0.01, weight_decay=0.1),
            lambda p: HDAdam(p, lr=0.01, hypergrad_lr=0.02, weight_decay=0.1),
        ),
    ],
    ids=["SGD", "Nesterov+wd", "Adam+wd"],
)
def test_hd_over_a_base_equals_the_direct_optimizer(base, ours) -> None:
    beta = 0.02
    wrapped = run(lambda p: HD(base(p), hypergrad_lr=beta))
    direct = run(ours)
    assert max(direct[1]) != min(direct[1]), "η must move"
    # u = w_before − w_after rounds at the parameters' scale: equal up to a few ulps
    assert_same_run(wrapped, direct, rtol=1e-10)


def test_hd_per_group_keeps_one_eta_per_group() -> None:
    init, loss_fn = make_problem()
    params = [torch.nn.Parameter(p.clone()) for p in init]
    base = torch.optim.SGD([{"params": params[:2], "lr": 0.05}, {"params": params[2:], "lr": 0.01}])
    optimizer = HD(base, hypergrad_lr=0.02, per_group=True)
    with pytest.raises(ValueError, match="per_group=True"):
        HD(copy.deepcopy(base), hypergrad_lr=0.02)
    for step in range(8):
        optimizer.zero_grad()
        loss_fn(params, step).backward()
        optimizer.step()
    rates = [float(r) for r in optimizer.learning_rates]
    assert len(rates) == 2 and rates[0] != 0.05 and rates[1] != 0.01
    report = optimizer.diagnostics()
    assert report["effective_lr/group1"] == rates[1]
    assert [g["lr"] for g in base.param_groups] == [0.05, 0.01], "base lrs are restored"


def test_hd_refuses_bases_it_cannot_probe() -> None:
    params = [torch.nn.Parameter(torch.zeros(3))]
    with pytest.raises(TypeError, match="torch.optim.Optimizer instance"):
        HD(object(), hypergrad_lr=1e-3)
    with pytest.raises(ValueError, match="LBFGS"):
        HD(torch.optim.LBFGS(params), hypergrad_lr=1e-3)
    with pytest.raises(ValueError, match="sets its own"):
        HD(HDSGD(params), hypergrad_lr=1e-3)
    with pytest.raises(ValueError, match="maximize"):
        HD(torch.optim.SGD(params, lr=0.1, maximize=True), hypergrad_lr=1e-3)


# ------------------------------------------------------------------------- the property

OPTIMIZERS = {
    "HDSGD": lambda p, lr, beta: HDSGD(p, lr=lr, hypergrad_lr=beta),
    "HDSGD+momentum": lambda p, lr, beta: HDSGD(p, lr=lr, hypergrad_lr=beta, momentum=0.9),
    "HDAdam": lambda p, lr, beta: HDAdam(p, lr=lr, hypergrad_lr=beta),
    "HD(Adam)": lambda p, lr, beta: HD(torch.optim.Adam(p, lr=lr), hypergrad_lr=beta),
}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(sorted(OPTIMIZERS)),
    seed=st.integers(0, 10_000),
    lr=st.sampled_from([0.0, 1e-4, 1e-2, 1.0]),
    beta=st.floats(1e-10, 1e4, allow_nan=False),
    scale=st.sampled_from([1e-8, 1.0, 1e8]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
# found by hypothesis: dot products of +inf and -inf (math.fsum raised ValueError), and an η
# finite on the host but past float32's range (the update kernel raised RuntimeError)
@example(name="HDSGD", seed=1900, lr=0.0, beta=3805.0, scale=1.0, dtype=torch.float32)
@example(name="HDSGD", seed=0, lr=0.0, beta=3557.0, scale=1.0, dtype=torch.float32)
def test_eta_is_never_negative_or_nan(name, seed, lr, beta, scale, dtype) -> None:
    """Random problems and extreme loss scales: every η an optimizer holds — after a step, or
    after refusing a diverged one — is ≥ 0 and not NaN."""
    init, loss_fn = make_problem(seed, scale)
    params = [torch.nn.Parameter(p.clone().to(dtype)) for p in init]
    optimizer = OPTIMIZERS[name](params, lr, beta)
    for step in range(6):
        optimizer.zero_grad()
        try:
            loss_fn([p.double() for p in params], step).backward()
            optimizer.step()
        except FloatingPointError:
            pass
        eta = optimizer.diagnostics()["effective_lr"]
        assert eta >= 0.0 and not math.isnan(eta), f"{name}: η = {eta} at step {step}"


def test_gradients_zeroed_in_place_are_detected_and_then_copied() -> None:
    """HDSGD keeps the previous gradient tensor itself (the next backward normally allocates
    new ones). With zero_grad(set_to_none=False) that tensor is overwritten in place: the
    step that notices skips its η update, and from then on the gradients are copied, so h
    is again −g_t·g_{t−1}."""
    init, loss_fn = make_problem()
    params = [torch.nn.Parameter(p.clone()) for p in init]
    optimizer = HDSGD(params, lr=0.05, hypergrad_lr=0.02)
    previous, reports = None, []
    for step in range(4):
        optimizer.zero_grad(set_to_none=False)
        loss_fn(params, step).backward()
        grads = [p.grad.clone() for p in params]
        optimizer.step()
        reports.append((optimizer.diagnostics(), grads, previous))
        previous = grads
    assert reports[1][0]["hypergradient"] == 0.0
    assert reports[1][0]["effective_lr"] == reports[0][0]["effective_lr"]
    for report, grads, before in reports[2:]:
        expected = -sum(float((g * u).sum()) for g, u in zip(grads, before, strict=True))
        assert report["hypergradient"] == pytest.approx(expected, rel=1e-12)
