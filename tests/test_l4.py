"""L4Adam, L4Mom and the L4 wrapper against a float64 reference written straight from the
paper's equations (Rolinek & Martius 2018, Eqs. 5-7, Algorithm 1), plus the properties the
paper states (affine invariance, independence of |v|) and the safety/state contracts."""

from __future__ import annotations

import copy
import inspect
import math
import re
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from hypothesis import given, settings
from hypothesis import strategies as st

from lrkit.methods.l4 import (
    L4,
    L4Adam,
    L4Mom,
    forget_l_min,
    l4_step_size,
    limit_growth,
    next_envelope,
    update_l_min,
)
from lrkit.methods.registry import METHODS

DOCS = Path(__file__).resolve().parents[1] / "docs" / "l4.md"


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny matrices: extra intra-op threads only wait on each other (badly on a busy CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------ problem


def make_problem(seed: int = 0, dtype: torch.dtype = torch.float64):
    """A tanh MLP 5-8-2 regression on 4 fixed mini-batches of 16 (cycled), so the loss
    fluctuates between steps and L_min's min and forgetting both matter."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 5, generator=gen, dtype=torch.float64)
    y = torch.sin(x @ torch.randn(5, 2, generator=gen, dtype=torch.float64))
    y = y + 0.1 * torch.randn(64, 2, generator=gen, dtype=torch.float64)
    init = [
        0.5 * torch.randn(5, 8, generator=gen, dtype=torch.float64),
        0.1 * torch.randn(8, generator=gen, dtype=torch.float64),
        0.5 * torch.randn(8, 2, generator=gen, dtype=torch.float64),
        0.1 * torch.randn(2, generator=gen, dtype=torch.float64),
    ]
    x, y = x.to(dtype), y.to(dtype)
    init = [p.to(dtype) for p in init]

    def loss_fn(params: list[torch.Tensor], step: int) -> torch.Tensor:
        rows = slice(16 * (step % 4), 16 * (step % 4) + 16)
        w1, b1, w2, b2 = params
        return ((torch.tanh(x[rows] @ w1 + b1) @ w2 + b2 - y[rows]) ** 2).mean()

    return init, loss_fn


def run_fast(
    make_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
    steps: int,
    *,
    seed: int = 0,
    loss_scale: float = 1.0,
    dtype: torch.dtype = torch.float64,
):
    """Trains the problem with an lrkit optimizer; returns final params and per-step η."""
    init, loss_fn = make_problem(seed, dtype)
    params = [torch.nn.Parameter(p.clone()) for p in init]
    optimizer = make_optimizer(params)
    etas = []
    for step in range(1, steps + 1):

        def closure(step=step):
            optimizer.zero_grad()
            loss = loss_fn(params, step) * loss_scale
            loss.backward()
            return loss

        optimizer.step(closure)
        etas.append(optimizer.diagnostics()["effective_lr"])
    return [p.detach() for p in params], etas


# ---------------------------------------------------------------------------- reference


def reference_run(
    steps: int,
    direction: str,
    *,
    seed: int = 0,
    alpha: float = 0.15,
    gamma: float = 0.9,
    gamma0: float = 0.75,
    tau: float = 1000.0,
    epsilon: float = 1e-12,
    betas: tuple[float, float] = (0.9, 0.999),
    adam_epsilon: float = 1e-4,
    weight_decay: float = 0.0,
):
    """L4Adam / L4Mom from the paper's equations, float64, one Python loop per parameter.

    L_min ← γ0·L (t = 1) or min(L_min, L); g = m̂; v = m̂/(sqrt(û) + ε_a) (Adam) or m̂ (Mom);
    η = α(L − γ·L_min)/(g·v + ε), 0 if g·v ≤ 0; w ← w − η·v; then L_min ← (1 + 1/τ)·L_min.
    Weight decay: the loss is L + wd/2·|w|².
    """
    init, loss_fn = make_problem(seed)
    beta1, beta2 = betas
    w = [p.clone() for p in init]
    m = [torch.zeros_like(p) for p in w]
    u = [torch.zeros_like(p) for p in w]
    l_min = None
    etas = []
    for t in range(1, steps + 1):
        leaves = [p.clone().requires_grad_() for p in w]
        loss = loss_fn(leaves, t)
        loss = loss + 0.5 * weight_decay * sum((p * p).sum() for p in leaves)
        grads = torch.autograd.grad(loss, leaves)
        value = loss.item()
        directions, estimates = [], []
        for i in range(len(w)):
            m[i] = beta1 * m[i] + (1 - beta1) * grads[i]
            u[i] = beta2 * u[i] + (1 - beta2) * grads[i] ** 2
            m_hat = m[i] / (1 - beta1**t)
            u_hat = u[i] / (1 - beta2**t)
            estimates.append(m_hat)
            if direction == "adam":
                directions.append(m_hat / (torch.sqrt(u_hat) + adam_epsilon))
            else:
                directions.append(m_hat)
        l_min = gamma0 * value if t == 1 else min(l_min, value)
        dot = sum(float((g * v).sum()) for g, v in zip(estimates, directions, strict=True))
        eta = alpha * (value - gamma * l_min) / (dot + epsilon) if dot > 0 else 0.0
        w = [p - eta * v for p, v in zip(w, directions, strict=True)]
        etas.append(eta)
        l_min = l_min * (1 + 1 / tau)
    return w, etas


def reference_wrapper_run(steps: int, base_direction: Callable, *, seed: int = 0, **hp):
    """L4 over a base rule given as ``base_direction(t, w, g) -> v`` (its update at lr 1),
    g = L4's own bias-corrected EMA of the raw gradient (β = 0.9)."""
    alpha, gamma, gamma0, tau, epsilon = (
        hp.get("alpha", 0.15),
        hp.get("gamma", 0.9),
        hp.get("gamma0", 0.75),
        hp.get("tau", 1000.0),
        hp.get("epsilon", 1e-12),
    )
    init, loss_fn = make_problem(seed)
    w = [p.clone() for p in init]
    m = [torch.zeros_like(p) for p in w]
    l_min = None
    for t in range(1, steps + 1):
        leaves = [p.clone().requires_grad_() for p in w]
        loss = loss_fn(leaves, t)
        grads = torch.autograd.grad(loss, leaves)
        value = loss.item()
        directions = base_direction(t, w, grads)
        estimates = []
        for i in range(len(w)):
            m[i] = 0.9 * m[i] + 0.1 * grads[i]
            estimates.append(m[i] / (1 - 0.9**t))
        l_min = gamma0 * value if t == 1 else min(l_min, value)
        dot = sum(float((g * v).sum()) for g, v in zip(estimates, directions, strict=True))
        eta = alpha * (value - gamma * l_min) / (dot + epsilon) if dot > 0 else 0.0
        w = [p - eta * v for p, v in zip(w, directions, strict=True)]
        l_min = l_min * (1 + 1 / tau)
    return w


def sgd_momentum_direction(momentum: float, weight_decay: float) -> Callable:
    buffers: list[torch.Tensor] = []

    def direction(t, w, grads):
        for i, (p, g) in enumerate(zip(w, grads, strict=True)):
            d = g + weight_decay * p
            if t == 1:
                buffers.append(d.clone())
            else:
                buffers[i] = momentum * buffers[i] + d
        return [b.clone() for b in buffers]

    return direction


def adamw_direction(weight_decay: float, eps: float, betas=(0.9, 0.999)) -> Callable:
    m: list[torch.Tensor] = []
    u: list[torch.Tensor] = []

    def direction(t, w, grads):
        if t == 1:
            m.extend(torch.zeros_like(p) for p in w)
            u.extend(torch.zeros_like(p) for p in w)
        out = []
        for i, (p, g) in enumerate(zip(w, grads, strict=True)):
            m[i] = betas[0] * m[i] + (1 - betas[0]) * g
            u[i] = betas[1] * u[i] + (1 - betas[1]) * g * g
            m_hat = m[i] / (1 - betas[0] ** t)
            u_hat = u[i] / (1 - betas[1] ** t)
            out.append(weight_decay * p + m_hat / (torch.sqrt(u_hat) + eps))
        return out

    return direction


def assert_close_lists(actual, expected, rtol: float, atol: float = 0.0) -> None:
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=rtol, atol=atol)


# ------------------------------------------------------------------------ pure functions


def test_step_size_formula_and_safe_step():
    loss, l_min = torch.tensor(2.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    dot = torch.tensor(4.0, dtype=torch.float64)
    eta = l4_step_size(loss, l_min, dot, alpha=0.15, gamma=0.9, epsilon=1e-12)
    assert eta.item() == pytest.approx(0.15 * (2.0 - 0.9) / (4.0 + 1e-12), rel=1e-12)
    for bad in (0.0, -3.0, float("nan")):
        eta = l4_step_size(loss, l_min, torch.tensor(bad), 0.15, 0.9, 1e-12)
        assert eta.item() == 0.0


def test_step_size_does_not_depend_on_the_magnitude_of_v():
    loss, l_min = torch.tensor(3.0, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64)
    dot = 0.7
    updates = [
        (
            l4_step_size(loss, l_min, torch.tensor(dot * c, dtype=torch.float64), 0.15, 0.9, 0.0)
            * c
        ).item()
        for c in (1e-6, 1.0, 1e6)
    ]
    assert updates == pytest.approx([updates[1]] * 3, rel=1e-14)


def test_l_min_update_and_forgetting():
    loss = torch.tensor(4.0)
    assert update_l_min(None, loss, gamma0=0.75).item() == 3.0
    assert update_l_min(torch.tensor(5.0), loss, 0.75).item() == 4.0
    assert update_l_min(torch.tensor(2.0), loss, 0.75).item() == 2.0
    assert forget_l_min(torch.tensor(2.0), tau=1000.0).item() == pytest.approx(2.002)


# ---------------------------------------------------------------- fast path = reference


@pytest.mark.parametrize("foreach", [False, True])
@pytest.mark.parametrize("direction", ["adam", "momentum"])
def test_matches_float64_reference_for_200_steps(direction, foreach):
    factory = L4Adam if direction == "adam" else L4Mom
    params, etas = run_fast(lambda p: factory(p, foreach=foreach), 200)
    expected_params, expected_etas = reference_run(200, direction)
    assert max(expected_etas) > 10 * min(expected_etas) > 0  # η really adapts
    assert etas == pytest.approx(expected_etas, rel=1e-9)
    assert_close_lists(params, expected_params, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("direction", ["adam", "momentum"])
def test_weight_decay_is_an_l2_term_in_the_loss(direction):
    factory = L4Adam if direction == "adam" else L4Mom
    params, etas = run_fast(lambda p: factory(p, weight_decay=0.05), 60)
    expected_params, expected_etas = reference_run(60, direction, weight_decay=0.05)
    assert etas == pytest.approx(expected_etas, rel=1e-9)
    assert_close_lists(params, expected_params, rtol=1e-9, atol=1e-12)


def test_first_step_by_hand_and_forgetting_after_the_step():
    """Step 1 uses L_min = γ0·L exactly (the forgetting factor comes after η)."""
    w0 = torch.tensor([3.0, -4.0], dtype=torch.float64)
    w = torch.nn.Parameter(w0.clone())
    optimizer = L4Mom([w])
    loss = optimizer.step(lambda: _half_square(optimizer, w))
    value = loss.item()  # 12.5, gradient g = w0, m̂ = g at t = 1
    eta = 0.15 * (value - 0.9 * 0.75 * value) / (float(w0 @ w0) + 1e-12)
    torch.testing.assert_close(w.detach(), w0 - eta * w0, rtol=1e-15, atol=0)
    diagnostics = optimizer.diagnostics()
    assert diagnostics["effective_lr"] == pytest.approx(eta, rel=1e-15)
    assert diagnostics["l_min"] == pytest.approx(0.75 * value, rel=1e-15)
    assert diagnostics["l_min_next"] == pytest.approx(0.75 * value * 1.001, rel=1e-15)
    second = optimizer.step(lambda: _half_square(optimizer, w)).item()
    assert optimizer.diagnostics()["l_min"] == pytest.approx(min(0.75 * value * 1.001, second))


def _half_square(optimizer, w):
    optimizer.zero_grad()
    loss = 0.5 * (w * w).sum()
    loss.backward()
    return loss


# -------------------------------------------------------------------------- properties


@pytest.mark.parametrize("direction", ["adam", "momentum"])
@pytest.mark.parametrize("scale", [1e-3, 0.5, 1e3])
def test_affine_invariance_of_the_loss(direction, scale):
    """Paper Sec. 2.3: L → a·L (a > 0) leaves the trajectory unchanged (exactly so with
    ε = 0 and a negligible Adam epsilon)."""
    if direction == "adam":

        def factory(p):
            return L4Adam(p, epsilon=0.0, adam_epsilon=1e-30)
    else:

        def factory(p):
            return L4Mom(p, epsilon=0.0)

    reference, _ = run_fast(factory, 100)
    scaled, _ = run_fast(factory, 100, loss_scale=scale)
    assert_close_lists(scaled, reference, rtol=1e-8, atol=1e-12)


class ScaledSGD(torch.optim.Optimizer):
    """w ← w − lr·c·g: the same direction as SGD with magnitude scaled by c."""

    def __init__(self, params, lr: float, c: float):
        super().__init__(params, {"lr": lr, "c": c})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"] * group["c"])


def test_wrapper_step_does_not_depend_on_the_magnitude_of_v():
    runs = [
        run_fast(lambda p, c=c: L4(ScaledSGD(p, lr=0.1, c=c), epsilon=0.0), 50)[0]
        for c in (1e-3, 1.0, 1e3)
    ]
    assert_close_lists(runs[0], runs[1], rtol=1e-9, atol=1e-12)
    assert_close_lists(runs[2], runs[1], rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------- wrapper


def test_wrapper_over_adam_equals_l4adam():
    """torch.optim.Adam's step m̂/(sqrt(v̂) + eps) is L4Adam's v when eps = 1e-4, and the
    wrapper's gradient EMA (β 0.9) is L4Adam's m̂."""
    wrapped, wrapped_etas = run_fast(lambda p: L4(torch.optim.Adam(p, lr=3e-4, eps=1e-4)), 200)
    direct, direct_etas = run_fast(lambda p: L4Adam(p), 200)
    assert wrapped_etas == pytest.approx(direct_etas, rel=1e-7)
    assert_close_lists(wrapped, direct, rtol=1e-7, atol=1e-10)


class SubclassedAdam(torch.optim.Adam):
    """torch's Adam under another class: L4 keeps its own gradient EMA for it."""


def test_wrapper_reading_adams_exp_avg_takes_the_steps_of_its_own_ema():
    """L4(Adam) reads Adam's exp_avg as g instead of keeping the same EMA twice."""
    read, read_etas = run_fast(lambda p: L4(torch.optim.Adam(p, eps=1e-4)), 60)
    own, own_etas = run_fast(lambda p: L4(SubclassedAdam(p, eps=1e-4)), 60)
    assert read_etas == own_etas
    _assert_same(read, own)


def test_wrapper_starts_its_own_ema_when_the_base_stops_keeping_it():
    init, loss_fn = make_problem()
    params = [torch.nn.Parameter(p.clone()) for p in init]
    optimizer = L4(torch.optim.Adam(params, eps=1e-4))
    for step in range(1, 4):
        optimizer.step(_closure(optimizer, params, loss_fn, step))
    assert all(set(optimizer.state[p]) == {"step"} for p in params)
    optimizer.param_groups[0]["betas"] = (0.5, 0.999)  # no longer L4's decay (0.9)
    optimizer.step(_closure(optimizer, params, loss_fn, 4))
    for p in params:
        assert optimizer.state[p]["step"] == 1
        torch.testing.assert_close(optimizer.state[p]["grad_avg"], 0.1 * p.grad)
    assert all(torch.isfinite(p).all() for p in params)


def test_wrapper_keeps_sgd_momentum_and_coupled_weight_decay():
    params, _ = run_fast(
        lambda p: L4(torch.optim.SGD(p, lr=0.01, momentum=0.9, weight_decay=0.1)), 100
    )
    expected = reference_wrapper_run(100, sgd_momentum_direction(0.9, 0.1))
    assert_close_lists(params, expected, rtol=1e-7, atol=1e-10)


def test_wrapper_keeps_adamw_decoupled_weight_decay():
    params, _ = run_fast(
        lambda p: L4(torch.optim.AdamW(p, lr=1e-3, weight_decay=0.1, eps=1e-4)), 100
    )
    expected = reference_wrapper_run(100, adamw_direction(0.1, 1e-4))
    assert_close_lists(params, expected, rtol=1e-7, atol=1e-10)
    without_decay = reference_wrapper_run(100, adamw_direction(0.0, 1e-4))
    assert not torch.allclose(params[0], without_decay[0], rtol=1e-4)


@pytest.mark.parametrize("tensor_lr", [False, True])
def test_wrapper_restores_the_base_learning_rates(tensor_lr):
    init, loss_fn = make_problem()
    params = [torch.nn.Parameter(p.clone()) for p in init]
    lr = torch.tensor(0.003, dtype=torch.float64) if tensor_lr else 0.003
    base = torch.optim.Adam(
        [{"params": params[:2]}, {"params": params[2:], "lr": 0.02}], lr=lr, foreach=False
    )
    optimizer = L4(base)
    for step in range(1, 4):
        optimizer.step(_closure(optimizer, params, loss_fn, step))
    assert float(base.param_groups[0]["lr"]) == 0.003
    assert base.param_groups[1]["lr"] == 0.02
    assert optimizer.param_groups is base.param_groups


def _closure(optimizer, params, loss_fn, step, counter=None):
    def closure():
        if counter is not None:
            counter.append(step)
        optimizer.zero_grad()
        loss = loss_fn(params, step)
        loss.backward()
        return loss

    return closure


def test_wrapper_rejects_bases_it_cannot_read():
    params = [torch.nn.Parameter(torch.zeros(2))]
    with pytest.raises(TypeError, match="torch.optim.Optimizer instance"):
        L4("adam")
    with pytest.raises(ValueError, match="LBFGS"):
        L4(torch.optim.LBFGS(params))
    with pytest.raises(ValueError, match="maximize=True"):
        L4(torch.optim.SGD(params, lr=0.1, maximize=True))
    with pytest.raises(ValueError, match="lr_decay"):
        L4(torch.optim.Adagrad(params, lr_decay=0.1))
    with pytest.raises(ValueError, match="already sets its own step size"):
        L4(L4Mom(params))


# ------------------------------------------------------------------------ step contract


def optimizer_factories():
    return {
        "l4adam": lambda p: L4Adam(p),
        "l4adam_foreach": lambda p: L4Adam(p, foreach=True),
        "l4mom": lambda p: L4Mom(p, foreach=False),
        "l4_sgd": lambda p: L4(torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=1e-3)),
        "l4_adam": lambda p: L4(torch.optim.Adam(p, eps=1e-4)),
    }


@pytest.mark.parametrize("name", list(optimizer_factories()))
def test_closure_is_called_exactly_once_per_step(name):
    init, loss_fn = make_problem(dtype=torch.float32)
    params = [torch.nn.Parameter(p.clone()) for p in init]
    optimizer = optimizer_factories()[name](params)
    calls: list[int] = []
    for step in range(1, 6):
        returned = optimizer.step(_closure(optimizer, params, loss_fn, step, calls))
        assert isinstance(returned, torch.Tensor) and returned.requires_grad
    assert calls == [1, 2, 3, 4, 5]
    optimizer.zero_grad()
    loss = loss_fn(params, 6)
    loss.backward()
    assert optimizer.step(loss=loss) is loss
    assert optimizer.diagnostics()["step"] == 6.0


def _snapshot(optimizer, params):
    return [p.detach().clone() for p in params], copy.deepcopy(optimizer.state_dict())


def _assert_same(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    else:
        assert a == b or (a != a and b != b)


BAD_INPUTS = {
    "negative loss": (ValueError, "non-negative loss"),
    "nan loss": (FloatingPointError, "non-finite loss"),
    "inf loss": (FloatingPointError, "non-finite loss"),
    "nan grad": (FloatingPointError, "non-finite gradient"),
    "inf grad": (FloatingPointError, "non-finite gradient"),
}


@pytest.mark.parametrize("bad", list(BAD_INPUTS))
@pytest.mark.parametrize("name", ["l4adam", "l4adam_foreach", "l4mom", "l4_sgd"])
def test_bad_inputs_raise_before_anything_changes(name, bad):
    init, loss_fn = make_problem(dtype=torch.float32)
    params = [torch.nn.Parameter(p.clone()) for p in init]
    optimizer = optimizer_factories()[name](params)
    for step in range(1, 4):
        optimizer.step(_closure(optimizer, params, loss_fn, step))
    before_params, before_state = _snapshot(optimizer, params)
    before_diagnostics = optimizer.diagnostics()

    def closure():
        optimizer.zero_grad()
        loss = loss_fn(params, 4)
        loss.backward()
        if bad == "negative loss":
            return loss - 10.0
        if bad.endswith("loss"):
            return loss * float(bad.split()[0])
        params[2].grad[0, 1] = float(bad.split()[0])
        return loss

    error, message = BAD_INPUTS[bad]
    with pytest.raises(error, match=message):
        optimizer.step(closure)
    after_params, after_state = _snapshot(optimizer, params)
    _assert_same(after_params, before_params)
    _assert_same(after_state, before_state)
    assert optimizer.diagnostics() == pytest.approx(before_diagnostics, nan_ok=True)


def test_gradient_error_names_the_parameter():
    model = torch.nn.Linear(3, 1)
    optimizer = L4Adam([{"params": list(model.named_parameters())}])
    model(torch.ones(1, 3)).sum().backward()
    model.bias.grad.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="'bias'"):
        optimizer.step(loss=torch.tensor(1.0))


def test_step_needs_exactly_one_scalar_loss():
    w = torch.nn.Parameter(torch.ones(2))
    optimizer = L4Mom([w])
    (w * w).sum().backward()
    with pytest.raises(ValueError, match="needs the current mini-batch loss"):
        optimizer.step()
    with pytest.raises(ValueError, match="not both"):
        optimizer.step(lambda: torch.tensor(1.0), loss=torch.tensor(1.0))
    with pytest.raises(ValueError, match="scalar loss"):
        optimizer.step(loss=torch.ones(3))
    assert optimizer.diagnostics()["step"] == 0.0


def test_zero_gradient_is_a_safe_step_that_updates_the_moments():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    optimizer = L4Adam([w])
    for expected_skips in (1, 2):
        w.grad = torch.zeros(2)
        optimizer.step(loss=torch.tensor(1.0))
        assert torch.equal(w.detach(), torch.tensor([1.0, 2.0]))
        assert optimizer.diagnostics()["skipped_steps"] == expected_skips
        assert optimizer.diagnostics()["effective_lr"] == 0.0
    assert optimizer.state[w]["step"] == 2
    w.grad = torch.tensor([0.5, -0.5])
    optimizer.step(loss=torch.tensor(1.0))
    assert not torch.equal(w.detach(), torch.tensor([1.0, 2.0]))
    assert optimizer.diagnostics()["skipped_steps"] == 2


class AscentSGD(torch.optim.SGD):
    """A base whose update goes uphill (g·v < 0), as a wrongly signed base would."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                p.add_(p.grad, alpha=group["lr"])


def test_wrapper_skips_uphill_directions():
    init, loss_fn = make_problem()
    params = [torch.nn.Parameter(p.clone()) for p in init]
    optimizer = L4(AscentSGD(params, lr=0.1))
    for step in range(1, 4):
        optimizer.step(_closure(optimizer, params, loss_fn, step))
        assert_close_lists([p.detach() for p in params], init, rtol=0, atol=0)
    assert optimizer.diagnostics()["skipped_steps"] == 3
    assert optimizer.diagnostics()["effective_lr"] == 0.0


# ----------------------------------------------------------------------- state dicts


@pytest.mark.parametrize("name", list(optimizer_factories()))
def test_state_dict_resume_is_bit_identical(name):
    init, loss_fn = make_problem(dtype=torch.float32)
    factory = optimizer_factories()[name]
    params = [torch.nn.Parameter(p.clone()) for p in init]
    optimizer = factory(params)
    for step in range(1, 8):
        optimizer.step(_closure(optimizer, params, loss_fn, step))
    saved_params = [p.detach().clone() for p in params]
    saved_state = copy.deepcopy(optimizer.state_dict())
    for step in range(8, 16):
        optimizer.step(_closure(optimizer, params, loss_fn, step))

    resumed = [torch.nn.Parameter(p.clone()) for p in saved_params]
    fresh = factory(resumed)
    fresh.load_state_dict(saved_state)
    for step in range(8, 16):
        fresh.step(_closure(fresh, resumed, loss_fn, step))
    _assert_same([p.detach() for p in resumed], [p.detach() for p in params])
    _assert_same(fresh.state_dict(), optimizer.state_dict())
    assert fresh.diagnostics() == optimizer.diagnostics()


def test_state_dict_from_another_kind_is_rejected():
    w = torch.nn.Parameter(torch.ones(2))
    mom = L4Mom([w])
    with pytest.raises(ValueError, match="direction 'momentum'"):
        L4Adam([w]).load_state_dict(mom.state_dict())
    with pytest.raises(ValueError, match="no 'l4' entry"):
        L4Adam([w]).load_state_dict(torch.optim.Adam([w]).state_dict())
    with pytest.raises(ValueError, match="no 'l4' entry"):
        L4(torch.optim.Adam([w])).load_state_dict(torch.optim.Adam([w]).state_dict())


# ------------------------------------------------------------------ groups and dtypes


def test_one_global_step_size_over_all_groups():
    one_group, _ = run_fast(lambda p: L4Adam(p), 40)
    two_groups, _ = run_fast(lambda p: L4Adam([{"params": p[:2]}, {"params": p[2:]}]), 40)
    assert_close_lists(two_groups, one_group, rtol=1e-12, atol=1e-14)


def test_per_group_alpha_scales_that_groups_step():
    init, loss_fn = make_problem()
    params = [torch.nn.Parameter(p.clone()) for p in init]
    optimizer = L4Mom([{"params": params[:2]}, {"params": params[2:], "alpha": 0.0}])
    for step in range(1, 6):
        optimizer.step(_closure(optimizer, params, loss_fn, step))
    assert not torch.equal(params[0].detach(), init[0])
    assert_close_lists([p.detach() for p in params[2:]], init[2:], rtol=0, atol=0)
    diagnostics = optimizer.diagnostics()
    assert diagnostics["effective_lr/group1"] == 0.0
    assert diagnostics["effective_lr/group0"] == diagnostics["effective_lr"] > 0


def test_global_hyperparameters_must_agree_across_groups():
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="gamma is global"):
        L4Adam([{"params": [a]}, {"params": [b], "gamma": 0.5}])
    optimizer = L4Adam([a])
    with pytest.raises(ValueError, match="tau is global"):
        optimizer.add_param_group({"params": [b], "tau": 10.0})
    assert len(optimizer.param_groups) == 1
    with pytest.raises(ValueError, match="gamma"):
        L4Mom([a], gamma=1.5)
    with pytest.raises(ValueError, match="adam_epsilon"):
        L4Adam([a], adam_epsilon=0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", ["l4adam", "l4adam_foreach", "l4mom", "l4_adam"])
def test_trains_in_low_precision_with_float64_scalar_state(name, dtype):
    """Low-precision parameters train; L_min and η are float64 (g·v of float32 gradients of
    1e20 is 1e40, past float32's range)."""
    torch.manual_seed(0)
    x = torch.randn(128, 6)
    labels = (x[:, 0] + x[:, 1] > 0).long()
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    model = model.to(dtype)
    optimizer = optimizer_factories()[name](list(model.parameters()))

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x.to(dtype)).float(), labels)
        loss.backward()
        return loss

    first = optimizer.step(closure).item()
    for _ in range(60):
        last = optimizer.step(closure).item()
    assert last < 0.5 * first
    assert all(p.dtype == dtype for p in model.parameters())
    assert optimizer._l4["l_min"].dtype == torch.float64
    assert optimizer._l4["step_size_per_alpha"].dtype == torch.float64


def test_float64_parameters_keep_float64_scalar_state():
    w = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    optimizer = L4Mom([w])
    optimizer.step(lambda: _half_square(optimizer, w))
    assert optimizer._l4["l_min"].dtype == torch.float64


# --------------------------------------------------------------------------- DDP


def test_loss_is_averaged_over_ranks_before_use(monkeypatch):
    """Simulates a second rank whose loss is 3.0: L4 must use the mean of both losses."""
    calls = []

    def fake_all_reduce(tensor, op=None):
        calls.append(op)
        tensor.add_(3.0)

    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "all_reduce", fake_all_reduce)
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    optimizer = L4Mom([w])
    returned = optimizer.step(lambda: _half_square(optimizer, w))
    assert returned.item() == 2.5  # the caller's own loss, not modified in place
    assert optimizer.diagnostics()["loss"] == pytest.approx((2.5 + 3.0) / 2)
    assert calls == [dist.ReduceOp.SUM]
    local = L4Mom([w], all_reduce_loss=False)
    local.step(lambda: _half_square(local, w))
    assert len(calls) == 1


# ------------------------------------------------------------------- registry, docs


@pytest.mark.parametrize(
    ("name", "cls", "base"), [("l4adam", L4Adam, "adam"), ("l4mom", L4Mom, "momentum")]
)
def test_registered_with_the_constructor_defaults(name, cls, base):
    spec = METHODS[name]
    assert spec.kind == "lrkit" and spec.base == base and spec.make_optimizer is cls
    signature = inspect.signature(cls)
    for key, value in spec.defaults.items():
        assert signature.parameters[key].default == value
    optimizer = spec.build_optimizer([torch.nn.Parameter(torch.ones(2))])
    assert isinstance(optimizer, cls)


def test_docs_examples_run():
    """Every python block of docs/l4.md (the example and the fused=True snippet) runs."""
    text = DOCS.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(blocks) >= 2, "docs/l4.md must contain its runnable python examples"
    for block in blocks:
        namespace: dict = {}
        exec(compile(textwrap.dedent(block), str(DOCS), "exec"), namespace)
        assert math.isfinite(namespace["optimizer"].diagnostics()["effective_lr"])


# ----------------------------------------------- refusals that change nothing (issue 7)


def _trained(factory, steps: int = 3, dtype: torch.dtype = torch.float32):
    init, loss_fn = make_problem(dtype=dtype)
    params = [torch.nn.Parameter(p.clone()) for p in init]
    optimizer = factory(params)
    for step in range(1, steps + 1):
        optimizer.step(_closure(optimizer, params, loss_fn, step))
    return optimizer, params, loss_fn


FOREIGN_STATES = {
    "L4Mom into L4Adam": (lambda p: L4Adam(p), lambda p: L4Mom(p), "direction 'momentum'"),
    "L4Adam into L4(AdamW)": (
        lambda p: L4(torch.optim.AdamW(p, eps=1e-4)),
        lambda p: L4Adam(p),
        "lacks",
    ),
    "L4(SGD) into L4(AdamW)": (
        lambda p: L4(torch.optim.AdamW(p, eps=1e-4)),
        lambda p: L4(torch.optim.SGD(p, lr=1.0)),
        "torch.optim.sgd.SGD",
    ),
    "L4(SGD) into L4Adam": (
        lambda p: L4Adam(p),
        lambda p: L4(torch.optim.SGD(p, lr=1.0)),
        "'wrapper'",
    ),
    "Adam into L4(Adam)": (
        lambda p: L4(torch.optim.Adam(p)),
        lambda p: torch.optim.Adam(p),
        "no 'l4' entry",
    ),
}


@pytest.mark.parametrize("case", list(FOREIGN_STATES))
def test_a_refused_load_changes_nothing_and_the_next_step_works(case):
    """A load that raises must leave the optimizer exactly as it was (torch's groups
    included), so that the next step is the one an untouched twin takes."""
    target_factory, source_factory, message = FOREIGN_STATES[case]
    source, _, _ = _trained(source_factory)
    optimizer, params, loss_fn = _trained(target_factory)
    twin, twin_params, _ = _trained(target_factory)
    before_params, before_state = _snapshot(optimizer, params)
    with pytest.raises(ValueError, match=re.escape(message)):
        optimizer.load_state_dict(source.state_dict())
    _assert_same(_snapshot(optimizer, params), (before_params, before_state))
    optimizer.step(_closure(optimizer, params, loss_fn, 4))
    twin.step(_closure(twin, twin_params, loss_fn, 4))
    _assert_same([p.detach() for p in params], [p.detach() for p in twin_params])


def _state_of_another_model(factory):
    """A state dict of the same optimizer over parameters of other shapes."""
    params = [torch.nn.Parameter(torch.ones(3, 3)) for _ in range(4)]
    optimizer = factory(params)
    optimizer.zero_grad()
    sum((p * p).sum() for p in params).backward()
    optimizer.step(loss=torch.tensor(1.0))
    return optimizer.state_dict()


@pytest.mark.parametrize("name", list(optimizer_factories()))
def test_a_state_saved_for_another_model_is_refused(name):
    factory = optimizer_factories()[name]
    optimizer, params, _ = _trained(factory)
    before = _snapshot(optimizer, params)
    with pytest.raises(ValueError, match="saved for another model"):
        optimizer.load_state_dict(_state_of_another_model(factory))
    _assert_same(_snapshot(optimizer, params), before)


# ---------------------------------------------------------------- the safe step (issue 7)


def test_wrapper_safe_step_leaves_the_parameters_exactly_where_they_were():
    """Adam with eps=0 proposes 0/0 = NaN for a coordinate whose gradient is 0; g·v is NaN, so
    the step is refused — and w must stay w, not w − 0·NaN."""
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    optimizer = L4(torch.optim.Adam([w], eps=0.0))

    def closure():
        optimizer.zero_grad()
        loss = (w[0] - 3.0) ** 2 + 1.0
        loss.backward()
        return loss

    for expected_skips in (1, 2):
        optimizer.step(closure)
        assert torch.equal(w.detach(), torch.tensor([1.0, 2.0]))
        assert optimizer.diagnostics()["skipped_steps"] == expected_skips


def test_wrapper_over_adamw_on_a_float16_model_keeps_finite_parameters():
    """AdamW's default eps (1e-8) is 0 in float16 and so is (1 − β2)·g² for |g| < 1e-2: its
    first update divides 0.1·g by 0 for the weights of the tiny input column."""
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2).to(torch.float16)
    optimizer = L4(torch.optim.AdamW(model.parameters()))
    inputs = torch.randn(8, 4, dtype=torch.float16) * torch.tensor([1e-4, 1.0, 1.0, 1.0]).half()
    before = [p.detach().clone() for p in model.parameters()]

    def closure():
        optimizer.zero_grad()
        loss = model(inputs).float().pow(2).mean()
        loss.backward()
        return loss

    optimizer.step(closure)
    for old, new in zip(before, model.parameters(), strict=True):
        assert torch.isfinite(new).all()
        moved = not torch.equal(old, new.detach())
        assert moved or optimizer.diagnostics()["skipped_steps"] == 1


# ---------------------------------------------- huge and tiny losses (issue 7, Sec. 2.3)


SPIKED = {  # factory, hyperparameters, steps, whether w still moves at the end
    "l4adam": (L4Adam, {}, 200, False),
    "l4adam epsilon=0": (L4Adam, {"epsilon": 0.0}, 700, True),
    "l4mom": (L4Mom, {}, 700, True),
}


@pytest.mark.parametrize("case", list(SPIKED))
def test_a_huge_gradient_in_float32_follows_the_float64_rule(case):
    """One loss scaled by 2e30 (gradient² past float32's range): the float32 run must take
    the steps of the float64 run — no second moment stuck at inf, no g·v = inf — and skip
    none. What the exact rule then does: η is tiny until the spike has left the gradient EMA
    (0.9^k·2e29 below the ordinary gradients, k ≈ 640), then w moves on; but with the
    default ε, L4Adam's û keeps the spike for ~1e5 steps, g·v ≪ ε, and
    η = α(L − γ·L_min)/ε moves w by ~1e-19 per step."""
    factory, hparams, steps, moves = SPIKED[case]
    runs = {}
    for dtype in (torch.float32, torch.float64):
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(20, 5, generator=gen, dtype=torch.float64).to(dtype)
        b = torch.randn(20, generator=gen, dtype=torch.float64).to(dtype)
        w = torch.nn.Parameter(torch.zeros(5, dtype=dtype))
        optimizer = factory([w], **hparams)
        etas, positions = [], []
        for step in range(steps):
            scale = 2e30 if step == 5 else 1.0

            def closure(scale=scale, optimizer=optimizer, w=w, a=a, b=b):
                optimizer.zero_grad()
                loss = scale * ((a @ w - b) ** 2).mean()
                loss.backward()
                return loss

            optimizer.step(closure)
            etas.append(optimizer._l4["step_size_per_alpha"].item())
            positions.append(w.detach().double().clone())
        assert optimizer.diagnostics()["skipped_steps"] == 0
        assert math.isfinite(optimizer.diagnostics()["grad_dot_direction"])
        assert min(etas) > 0
        assert moves != torch.allclose(positions[-50], positions[-1], rtol=1e-4, atol=0)
        runs[dtype] = etas, positions
    (etas32, positions32), (etas64, positions64) = runs[torch.float32], runs[torch.float64]
    assert etas32[:150] == pytest.approx(etas64[:150], rel=1e-3)
    torch.testing.assert_close(positions32[149], positions64[149], rtol=1e-3, atol=1e-5)


# ------------------------------------------- hyperparameters changed later (issue 7)


LATE_CHANGES = {
    "gamma=2": ("l4adam", lambda o: o.param_groups[0].update(gamma=2.0), "gamma"),
    "alpha=-1": ("l4mom", lambda o: o.param_groups[0].update(alpha=-1.0), "alpha"),
    "tau=0": ("l4adam", lambda o: o.param_groups[0].update(tau=0.0), "tau"),
    "betas=(1, 0.999)": ("l4adam", lambda o: o.param_groups[0].update(betas=(1.0, 0.999)), "betas"),
    "beta=-0.1": ("l4mom", lambda o: o.param_groups[0].update(beta=-0.1), "beta"),
    "weight_decay=-1": ("l4mom", lambda o: o.param_groups[0].update(weight_decay=-1.0), "weight"),
    "max_growth=0.5": ("l4adam", lambda o: o.param_groups[0].update(max_growth=0.5), "max_growth"),
    "wrapper gamma=2": ("l4_sgd", lambda o: o.l4_hparams.update(gamma=2.0), "gamma"),
    "wrapper alpha=-1": ("l4_adam", lambda o: o.l4_hparams.update(alpha=-1.0), "alpha"),
    "base maximize": ("l4_adam", lambda o: o.param_groups[0].update(maximize=True), "maximize"),
}


@pytest.mark.parametrize("case", list(LATE_CHANGES))
def test_hyperparameters_changed_after_construction_are_checked_at_the_step(case):
    name, change, message = LATE_CHANGES[case]
    optimizer, params, loss_fn = _trained(optimizer_factories()[name])
    change(optimizer)
    before = _snapshot(optimizer, params)
    calls: list[int] = []
    with pytest.raises(ValueError, match=message):
        optimizer.step(_closure(optimizer, params, loss_fn, 4, calls))
    _assert_same(_snapshot(optimizer, params), before)
    assert calls == []  # refused before the closure ran


def test_wrapper_add_param_group_runs_l4s_checks():
    w = torch.nn.Parameter(torch.ones(2))
    optimizer = L4(torch.optim.Adam([w]))
    with pytest.raises(ValueError, match="maximize"):
        optimizer.add_param_group({"params": [torch.nn.Parameter(torch.ones(2))], "maximize": True})
    complex_param = torch.nn.Parameter(torch.ones(2, dtype=torch.complex64))
    with pytest.raises(ValueError, match="complex"):
        optimizer.add_param_group({"params": [complex_param]})
    assert len(optimizer.param_groups) == 1
    assert optimizer.param_groups is optimizer.base_optimizer.param_groups
    optimizer.add_param_group({"params": [torch.nn.Parameter(torch.ones(3))], "lr": 0.1})
    assert len(optimizer.param_groups) == 2


INVARIANT = {  # L4 with ε = 0 and a negligible Adam epsilon: exactly invariant (Sec. 2.3)
    "adam": lambda p: L4Adam(p, epsilon=0.0, adam_epsilon=1e-300),
    "momentum": lambda p: L4Mom(p, epsilon=0.0),
    "wrapper": lambda p: L4(torch.optim.Adam(p, lr=1e-3, eps=1e-300), epsilon=0.0),
}
INVARIANCE_STEPS = 40


@pytest.fixture(scope="module")
def unscaled_runs():
    return {name: run_fast(f, INVARIANCE_STEPS)[0] for name, f in INVARIANT.items()}


@settings(max_examples=8, deadline=None)
@given(direction=st.sampled_from(list(INVARIANT)), log10_scale=st.floats(-30.0, 30.0))
def test_invariance_to_the_loss_scale_from_1e_30_to_1e30(unscaled_runs, direction, log10_scale):
    """L → a·L leaves the float64 trajectory unchanged for any a in [1e-30, 1e30]."""
    scaled, _ = run_fast(INVARIANT[direction], INVARIANCE_STEPS, loss_scale=10.0**log10_scale)
    assert_close_lists(scaled, unscaled_runs[direction], rtol=1e-8, atol=1e-12)


FLOAT32_INVARIANT = {
    "adam": lambda p: L4Adam(p, epsilon=0.0, adam_epsilon=1e-45),
    "momentum": lambda p: L4Mom(p, epsilon=0.0),
}


@settings(max_examples=8, deadline=None)
@given(direction=st.sampled_from(list(FLOAT32_INVARIANT)), exponent=st.integers(-100, 100))
def test_float32_steps_are_bit_identical_for_loss_scales_2_to_the_k(direction, exponent):
    """In float32 a loss scaled by 2^k (k in [-100, 100], 8e-31 to 1.3e30) scales every
    gradient exactly; the moments kept at a power-of-two scale make the steps bit-identical
    (unscaled, the squares overflow past 2^64 and underflow below 2^-75)."""
    factory = FLOAT32_INVARIANT[direction]
    reference, _ = run_fast(factory, 20, dtype=torch.float32)
    scaled, _ = run_fast(factory, 20, dtype=torch.float32, loss_scale=2.0**exponent)
    _assert_same(scaled, reference)


# -------------------------------------------------------------- the η safeguard (issue 7)


def random_label_run(steps: int, **hparams):
    """Softmax regression 10 → 10 on fresh Gaussian inputs with labels drawn independently
    of them (batch 64): no model beats predicting 1/10 for every class, loss ln 10. Returns
    the η and loss of every step, stopping early at a FloatingPointError (a diverged run)."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = torch.nn.Linear(10, 10)
    optimizer = L4Adam(model.parameters(), **hparams)
    etas, losses = [], []
    for _ in range(steps):
        inputs = torch.randn(64, 10, generator=gen)
        labels = torch.randint(0, 10, (64,), generator=gen)

        def closure(inputs=inputs, labels=labels):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(inputs), labels)
            loss.backward()
            return loss

        try:
            losses.append(float(optimizer.step(closure).detach()))
        except FloatingPointError:
            break
        etas.append(optimizer.diagnostics()["effective_lr"])
    return etas, losses


def test_max_growth_keeps_eta_bounded_where_the_papers_rule_runs_away():
    """Where the loss cannot fall below chance, L_min (the luckiest batch) is out of reach,
    g·v shrinks to the gradient noise and η = α(L − γ·L_min)/(g·v) grows; once a step
    overshoots, L grows with the logits while the cross-entropy gradient stays bounded, so η
    grows with L: the paper's rule diverges within a few hundred steps. ``max_growth=1.01``
    keeps η within its recent range and the loss near chance."""
    chance = math.log(10)
    etas, losses = random_label_run(400)
    assert max(etas) > 1e6 and max(losses) > 1e3 * chance
    steps = 2000
    etas, losses = random_label_run(steps, max_growth=1.01)
    assert len(losses) == steps
    assert max(etas) < 1.0
    assert sum(losses[-500:]) / 500 < 1.2 * chance


def test_growth_limit_and_envelope():
    eta, envelope = torch.tensor(5.0), torch.tensor(2.0)
    yes, no = torch.tensor(True), torch.tensor(False)
    assert limit_growth(eta, envelope, 1.5).item() == 3.0
    assert limit_growth(eta, envelope, None) is eta
    assert limit_growth(eta, None, 1.5) is eta
    assert limit_growth(eta, torch.tensor(0.0), 1.5).item() == 5.0  # no step taken yet
    assert next_envelope(torch.tensor(1.0), envelope, yes, 2.0).item() == 1.0  # falls by 1/c
    assert next_envelope(torch.tensor(0.1), envelope, yes, 4.0).item() == 0.5
    assert next_envelope(torch.tensor(7.0), envelope, yes, 2.0).item() == 7.0  # follows η up
    assert next_envelope(torch.tensor(0.0), envelope, no, 2.0).item() == 2.0  # safe step
    assert next_envelope(torch.tensor(3.0), None, yes, 2.0).item() == 3.0
    assert next_envelope(eta, envelope, yes, None) is None


def test_a_safe_first_step_does_not_pin_eta_at_zero_under_max_growth():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    optimizer = L4Mom([w], max_growth=1.01)
    w.grad = torch.zeros(2)
    optimizer.step(loss=torch.tensor(1.0))
    assert optimizer.diagnostics()["skipped_steps"] == 1
    w.grad = torch.tensor([0.5, -0.5])
    optimizer.step(loss=torch.tensor(1.0))
    assert optimizer.diagnostics()["effective_lr"] > 0
