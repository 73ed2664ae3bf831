"""One conformance suite for every implemented method in the registry (like torch's
``OptimizerInfo`` tables and optax's ``_common_test.py``).

Every spec in :data:`lrkit.methods.METHODS` whose kind is not ``"reserved"`` is checked;
a peer whose optional package is missing is skipped. The checks, by the name a spec uses in
``MethodSpec.conformance_skips`` to declare (with its reason) that one cannot apply:

* ``converges`` — 200 steps on ``quadratic_deep`` remove ≥ 75 % of the initial excess test
  loss over the loss at the minimiser θ = 0.
* ``param_groups`` — two param groups (the second with a different lr, or weight decay for
  methods that need one lr in all groups) both move, and keep their own settings.
* ``closure`` — ``step(closure)`` returns the closure's loss and calls it exactly once.
* ``state_dict`` — save mid-run, load into a fresh model and optimizer (through
  torch.save/torch.load): the next steps are bit-identical to the uninterrupted run.
* ``float64`` / ``bfloat16`` — the parameters keep their dtype, the loss decreases and
  everything stays finite.
* ``zero_grad`` — gradients are None or zero afterwards.
* ``non_finite_loss`` (kind ``"lrkit"`` only) — a NaN or inf loss raises FloatingPointError
  (what the training loop records as a divergence) and changes neither the parameters nor
  the optimizer state.
* ``unknown_hyperparameter`` — a misspelt hyperparameter raises TypeError.

Methods with a ``step_fn`` are stepped through it with :class:`lrkit.harness.step.StepInputs`
(the validation batch only for methods that declare ``needs_validation``), as the harness does.
"""

from __future__ import annotations

import copy
import io
import itertools
import math
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
import torch
from torch import nn

import lrkit.methods
from lrkit.data.batches import Batch
from lrkit.harness.step import StepInputs, make_closure
from lrkit.methods import MethodSpec
from lrkit.tasks import get_task
from lrkit.tasks.base import Task, TaskData

try:
    import lrkit.methods.l4  # noqa: F401  (registers l4adam/l4mom while __init__ does not yet)
except ModuleNotFoundError as missing:
    if missing.name != "lrkit.methods.l4":
        raise

SPECS = lrkit.methods.optimizer_methods()
LRKIT_SPECS = [spec for spec in SPECS if spec.kind == "lrkit"]

# Hyperparameters for the conformance problems where a method's documented default does not
# fit them. Adam-type steps move each coordinate by about lr per step and quadratic_deep
# starts at distance 1 per coordinate (θ₀ = 1): with lr 1e-3 (2.5e-3 for Schedule-Free) the
# 200-step budget cannot reach the minimum, and in bfloat16 (spacing 2⁻⁷ at 1) such steps
# round away entirely.
CONFORMANCE_HPARAMS: dict[str, dict[str, Any]] = {
    "adam": {"lr": 1e-2},
    "adamw": {"lr": 1e-2},
    "schedulefree_adamw": {"lr": 1e-2},
}
# What the second param group changes. Default: half the lr. Prodigy and D-Adaptation
# allow only one lr across groups (others must be 0), so their second group has weight decay.
SECOND_GROUP: dict[str, dict[str, Any]] = {
    "prodigy": {"weight_decay": 1e-2},
    "dadapt_adam": {"weight_decay": 1e-2},
}

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


def _usable(spec: MethodSpec, check: str) -> MethodSpec:
    if not spec.available:
        pytest.skip(
            f"{spec.name} needs the optional package {spec.requires!r}: pip install 'lrkit[peers]'"
        )
    if check in spec.conformance_skips:
        pytest.skip(
            f"{spec.name} declares {check!r} does not apply: {spec.conformance_skips[check]}"
        )
    return spec


def _ids(spec: MethodSpec) -> str:
    return spec.name


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


class Run:
    """A model of ``task`` in ``dtype`` with ``spec``'s optimizer, stepped through a fixed
    sequence of training (and validation) batches starting at batch ``start``."""

    def __init__(
        self,
        spec: MethodSpec,
        task: Task,
        dtype: torch.dtype = torch.float32,
        groups: Callable[[nn.Module], list[dict[str, Any]]] | None = None,
        start: int = 0,
    ) -> None:
        self.spec, self.task, self.dtype = spec, task, dtype
        self.data = task.load_data(0)
        self.model = task.build_model(0, dtype)
        params = self.model.parameters() if groups is None else groups(self.model)
        self.optimizer = spec.build_optimizer(params, **CONFORMANCE_HPARAMS.get(spec.name, {}))
        self.train_batches = self._batches(task.train_batches, seed=0, skip=start)
        self.validation_batches = self._batches(task.validation_batches, seed=1, skip=start)

    def _batches(self, stream, seed: int, skip: int) -> Iterator[Batch]:
        batches = stream(self.data, torch.Generator().manual_seed(seed))
        return (
            Batch(b.inputs.to(self.dtype), b.targets.to(self.dtype), b.indices)
            for b in itertools.islice(batches, skip, None)
        )

    def closure(self, batch: Batch) -> Callable[[], torch.Tensor]:
        return make_closure(self.model, self.task, batch, self.optimizer)

    def step(self, make_closure: Callable[[Batch], Callable] | None = None) -> Any:
        """One step on the next batch; ``make_closure(batch)`` may replace the standard
        closure (to count calls or poison the loss)."""
        batch = next(self.train_batches)
        validation = next(self.validation_batches)
        closure = (make_closure or self.closure)(batch)
        if self.spec.step_fn is None:
            return self.optimizer.step(closure)
        inputs = StepInputs(
            closure,
            batch,
            self.model,
            self.task,
            validation if self.spec.needs_validation else None,
        )
        return self.spec.step_fn(self.optimizer, inputs)

    def steps(self, count: int) -> list[float]:
        return [float(self.step()) for _ in range(count)]

    def test_loss(self) -> float:
        switch = self.spec.train_eval_switch
        if switch:
            self.optimizer.eval()
        try:
            return self.task.evaluate(self.model, self.data)["test_loss"]
        finally:
            if switch:
                self.optimizer.train()

    def parameters(self) -> list[torch.Tensor]:
        return [p.detach().clone() for p in self.model.parameters()]


def _assert_same(actual: Any, expected: Any, where: str = "state_dict") -> None:
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


@pytest.mark.parametrize("spec", SPECS, ids=_ids)
def test_converges_on_quadratic_deep(spec: MethodSpec, quadratic: Task) -> None:
    """The excess test loss L − L(θ* = 0) over the noise floor must fall to 25 % of its
    initial value in 200 steps. Most of the initial excess lies in the 10 high-curvature
    directions (eigenvalues 30–60); the 90 directions with eigenvalues in (0, 1) hold a small
    part that no stable step size removes in 200 steps. Removing 75 % therefore means the
    high-curvature directions are solved, which a working optimizer does well within the
    budget, while a method that stalls, diverges or steps the wrong way removes next to
    nothing; the margin leaves room for methods whose noise-driven steps keep them above the
    floor (mini-batches of 128 from 1000 noisy points)."""
    _usable(spec, "converges")
    run = Run(spec, quadratic)
    initial = run.test_loss()
    losses = run.steps(CONVERGENCE_STEPS)
    final = run.test_loss()
    at_optimum = quadratic.build_model(0)
    with torch.no_grad():
        for p in at_optimum.parameters():
            p.zero_()
    floor = quadratic.evaluate(at_optimum, run.data)["test_loss"]
    assert all(math.isfinite(loss) for loss in losses)
    assert final - floor <= CONVERGED_EXCESS_FRACTION * (initial - floor), (
        f"{spec.name}: test loss {initial:.2f} → {final:.2f} in {CONVERGENCE_STEPS} steps; "
        f"floor {floor:.2f}"
    )


@pytest.mark.parametrize("spec", SPECS, ids=_ids)
def test_param_groups(spec: MethodSpec, mlp: Task) -> None:
    _usable(spec, "param_groups")
    hparams = {**spec.defaults, **CONFORMANCE_HPARAMS.get(spec.name, {})}
    if spec.name in SECOND_GROUP:
        second = SECOND_GROUP[spec.name]
    else:
        second = {"lr": 0.5 * hparams["lr"]} if "lr" in hparams else {}

    def groups(model: nn.Module) -> list[dict[str, Any]]:
        return [
            {"params": list(model.hidden.parameters())},
            {"params": list(model.output.parameters()), **second},
        ]

    run = Run(spec, mlp, groups=groups)
    before = run.parameters()
    run.steps(5)
    assert len(run.optimizer.param_groups) == 2
    for key, value in second.items():
        assert run.optimizer.param_groups[1][key] == value
    for name, old, new in zip(
        [n for n, _ in run.model.named_parameters()], before, run.parameters(), strict=True
    ):
        assert not torch.equal(old, new), f"{spec.name}: parameter {name} did not move"


@pytest.mark.parametrize("spec", SPECS, ids=_ids)
def test_step_calls_the_closure_once_and_returns_its_loss(spec: MethodSpec, mlp: Task) -> None:
    _usable(spec, "closure")
    run = Run(spec, mlp)
    for _ in range(3):
        returned_by_closure: list[torch.Tensor] = []

        def counting(batch: Batch, log: list[torch.Tensor] = returned_by_closure):
            closure = run.closure(batch)

            def counted() -> torch.Tensor:
                loss = closure()
                log.append(loss)
                return loss

            return counted

        returned = run.step(counting)
        assert len(returned_by_closure) == 1, (
            f"{spec.name} called the closure {len(returned_by_closure)} times in one step"
        )
        assert returned is not None, f"{spec.name}.step(closure) returned None"
        assert float(returned) == float(returned_by_closure[0])


@pytest.mark.parametrize("spec", SPECS, ids=_ids)
def test_state_dict_resumes_bit_identically(spec: MethodSpec, mlp: Task) -> None:
    _usable(spec, "state_dict")
    run = Run(spec, mlp)
    run.steps(RESUME_AFTER)
    snapshot = copy.deepcopy(run.optimizer.state_dict())
    buffer = io.BytesIO()
    torch.save(run.optimizer.state_dict(), buffer)
    saved_model = copy.deepcopy(run.model.state_dict())
    uninterrupted = run.steps(RESUME_STEPS)

    buffer.seek(0)
    loaded = torch.load(buffer)
    _assert_same(loaded, snapshot)
    resumed = Run(spec, mlp, start=RESUME_AFTER)
    resumed.model.load_state_dict(saved_model)
    resumed.optimizer.load_state_dict(loaded)
    assert resumed.steps(RESUME_STEPS) == uninterrupted
    for name, a, b in zip(
        [n for n, _ in run.model.named_parameters()],
        run.parameters(),
        resumed.parameters(),
        strict=True,
    ):
        assert torch.equal(a, b), f"{spec.name}: {name} differs after resuming"


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("spec", SPECS, ids=_ids)
def test_dtypes(spec: MethodSpec, dtype: torch.dtype, quadratic: Task) -> None:
    _usable(spec, str(dtype).removeprefix("torch."))
    run = Run(spec, quadratic, dtype=dtype)
    initial = run.test_loss()
    losses = run.steps(DTYPE_STEPS)
    final = run.test_loss()
    for p in run.model.parameters():
        assert p.dtype == dtype
        assert torch.isfinite(p).all()
    for state in run.optimizer.state.values():
        for value in state.values() if isinstance(state, Mapping) else ():
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                assert torch.isfinite(value).all()
    assert all(math.isfinite(loss) for loss in losses)
    assert final < initial, f"{spec.name} in {dtype}: test loss {initial:.3f} → {final:.3f}"


@pytest.mark.parametrize("spec", SPECS, ids=_ids)
def test_zero_grad(spec: MethodSpec, mlp: Task) -> None:
    _usable(spec, "zero_grad")
    run = Run(spec, mlp)
    run.steps(1)
    run.closure(next(run.train_batches))()
    assert any(p.grad is not None for p in run.model.parameters())
    run.optimizer.zero_grad()
    for p in run.model.parameters():
        assert p.grad is None or not p.grad.any()


@pytest.mark.parametrize("bad_value", [math.nan, math.inf], ids=["nan", "inf"])
@pytest.mark.parametrize("spec", LRKIT_SPECS, ids=_ids)
def test_non_finite_loss_is_rejected_without_side_effects(
    spec: MethodSpec, bad_value: float, mlp: Task
) -> None:
    _usable(spec, "non_finite_loss")
    run = Run(spec, mlp)
    run.steps(2)
    params = run.parameters()
    state = copy.deepcopy(run.optimizer.state_dict())

    def poisoned(batch: Batch) -> Callable[[], torch.Tensor]:
        """The model's loss times NaN/inf: a diverged run (loss and gradients non-finite)."""

        def poisoned_closure() -> torch.Tensor:
            run.optimizer.zero_grad()
            loss = run.task.loss(run.model(batch.inputs), batch.targets) * bad_value
            loss.backward()
            return loss.detach()

        return poisoned_closure

    with pytest.raises(FloatingPointError):
        run.step(poisoned)
    for old, new in zip(params, run.parameters(), strict=True):
        assert torch.equal(old, new)
    _assert_same(run.optimizer.state_dict(), state)


@pytest.mark.parametrize("spec", SPECS, ids=_ids)
def test_unknown_hyperparameter_is_a_type_error(spec: MethodSpec, mlp: Task) -> None:
    _usable(spec, "unknown_hyperparameter")
    model = mlp.build_model(0)
    with pytest.raises(TypeError):
        spec.build_optimizer(model.parameters(), learning_rate_typo=0.1)


PEER_IMPORTS = sorted({spec.requires for spec in SPECS if spec.requires is not None})


def test_peer_packages_are_imported_lazily() -> None:
    """``import lrkit.methods`` must not import the optional peer packages."""
    code = (
        f"import sys, lrkit.methods; print(sorted(m for m in {PEER_IMPORTS!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("spec", [s for s in SPECS if s.requires is not None], ids=_ids)
def test_missing_peer_package_makes_the_entry_unavailable(
    spec: MethodSpec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, spec.requires, None)
    assert not spec.available
    with pytest.raises(ImportError, match=r"lrkit\[peers\]"):
        spec.build_optimizer([nn.Parameter(torch.zeros(2))])
