"""The fault suite: bad inputs and faults, written once and run against every method
configuration (tests/method_configs.py) the way the harness runs it
(:func:`lrkit.harness.setup.prepare_run`), so that every method to come faces the same cases.

Each case takes a run two steps into training, applies one fault and ends in one of:

* ``refused`` — a ValueError, TypeError or FloatingPointError with a message, and the
  parameters and the optimizer's state dict exactly as before (NaN-aware comparison);
* ``correct`` — no error and the case's check holds (the step is finite: every parameter and
  every floating tensor of the optimizer's state);
* anything else — a test failure, with what happened.

Which cases apply: lrkit's own optimizers (kinds "lrkit" and "example") face all of them. An
optimizer implemented in lrkit but taking torch's step (Lookahead) faces those about its own
code: state dicts and its own hyperparameters. torch.optim's and the PyPI peers' optimizers
are not lrkit's to fix: a case about a guarantee only lrkit makes is *not applicable* to them,
recorded with its reason and not run. The numeric extremes — loss scales 1e-30 to 1e30 in
float16, bfloat16, float32 and float64 — are drawn by hypothesis.

The counts (tried / refused with nothing changed / correct / anything else / not applicable)
are printed at the end of the session (tests/conftest.py, :func:`summary_lines`).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn

from lrkit.harness.setup import PreparedRun, prepare_run
from lrkit.methods import get_method
from lrkit.tasks.base import Task
from method_configs import MethodConfig, method_configs
from test_conformance import TinyMLP, _assert_same, tiny_regression_task

CONFIGS = method_configs()
WARMUP_STEPS = 1
ERRORS = (ValueError, TypeError, FloatingPointError)

GUARDED = "guarded"  # lrkit's learned-LR methods and the examples: kinds "lrkit", "example"
LRKIT_CODE = "lrkit code"  # every optimizer class implemented in lrkit (also Lookahead)
EVERYONE = "everyone"
NOT_GUARDED = (
    "a baseline or peer takes torch.optim's (or its package's) step, which does not check "
    "the loss or the gradients: NaN/inf reach the parameters and the training loop sees the "
    "divergence in the loss"
)
NOT_LRKIT_CODE = (
    "torch.optim's and the peers' load_state_dict replaces the groups without checking what "
    "saved them, and their hyperparameters are checked at construction only"
)
SCALES_NOT_OURS = (
    "what a loss scale of 1e±30 does to torch.optim's and the peers' steps is theirs (Adam's "
    "squared gradients overflow float32 past |g| ≈ 1e19)"
)


@dataclass
class Result:
    config: str
    case: str
    outcome: str  # "refused", "correct", "other", "not applicable"
    detail: str = ""


RESULTS: list[Result] = []


def summary_lines() -> list[str]:
    """The fault table's counts, for the terminal summary."""
    counts = Counter(result.outcome for result in RESULTS)
    tried = sum(counts[o] for o in ("refused", "correct", "other"))
    lines = [
        f"fault suite: {tried} tried — {counts['refused']} refused with nothing changed, "
        f"{counts['correct']} correct behaviour, {counts['other']} anything else; "
        f"{counts['not applicable']} not applicable (not run)"
    ]
    reasons = Counter(r.detail for r in RESULTS if r.outcome == "not applicable")
    for reason, count in sorted(reasons.items()):
        lines.append(f"  not applicable ×{count}: {reason}")
    for result in RESULTS:
        if result.outcome == "other":
            lines.append(f"  OTHER {result.config} / {result.case}: {result.detail}")
    return lines


# --------------------------------------------------------------------------------- runs


def _task() -> Task:
    return tiny_regression_task()


def _other_model_task() -> Task:
    """The same regression with a 6-unit hidden layer: parameters of other shapes."""

    class Narrower(TinyMLP):
        def __init__(self, generator: torch.Generator) -> None:
            super().__init__(generator)
            self.hidden = nn.Linear(4, 6)
            self.output = nn.Linear(6, 1)

    return dataclasses.replace(_task(), model_factory=Narrower)


def _run(
    config: MethodConfig,
    task: Task | None = None,
    dtype: torch.dtype | None = None,
    spec_hparams: tuple[Any, dict[str, Any]] | None = None,
    two_groups: bool = False,
) -> PreparedRun:
    spec, hparams = spec_hparams or (config.spec, config.hparams)

    def groups(model: nn.Module) -> list[dict[str, Any]]:
        return [
            {"params": list(model.hidden.parameters())},
            {"params": list(model.output.parameters())},
        ]

    run = prepare_run(
        task or _task(),
        spec,
        hparams=hparams,
        dtype=dtype,
        steps=20,
        param_groups=groups if two_groups else None,
    )
    for _ in range(WARMUP_STEPS):
        run.step()
    return run


_OWNERSHIP: dict[str, set[str]] = {}


def _applies_to(config: MethodConfig) -> set[str]:
    """Which kinds of case apply: everyone's, lrkit code's, guarded methods'."""
    if config.id not in _OWNERSHIP:
        optimizer = prepare_run(_task(), config.spec, hparams=config.hparams).method.optimizer
        module = type(optimizer).__module__
        kinds = {EVERYONE}
        if module.startswith("lrkit.") or module == "toy_methods":
            kinds.add(LRKIT_CODE)
        if config.spec.kind in ("lrkit", "example"):
            kinds.add(GUARDED)
        _OWNERSHIP[config.id] = kinds
    return _OWNERSHIP[config.id]


def _not_finite(run: PreparedRun) -> str | None:
    """Where a NaN/inf sits after a step: "parameters", "the base's state" (what a wrapper's
    base optimizer keeps: torch.optim's, not lrkit's), "the state", or None."""
    optimizer = run.method.optimizer

    def finite(value: Any) -> bool:
        if isinstance(value, torch.Tensor):
            return not value.is_floating_point() or bool(torch.isfinite(value).all())
        if isinstance(value, Mapping):
            return all(finite(item) for item in value.values())
        if isinstance(value, list | tuple):
            return all(finite(item) for item in value)
        return True

    if not finite([p.detach() for p in run.model.parameters()]):
        return "parameters"
    state = optimizer.state_dict()
    base = getattr(optimizer, "base_optimizer", None)
    if base is not None:
        if not finite({k: v for k, v in state.items() if k not in ("state", "param_groups")}):
            return "the state"
        return None if finite(base.state_dict()) else "the base's state"
    return None if finite(state) else "the state"


def _unchanged(run: PreparedRun, params: list[torch.Tensor], state: dict[str, Any]) -> bool:
    try:
        _assert_same([p.detach() for p in run.model.parameters()], params)
        _assert_same(run.method.optimizer.state_dict(), state)
    except AssertionError:
        return False
    return True


def classify(
    run: PreparedRun,
    fault: Callable[[PreparedRun], Any],
    prepare: Callable[[PreparedRun], None] | None = None,
) -> tuple[str, str]:
    """Applies ``fault`` to ``run`` — after ``prepare`` (what a user changed before, part of
    the state that must not change further): ("refused" | "correct" | "other", what
    happened)."""
    if prepare is not None:
        prepare(run)
    params = [p.detach().clone() for p in run.model.parameters()]
    state = copy.deepcopy(run.method.optimizer.state_dict())
    try:
        fault(run)
    except ERRORS as error:
        if not str(error):
            return "other", f"{type(error).__name__} without a message"
        if not _unchanged(run, params, state):
            return "other", f"{type(error).__name__} ({error}) but the state changed"
        return "refused", f"{type(error).__name__}: {error}"
    except Exception as error:  # noqa: BLE001 — any other error is what the suite reports
        return "other", f"{type(error).__name__}: {error}"
    where = _not_finite(run)
    if where is not None:
        return "other", f"accepted, and {where} no longer finite"
    return "correct", "a finite step"


# ------------------------------------------------------------------------------- faults


def _in_either_form(backward: Callable, graph: Callable) -> Callable[[PreparedRun], Any]:
    """A step whose closure is replaced: ``backward(value, model)`` for the backward form
    (gradients already in .grad), ``graph(value)`` for the graph form (the method
    differentiates what the closure returns)."""

    def fault(run: PreparedRun) -> Any:
        def wrap(closure: Callable[[], torch.Tensor]) -> Callable[[], Any]:
            def faulty() -> Any:
                value = closure()
                if value.requires_grad:
                    return graph(value)
                return backward(value, run.model)

            return faulty

        return run.step(wrap)

    return fault


def _scaled_gradients(factor: float) -> Callable:
    def backward(value: torch.Tensor, model: nn.Module) -> torch.Tensor:
        for p in model.parameters():
            if p.grad is not None:
                p.grad.mul_(factor)
        return value * factor

    return backward


def _poisoned_gradient(bad: float) -> Callable[[PreparedRun], Any]:
    """A finite loss and one NaN/inf gradient element."""

    def backward(value: torch.Tensor, model: nn.Module) -> torch.Tensor:
        model.output.weight.grad.view(-1)[0] = bad
        return value

    def graph(value: torch.Tensor) -> torch.Tensor:
        value.register_hook(lambda grad: grad * bad)
        return value

    return _in_either_form(backward, graph)


def _loss_scaled(factor: float) -> Callable[[PreparedRun], Any]:
    return _in_either_form(_scaled_gradients(factor), lambda value: value * factor)


def _loss_shifted(shift: float) -> Callable[[PreparedRun], Any]:
    return _in_either_form(lambda value, model: value + shift, lambda value: value + shift)


def _zero_gradient() -> Callable[[PreparedRun], Any]:
    def backward(value: torch.Tensor, model: nn.Module) -> torch.Tensor:
        _scaled_gradients(0.0)(value, model)
        return value

    return _in_either_form(backward, lambda value: value.detach() + 0.0 * value)


def _returns(make: Callable[[torch.Tensor], Any]) -> Callable[[PreparedRun], Any]:
    return _in_either_form(lambda value, model: make(value), make)


def _load(source: Callable[[PreparedRun], dict[str, Any]]) -> Callable[[PreparedRun], Any]:
    return lambda run: run.method.optimizer.load_state_dict(source(run))


@functools.cache
def _torch_sgd_state_once() -> dict[str, Any]:
    donor = _run(CONFIGS[0])
    optimizer = torch.optim.SGD(donor.model.parameters(), lr=0.1, momentum=0.9)
    loss = donor.task.loss(donor.model(donor.data.train_inputs[:8]), donor.data.train_targets[:8])
    loss.backward()
    optimizer.step()
    return optimizer.state_dict()


def _torch_sgd_state(run: PreparedRun) -> dict[str, Any]:
    return copy.deepcopy(_torch_sgd_state_once())


@functools.cache
def _lrkit_method_state(name: str) -> dict[str, Any]:
    return _run(CONFIGS[0], spec_hparams=(get_method(name), {})).method.optimizer.state_dict()


def _another_lrkit_method_state(run: PreparedRun) -> dict[str, Any]:
    return copy.deepcopy(_lrkit_method_state("l4adam" if run.spec.name == "l4mom" else "l4mom"))


def _config_of(run: PreparedRun) -> MethodConfig:
    return next(c for c in CONFIGS if c.spec is run.spec)


def _other_model_state(run: PreparedRun) -> dict[str, Any]:
    return _run(_config_of(run), task=_other_model_task()).method.optimizer.state_dict()


def _two_group_state(run: PreparedRun) -> dict[str, Any]:
    return _run(_config_of(run), two_groups=True).method.optimizer.state_dict()


def _set_later(value: Any) -> Callable[[PreparedRun], None]:
    """Sets the method's own hyperparameter to ``value`` (L4(base): ``l4_hparams['alpha']``;
    Lookahead: ``k``; otherwise group 0's first tunable, or its ``lr``)."""

    def change(run: PreparedRun) -> None:
        optimizer = run.method.optimizer
        if hasattr(optimizer, "l4_hparams"):
            optimizer.l4_hparams["alpha"] = value
        elif hasattr(optimizer, "lookahead_steps"):
            optimizer.k = value
        else:
            name = (run.spec.tunable or ("lr",))[0]
            optimizer.param_groups[0][name] = value

    return change


def _add_bad_group(run: PreparedRun) -> None:
    optimizer = run.method.optimizer
    extra = nn.Parameter(torch.ones(3, dtype=next(run.model.parameters()).dtype))
    if hasattr(optimizer, "l4_hparams"):
        optimizer.add_param_group({"params": [extra], "maximize": True})
    else:
        name = (run.spec.tunable or ("lr",))[0]
        optimizer.add_param_group({"params": [extra], name: -1.0})


@dataclass(frozen=True)
class Case:
    """A fault, to whom it applies (GUARDED, LRKIT_CODE or EVERYONE) and why not to the
    others; ``prepare`` is a change the user made before the faulty step."""

    name: str
    fault: Callable[[PreparedRun], Any]
    applies: str
    reason: str = ""
    prepare: Callable[[PreparedRun], None] | None = None


CASES = [
    Case("nan loss", _loss_scaled(math.nan), GUARDED, NOT_GUARDED),
    Case("inf loss", _loss_scaled(math.inf), GUARDED, NOT_GUARDED),
    Case("nan gradient, finite loss", _poisoned_gradient(math.nan), GUARDED, NOT_GUARDED),
    Case("inf gradient, finite loss", _poisoned_gradient(math.inf), GUARDED, NOT_GUARDED),
    Case("negative loss", _loss_shifted(-10.0), EVERYONE),
    Case("zero loss and gradients", _loss_scaled(0.0), EVERYONE),
    Case("zero gradients", _zero_gradient(), EVERYONE),
    Case("closure returns None", _returns(lambda value: None), GUARDED, NOT_GUARDED),
    Case(
        "closure returns a string",
        _returns(lambda value: "0.5"),
        GUARDED,
        NOT_GUARDED,
    ),
    Case(
        "loss of the wrong shape",
        _returns(lambda value: torch.stack([value.sum(), value.sum()])),
        GUARDED,
        NOT_GUARDED,
    ),
    Case("state dict of torch.optim.SGD", _load(_torch_sgd_state), LRKIT_CODE, NOT_LRKIT_CODE),
    Case(
        "state dict of another lrkit method",
        _load(_another_lrkit_method_state),
        LRKIT_CODE,
        NOT_LRKIT_CODE,
    ),
    Case("state dict of another model", _load(_other_model_state), LRKIT_CODE, NOT_LRKIT_CODE),
    Case("state dict with two param groups", _load(_two_group_state), EVERYONE),
    Case(
        "own hyperparameter -1 set later",
        lambda run: run.step(),
        LRKIT_CODE,
        NOT_LRKIT_CODE,
        prepare=_set_later(-1.0),
    ),
    Case(
        "own hyperparameter 'a' set later",
        lambda run: run.step(),
        LRKIT_CODE,
        NOT_LRKIT_CODE,
        prepare=_set_later("a"),
    ),
    Case("param group added out of range", _add_bad_group, GUARDED, NOT_LRKIT_CODE),
]


def _usable(config: MethodConfig) -> None:
    if not config.spec.available:
        pytest.skip(f"{config.spec.name} needs the optional package {config.spec.requires!r}")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda config: config.id)
def test_fault(config: MethodConfig, case: Case) -> None:
    _usable(config)
    if case.applies not in _applies_to(config):
        RESULTS.append(Result(config.id, case.name, "not applicable", case.reason))
        return
    if case.name.startswith("state dict") and "state_dict" in config.skips:
        RESULTS.append(Result(config.id, case.name, "not applicable", config.skips["state_dict"]))
        return
    outcome, detail = classify(_run(config), case.fault, case.prepare)
    RESULTS.append(Result(config.id, case.name, outcome, detail))
    assert outcome in ("refused", "correct"), f"{config.id} / {case.name}: {detail}"


DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
SCALED = [config for config in CONFIGS if config.spec.kind in ("lrkit", "example")]


@pytest.mark.parametrize(
    "config", [c for c in CONFIGS if c not in SCALED], ids=lambda config: config.id
)
def test_loss_scale_extremes_not_applicable(config: MethodConfig) -> None:
    RESULTS.append(Result(config.id, "loss scale extremes", "not applicable", SCALES_NOT_OURS))


BASE_OVERFLOW = (
    "the base's state is no longer finite: torch.optim's Adam keeps g² in the parameters' "
    "dtype, which overflows past |g| ≈ 1e19 in float32/bfloat16; L4 then refuses every step "
    "(counted in skipped_steps) and the parameters stay finite — the base's to fix"
)


@pytest.mark.parametrize("config", SCALED, ids=lambda config: config.id)
@settings(max_examples=4, deadline=None)
@given(log10_scale=st.floats(-30.0, 30.0), dtype=st.sampled_from(DTYPES))
@example(log10_scale=30.0, dtype=torch.float32)
@example(log10_scale=-30.0, dtype=torch.float32)
@example(log10_scale=30.0, dtype=torch.bfloat16)
@example(log10_scale=-30.0, dtype=torch.float16)
@example(log10_scale=-3.0, dtype=torch.float16)
def test_loss_scale_extremes(config: MethodConfig, log10_scale: float, dtype: torch.dtype) -> None:
    """Two steps with the loss (and so every gradient) scaled by 10^x, x in [-30, 30], in
    each dtype; each step refused with nothing changed (e.g. a float16 loss of inf) or
    finite."""
    _usable(config)
    name = f"loss scale 1e{log10_scale:+.1f} in {str(dtype).removeprefix('torch.')}"
    if "loss_scale" in config.skips:
        RESULTS.append(Result(config.id, name, "not applicable", config.skips["loss_scale"]))
        return
    run = _run(config, dtype=dtype)
    outcome, detail = "correct", ""
    for _ in range(2):
        outcome, detail = classify(run, _loss_scaled(10.0**log10_scale))
        if outcome != "correct":
            break
    if outcome == "other" and detail.endswith("the base's state no longer finite"):
        RESULTS.append(Result(config.id, name, "not applicable", BASE_OVERFLOW))
        return
    RESULTS.append(Result(config.id, name, outcome, detail))
    assert outcome in ("refused", "correct"), f"{config.id} / {name}: {detail}"
