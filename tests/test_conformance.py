"""One conformance suite for every method configuration (tests/method_configs.py: every
registered optimizer method plus variants), run the way the harness runs methods: through
:func:`lrkit.harness.setup.prepare_run`, with LR schedules, weight averaging, Schedule-Free's
train/eval switch and exactly the inputs each method's capabilities declare.

A configuration whose optional package is missing is skipped; a check that cannot apply to a
configuration is declared in the table with its reason. The checks:

* ``converges`` — 200 steps on ``quadratic_deep`` remove ≥ 75 % of the initial excess test
  loss over the loss at the minimiser θ = 0 (evaluated on the weights the harness evaluates).
* ``param_groups`` — two param groups (the second with a different lr, or what the table
  says) both move, and keep their own settings.
* ``closure`` — the step calls the training closure exactly once and returns its loss.
* ``state_dict`` — save the whole run mid-way (optimizer, schedule, averager, model) through
  torch.save, load it into a freshly prepared run: the next steps and the evaluated weights
  are bit-identical to the uninterrupted run.
* ``float64`` / ``bfloat16`` — the parameters keep their dtype, the loss decreases and
  everything stays finite.
* ``zero_grad`` — gradients are None or zero afterwards.
* ``non_finite_loss`` (lrkit's methods) — a NaN or inf loss raises FloatingPointError (what
  the training loop records as a divergence) and changes neither the parameters nor the
  optimizer state.
* ``unknown_hyperparameter`` — a misspelt hyperparameter raises TypeError.
* ``declared_inputs`` — ``step`` receives exactly the keywords the capabilities declare;
  methods that declare no validation never get validation data.
"""

from __future__ import annotations

import copy
import io
import math
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import torch
from torch import nn

import lrkit.methods
from lrkit.harness.setup import PreparedRun, prepare_run
from lrkit.methods import MethodSpec
from lrkit.tasks import get_task
from lrkit.tasks.base import Task, TaskData
from method_configs import MethodConfig, method_configs

CONFIGS = method_configs()
GUARDED = [config for config in CONFIGS if config.guarded]

CONVERGENCE_STEPS = 200
CONVERGED_EXCESS_FRACTION = 0.25
DTYPE_STEPS = 50
RESUME_AFTER, RESUME_STEPS = 6, 6


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """These problems are tiny; several threads on a shared CPU only add contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _usable(config: MethodConfig, check: str) -> MethodConfig:
    spec = config.spec
    if not spec.available:
        pytest.skip(
            f"{spec.name} needs the optional package {spec.requires!r}: "
            f"pip install 'lrkit[{spec.extra}]'"
        )
    if check in config.skips:
        pytest.skip(f"{config.id} declares {check!r} does not apply: {config.skips[check]}")
    return config


def _ids(config: MethodConfig) -> str:
    return config.id


# ----------------------------------------------------------------------------- problems


class TinyMLP(nn.Module):
    """4 → 8 (tanh) → 1, four parameter tensors, initialised from the task's generator."""

    def __init__(self, generator: torch.Generator) -> None:
        super().__init__()
        self.hidden = nn.Linear(4, 8)
        self.output = nn.Linear(8, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(0.5 * torch.randn(p.shape, generator=generator))

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.output(torch.tanh(self.hidden(inputs))).squeeze(-1)


def _regression_data(seed: int) -> TaskData:
    generator = torch.Generator().manual_seed(seed)
    weights = torch.randn(4, generator=generator)

    def split(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = torch.randn(size, 4, generator=generator)
        return inputs, torch.sin(inputs @ weights)

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = split(64), split(32), split(32)
    return TaskData(train_x, train_y, val_x, val_y, test_x, test_y)


def tiny_regression_task() -> Task:
    """y = sin(w·x) fitted by :class:`TinyMLP` with squared error, batch 16."""
    return Task(
        name="conformance_mlp",
        description="tiny MLP regression for the conformance checks",
        model_factory=TinyMLP,
        data_factory=_regression_data,
        per_example_loss=lambda outputs, targets: (outputs - targets).pow(2),
        batch_size=16,
        steps=20,
        eval_every=10,
        primary_metric="test_loss",
        maximize=False,
    )


def make_run(
    config: MethodConfig,
    task: Task,
    dtype: torch.dtype | None = None,
    param_groups: Callable[[nn.Module], list[dict[str, Any]]] | None = None,
    steps: int = CONVERGENCE_STEPS,
) -> PreparedRun:
    return prepare_run(
        task,
        config.spec,
        hparams=config.hparams,
        dtype=dtype,
        param_groups=param_groups,
        steps=steps,
    )


def take_steps(run: PreparedRun, count: int) -> list[float]:
    return [float(run.step()) for _ in range(count)]


def evaluated_loss(run: PreparedRun) -> float:
    with run.method.evaluation_model() as model:
        return run.task.evaluate(model, run.data)["test_loss"]


def parameters(model: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def returned_loss(run: PreparedRun, closure_value: torch.Tensor) -> float:
    """What the step should return for a closure value: per-example closures return the
    vector, whose reduction is the loss."""
    if run.spec.capabilities.per_example_losses:
        return float(run.task.reduce(closure_value.detach()))
    return float(closure_value)


def _assert_same(actual: Any, expected: Any, where: str = "state") -> None:
    """Exact, NaN-aware, recursive equality of state dicts."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(actual, torch.Tensor), f"{where}: tensor became {type(actual)}"
        torch.testing.assert_close(actual, expected, rtol=0, atol=0, equal_nan=True, msg=where)
    elif isinstance(expected, Mapping):
        assert isinstance(actual, Mapping) and set(actual) == set(expected), f"{where}: keys"
        for key in expected:
            _assert_same(actual[key], expected[key], f"{where}[{key!r}]")
    elif isinstance(expected, list | tuple):
        assert isinstance(actual, list | tuple) and len(actual) == len(expected), where
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            _assert_same(a, e, f"{where}[{index}]")
    elif isinstance(expected, float) and math.isnan(expected):
        assert isinstance(actual, float) and math.isnan(actual), where
    else:
        assert actual == expected, f"{where}: {actual!r} != {expected!r}"


@pytest.fixture(scope="module")
def quadratic() -> Task:
    return get_task("quadratic_deep")


@pytest.fixture(scope="module")
def mlp() -> Task:
    return tiny_regression_task()


# ------------------------------------------------------------------------------- checks


@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
def test_converges_on_quadratic_deep(config: MethodConfig, quadratic: Task) -> None:
    """The excess test loss L − L(θ* = 0) over the noise floor must fall to 25 % of its
    initial value in 200 steps. Most of the initial excess lies in the 10 high-curvature
    directions (eigenvalues 30–60); the 90 directions with eigenvalues in (0, 1) hold a small
    part that no stable step size removes in 200 steps. Removing 75 % therefore means the
    high-curvature directions are solved, which a working optimizer does well within the
    budget, while a method that stalls, diverges or steps the wrong way removes next to
    nothing; the margin leaves room for methods whose noise-driven steps keep them above the
    floor (mini-batches of 128 from 1000 noisy points)."""
    _usable(config, "converges")
    run = make_run(config, quadratic)
    initial = evaluated_loss(run)
    losses = take_steps(run, CONVERGENCE_STEPS)
    final = evaluated_loss(run)
    at_optimum = quadratic.build_model(0)
    with torch.no_grad():
        for p in at_optimum.parameters():
            p.zero_()
    floor = quadratic.evaluate(at_optimum, run.data)["test_loss"]
    assert all(math.isfinite(loss) for loss in losses)
    assert final - floor <= CONVERGED_EXCESS_FRACTION * (initial - floor), (
        f"{config.id}: test loss {initial:.2f} → {final:.2f} in {CONVERGENCE_STEPS} steps; "
        f"floor {floor:.2f}"
    )


@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
def test_param_groups(config: MethodConfig, mlp: Task) -> None:
    _usable(config, "param_groups")
    hparams = {**config.spec.defaults, **config.hparams}
    if config.second_group is not None:
        second = config.second_group
    else:
        second = {"lr": 0.5 * hparams["lr"]} if "lr" in hparams else {}

    def groups(model: nn.Module) -> list[dict[str, Any]]:
        return [
            {"params": list(model.hidden.parameters())},
            {"params": list(model.output.parameters()), **second},
        ]

    run = make_run(config, mlp, param_groups=groups)
    before = parameters(run.model)
    take_steps(run, 5)
    optimizer = run.method.optimizer
    assert len(optimizer.param_groups) == 2
    for key, value in second.items():
        if key == "lr" and run.method.scheduler is not None:
            continue  # the schedule changes lr; the group still has its own
        assert optimizer.param_groups[1][key] == value
    names = [n for n, _ in run.model.named_parameters()]
    for name, old, new in zip(names, before, parameters(run.model), strict=True):
        assert not torch.equal(old, new), f"{config.id}: parameter {name} did not move"


@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
def test_step_calls_the_closure_once_and_returns_its_loss(config: MethodConfig, mlp: Task) -> None:
    _usable(config, "closure")
    run = make_run(config, mlp)
    for _ in range(3):
        values: list[torch.Tensor] = []

        def counting(closure: Callable[..., torch.Tensor], log=values):
            def counted(*parameters) -> torch.Tensor:
                value = closure(*parameters)
                log.append(value)
                return value

            return counted

        returned = run.step(counting)
        assert len(values) == 1, f"{config.id} called the closure {len(values)} times"
        assert returned is not None, f"{config.id}.step(closure) returned None"
        assert float(returned) == returned_loss(run, values[0])


@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
def test_state_dict_resumes_bit_identically(config: MethodConfig, mlp: Task) -> None:
    _usable(config, "state_dict")
    run = make_run(config, mlp, steps=RESUME_AFTER + RESUME_STEPS)
    take_steps(run, RESUME_AFTER)
    snapshot = copy.deepcopy(run.state_dict())
    buffer = io.BytesIO()
    torch.save(run.state_dict(), buffer)
    uninterrupted = take_steps(run, RESUME_STEPS)

    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    _assert_same(loaded, snapshot)
    resumed = make_run(config, mlp, steps=RESUME_AFTER + RESUME_STEPS)
    resumed.load_state_dict(loaded)
    assert take_steps(resumed, RESUME_STEPS) == uninterrupted
    names = [n for n, _ in run.model.named_parameters()]
    for name, a, b in zip(names, parameters(run.model), parameters(resumed.model), strict=True):
        assert torch.equal(a, b), f"{config.id}: {name} differs after resuming"
    assert evaluated_loss(resumed) == evaluated_loss(run)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
def test_dtypes(config: MethodConfig, dtype: torch.dtype, quadratic: Task) -> None:
    _usable(config, str(dtype).removeprefix("torch."))
    run = make_run(config, quadratic, dtype=dtype, steps=DTYPE_STEPS)
    initial = evaluated_loss(run)
    losses = take_steps(run, DTYPE_STEPS)
    final = evaluated_loss(run)
    for p in run.model.parameters():
        assert p.dtype == dtype
        assert torch.isfinite(p).all()
    for state in run.method.optimizer.state.values():
        for value in state.values() if isinstance(state, Mapping) else ():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                assert torch.isfinite(value).all()
    assert all(math.isfinite(loss) for loss in losses)
    assert final < initial, f"{config.id} in {dtype}: test loss {initial:.3f} → {final:.3f}"


@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
def test_zero_grad(config: MethodConfig, mlp: Task) -> None:
    _usable(config, "zero_grad")
    run = make_run(config, mlp)
    take_steps(run, 1)
    loss = run.task.loss(run.model(run.data.train_inputs[:8]), run.data.train_targets[:8])
    loss.backward()
    assert any(p.grad is not None for p in run.model.parameters())
    run.method.optimizer.zero_grad()
    for p in run.model.parameters():
        assert p.grad is None or not p.grad.any()


def _poisoned(bad_value: float, model: nn.Module):
    """A closure whose loss and gradients are NaN/inf (a diverged run), in either form."""

    def wrap(closure: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        def poisoned(*parameters) -> torch.Tensor:
            value = closure(*parameters)
            if value.requires_grad:  # graph form: the method differentiates this
                return value * bad_value
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.mul_(bad_value)
            return value * bad_value

        return poisoned

    return wrap


@pytest.mark.parametrize("bad_value", [math.nan, math.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("config", GUARDED, ids=_ids)
def test_non_finite_loss_is_rejected_without_side_effects(
    config: MethodConfig, bad_value: float, mlp: Task
) -> None:
    _usable(config, "non_finite_loss")
    run = make_run(config, mlp)
    take_steps(run, 2)
    params = parameters(run.model)
    state = copy.deepcopy(run.method.optimizer.state_dict())
    with pytest.raises(FloatingPointError):
        run.step(_poisoned(bad_value, run.model))
    for old, new in zip(params, parameters(run.model), strict=True):
        assert torch.equal(old, new)
    _assert_same(run.method.optimizer.state_dict(), state)


@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
def test_unknown_hyperparameter_is_a_type_error(config: MethodConfig, mlp: Task) -> None:
    _usable(config, "unknown_hyperparameter")
    run = make_run(config, mlp)
    with pytest.raises(TypeError):
        config.spec.build_optimizer(
            run.model.parameters(), run.context, **config.hparams, learning_rate_typo=0.1
        )


@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
@pytest.mark.parametrize("config", CONFIGS, ids=_ids)
def test_step_gets_exactly_the_declared_inputs(config: MethodConfig, mlp: Task) -> None:
    """What reaches ``optimizer.step`` is what the capabilities declare, no more."""
    _usable(config, "declared_inputs")
    run = make_run(config, mlp)
    received: list[dict[str, Any]] = []
    original = run.method.optimizer.step

    def spy(closure, **keywords):
        received.append(keywords)
        return original(closure, **keywords)

    run.method.optimizer.step = spy
    take_steps(run, 5)
    capabilities = config.spec.capabilities
    expected = set()
    if capabilities.validation_every:
        expected.add("validation_closure")
    if capabilities.instance_indices:
        expected.add("batch")
    for step, keywords in enumerate(received, start=1):
        assert set(keywords) == expected
        if capabilities.validation_every:
            due = step % capabilities.validation_every == 0
            assert (keywords["validation_closure"] is not None) == due


def test_every_registered_optimizer_method_is_configured() -> None:
    ids = {config.id for config in CONFIGS}
    for spec in lrkit.methods.optimizer_methods():
        assert spec.name in ids


PEER_IMPORTS = sorted(
    {c.spec.requires for c in CONFIGS if c.spec.requires is not None and c.spec.kind == "peer"}
)


def test_peer_packages_are_imported_lazily() -> None:
    """``import lrkit.methods`` must not import the optional peer packages."""
    code = (
        f"import sys, lrkit.methods; print(sorted(m for m in {PEER_IMPORTS!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "spec",
    [s for s in lrkit.methods.implemented_methods() if s.requires is not None],
    ids=lambda s: s.name,
)
def test_missing_package_makes_the_entry_unavailable(
    spec: MethodSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, spec.requires, None)
    assert not spec.available
    with pytest.raises(ImportError, match=rf"lrkit\[{spec.extra}\]"):
        spec.check_available()
