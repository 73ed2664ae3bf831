"""The method registry: name -> how to build the method, its defaults and what it needs.

Adding a method is one :func:`register_method` call beside its implementation. The harness,
the CLI (``lrkit list``), the cost benchmark and the conformance tests all read this table.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

OptimizerFactory = Callable[..., torch.optim.Optimizer]
StepFunction = Callable[[torch.optim.Optimizer, Any], torch.Tensor]


@dataclass(frozen=True)
class MethodSpec:
    """One registered method.

    ``make_optimizer(params, **hparams)`` builds a real ``torch.optim.Optimizer`` (param
    groups, closure, state_dict); ``defaults`` are the documented defaults; ``tunable`` names
    the hyperparameters a suite's grid may tune (baselines: ``lr``); ``base`` is the
    registry name of the optimizer whose step time the cost benchmark divides by.
    ``needs_validation``/``needs_per_example``: what :class:`lrkit.harness.step.StepInputs`
    must carry for this method; the harness hands validation data only to methods that set it.
    ``requires`` is the importable package an optional method needs (a peer's PyPI package).
    ``schedules``: whether the LR schedules of :mod:`lrkit.methods.schedules` apply.
    ``averaging``: ``"ema"`` or ``"polynomial"`` means the evaluated weights are an average.
    ``train_eval_switch``: the optimizer has ``train()``/``eval()`` (Schedule-Free).
    ``conformance_skips``: check name -> documented reason that check cannot apply.
    ``step_fn(optimizer, step_inputs)``: how the harness takes one step when the method
    needs more than the training closure (default: ``optimizer.step(step_inputs.closure)``).
    ``solver(run_config) -> run record``: a whole-run solver that is no torch optimizer
    (kind ``"solver"``, e.g. scipy's Levenberg–Marquardt); the harness calls it instead of
    its training loop.
    """

    name: str
    summary: str
    kind: Literal["baseline", "peer", "lrkit", "solver", "reserved"]
    make_optimizer: OptimizerFactory | None
    defaults: dict[str, Any] = field(default_factory=dict)
    tunable: tuple[str, ...] = ()
    base: str | None = None
    needs_validation: bool = False
    needs_per_example: bool = False
    requires: str | None = None
    schedules: bool = False
    averaging: Literal["none", "ema", "polynomial"] = "none"
    train_eval_switch: bool = False
    conformance_skips: dict[str, str] = field(default_factory=dict)
    step_fn: StepFunction | None = None
    solver: Callable[[Any], dict[str, Any]] | None = None
    paper: str = ""

    @property
    def available(self) -> bool:
        if self.make_optimizer is None and self.solver is None:
            return False
        return self.requires is None or importlib.util.find_spec(self.requires) is not None

    def build_optimizer(
        self, params: Iterable[torch.Tensor] | Iterable[dict], **hparams: Any
    ) -> torch.optim.Optimizer:
        if self.make_optimizer is None:
            raise NotImplementedError(f"method {self.name!r} is reserved and not implemented yet")
        if not self.available:
            raise ImportError(
                f"method {self.name!r} needs the package {self.requires!r}: "
                f"pip install 'lrkit[peers]'"
            )
        merged = {**self.defaults, **hparams}
        return self.make_optimizer(params, **merged)


METHODS: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    existing = METHODS.get(spec.name)
    if existing is not None and existing.kind != "reserved":
        raise ValueError(f"method {spec.name!r} is registered twice")
    METHODS[spec.name] = spec
    return spec


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise KeyError(f"unknown method {name!r}; known methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def implemented_methods(kind: str | None = None) -> list[MethodSpec]:
    """Registered methods that exist (not reserved names), optionally of one kind."""
    return [
        spec
        for spec in METHODS.values()
        if spec.kind != "reserved" and (kind is None or spec.kind == kind)
    ]


def optimizer_methods() -> list[MethodSpec]:
    """Registered methods that build a ``torch.optim.Optimizer`` (what the conformance and
    DDP suites check): everything implemented except whole-run solvers."""
    return [spec for spec in implemented_methods() if spec.make_optimizer is not None]
