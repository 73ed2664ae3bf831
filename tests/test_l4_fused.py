"""``L4(base, fused=True)``: L4 over torch's Adam/AdamW with the base's update done in
torch.compile kernels. It must be the same method as the probe path — the float64 reference
of the wrapper, the probe path itself, interchangeable state dicts — and refuse what it
cannot run before anything changes."""

from __future__ import annotations

import pytest
import torch

from lrkit.methods.l4 import L4
from lrkit.methods.l4 import fused as fused_module
from test_l4 import (
    _assert_same,
    _closure,
    _snapshot,
    adamw_direction,
    assert_close_lists,
    make_problem,
    reference_wrapper_run,
    run_fast,
)


def _adamw(weight_decay: float):
    return lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=weight_decay, eps=1e-4)


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_fused_matches_the_float64_reference(weight_decay):
    base = _adamw(weight_decay)
    params, etas = run_fast(lambda p: L4(base(p), fused=True), 100)
    expected = reference_wrapper_run(100, adamw_direction(weight_decay, 1e-4))
    assert max(etas) > 3 * min(etas) > 0  # η adapts
    assert_close_lists(params, expected, rtol=1e-9, atol=1e-12)


def test_fused_takes_the_steps_of_the_probe_path_in_float32():
    base = _adamw(0.1)
    fused, fused_etas = run_fast(lambda p: L4(base(p), fused=True), 60, dtype=torch.float32)
    probed, probed_etas = run_fast(lambda p: L4(base(p)), 60, dtype=torch.float32)
    assert fused_etas == pytest.approx(probed_etas, rel=1e-4)
    assert_close_lists(fused, probed, rtol=1e-4, atol=1e-6)


def _train(optimizer, params, loss_fn, steps):
    for step in steps:
        optimizer.step(_closure(optimizer, params, loss_fn, step))


def test_fused_and_probe_state_dicts_are_interchangeable():
    """A fused run saved after 5 steps and resumed by the probe path (and the reverse) goes
    on as an uninterrupted run of the other path."""
    init, loss_fn = make_problem()
    finals = {}
    for first, second in ((True, False), (False, True), (True, True)):
        params = [torch.nn.Parameter(p.clone()) for p in init]
        optimizer = L4(torch.optim.Adam(params, eps=1e-4), fused=first)
        _train(optimizer, params, loss_fn, range(1, 6))
        saved = optimizer.state_dict()
        resumed = L4(torch.optim.Adam(params, eps=1e-4), fused=second)
        resumed.load_state_dict(saved)
        _train(resumed, params, loss_fn, range(6, 11))
        finals[(first, second)] = [p.detach().clone() for p in params]
    reference = reference_wrapper_run(10, adamw_direction(0.0, 1e-4))
    for final in finals.values():
        assert_close_lists(final, reference, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    ("make_base", "message"),
    [
        (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), "not one of them"),
        (lambda p: torch.optim.Adam(p, weight_decay=0.1), "decoupled_weight_decay"),
        (lambda p: torch.optim.Adam(p, amsgrad=True), "amsgrad=True"),
        (lambda p: torch.optim.Adam(p, betas=(0.8, 0.999)), "betas[0] = grad_beta"),
    ],
)
def test_fused_refuses_bases_it_cannot_run(make_base, message):
    params = [torch.nn.Parameter(torch.ones(3))]
    with pytest.raises(ValueError, match="use fused=False") as error:
        L4(make_base(params), fused=True)
    assert message in str(error.value)
    L4(make_base(params))  # the probe path takes them


def test_fused_must_be_a_bool():
    with pytest.raises(TypeError, match="fused must be True or False"):
        L4(torch.optim.Adam([torch.nn.Parameter(torch.ones(3))]), fused="yes")


def test_a_group_changed_after_construction_is_refused_at_the_step():
    init, loss_fn = make_problem()
    params = [torch.nn.Parameter(p.clone()) for p in init]
    optimizer = L4(torch.optim.Adam(params, eps=1e-4), fused=True)
    _train(optimizer, params, loss_fn, range(1, 3))
    optimizer.param_groups[0]["amsgrad"] = True
    before = _snapshot(optimizer, params)
    with pytest.raises(ValueError, match="amsgrad=True"):
        optimizer.step(_closure(optimizer, params, loss_fn, 3))
    _assert_same(before, _snapshot(optimizer, params))


def test_a_kernel_that_cannot_compile_changes_nothing(monkeypatch):
    """Without a working torch.compile (no C++ compiler), the first step says so and leaves
    the parameters, the base's state and L4's state as they were."""

    def unavailable(name, function):
        def raise_error(*args):
            raise OSError("no C++ compiler found")

        return raise_error

    monkeypatch.setattr(fused_module, "_compiled", unavailable)
    init, loss_fn = make_problem()
    params = [torch.nn.Parameter(p.clone()) for p in init]
    optimizer = L4(torch.optim.Adam(params, eps=1e-4), fused=True)
    before = _snapshot(optimizer, params)
    with pytest.raises(RuntimeError, match="no C\\+\\+ compiler found.*use fused=False"):
        optimizer.step(_closure(optimizer, params, loss_fn, 1))
    _assert_same(before, _snapshot(optimizer, params))
    assert not optimizer.base_optimizer.state


def test_groups_with_their_own_settings_and_a_parameter_without_gradient():
    """Per-group beta2, eps and weight decay reach the kernels; a parameter without a
    gradient is skipped as torch's Adam skips it."""
    init, loss_fn = make_problem()
    runs = []
    for fused in (False, True):
        params = [torch.nn.Parameter(p.clone()) for p in init]
        spare = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
        base = torch.optim.AdamW(
            [
                {"params": params[:2], "betas": (0.9, 0.99), "eps": 1e-3, "weight_decay": 0.0},
                {"params": [*params[2:], spare], "eps": 1e-4, "weight_decay": 0.2},
            ],
            lr=1e-3,
        )
        optimizer = L4(base, fused=fused)
        _train(optimizer, params, loss_fn, range(1, 31))
        assert spare.grad is None and torch.equal(spare, torch.ones(3, dtype=torch.float64))
        assert spare not in base.state
        runs.append(([p.detach().clone() for p in params], optimizer.state_dict()))
    (probed, probed_state), (fused_params, fused_state) = runs
    assert_close_lists(fused_params, probed, rtol=1e-9, atol=1e-12)
    for index, entry in probed_state["state"].items():
        assert torch.equal(entry["step"], fused_state["state"][index]["step"])
        torch.testing.assert_close(entry["exp_avg_sq"], fused_state["state"][index]["exp_avg_sq"])


def test_a_second_kernel_that_cannot_compile_is_a_refused_step(monkeypatch):
    """The step kernel compiles at the first step that moves. If that fails, the weights
    stay where they were, the moments and counts have advanced (as in a refused step, which
    L4 counts), and the error says to use fused=False."""
    compiled = fused_module._compiled

    def apply_unavailable(name, function):
        if name == "apply":

            def raise_error(*args):
                raise OSError("no C++ compiler found")

            return raise_error
        return compiled(name, function)

    monkeypatch.setattr(fused_module, "_compiled", apply_unavailable)
    init, loss_fn = make_problem()
    params = [torch.nn.Parameter(p.clone()) for p in init]
    optimizer = L4(torch.optim.Adam(params, eps=1e-4), fused=True)
    weights = [p.detach().clone() for p in params]
    with pytest.raises(RuntimeError, match="use fused=False"):
        optimizer.step(_closure(optimizer, params, loss_fn, 1))
    _assert_same(weights, [p.detach() for p in params])
    assert all(optimizer.base_optimizer.state[p]["step"] == 1 for p in params)
    assert optimizer.diagnostics()["skipped_steps"] == 1


def test_past_the_recompile_limit_the_step_says_so(monkeypatch):
    """Each new model compiles again; past the limit the step raises a RuntimeError that
    names the limit, and that step changes nothing."""
    monkeypatch.setattr(fused_module, "RECOMPILE_LIMIT", 1)
    failures = []
    with torch._dynamo.config.patch(recompile_limit=1):
        for width in (7, 11, 13):
            params = [torch.nn.Parameter(torch.ones(3, width))]
            optimizer = L4(torch.optim.Adam(params), fused=True)

            def closure(params=params, optimizer=optimizer):
                optimizer.zero_grad()
                loss = (params[0] ** 2).sum()
                loss.backward()
                return loss

            before = _snapshot(optimizer, params)
            try:
                optimizer.step(closure)
            except RuntimeError as error:
                assert "recompile_limit" in str(error) and "fused=False" in str(error)
                _assert_same(before, _snapshot(optimizer, params))
                failures.append(width)
    assert failures, "three new models under a limit of one must hit it"
