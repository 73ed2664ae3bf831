"""The method registry: name → how to build the method, its defaults and what it needs.

Adding a method is one :func:`register_method` call beside its implementation and one import
in :mod:`lrkit.methods`. The harness, the CLI (``lrkit list``), the cost benchmark, the
conformance suite and the DDP suite all read this table; none of them knows a method by name.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from lrkit.methods.contract import (
    AveragerFactory,
    BuildContext,
    Capabilities,
    Diagnostics,
    Solver,
    learning_rate_diagnostics,
)

OptimizerFactory = Callable[..., torch.optim.Optimizer]
MethodKind = Literal["baseline", "peer", "lrkit", "solver", "example", "reserved"]


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the extra to install."""


@dataclass(frozen=True)
class MethodSpec:
    """One registered method.

    Args:
        name: the registry name (``lrkit list``, suites, ``--method``).
        summary: one line for listings.
        kind: "baseline", "peer" (learning-rate-free optimizers from PyPI), "lrkit",
            "solver" (a whole-run solver that is no torch optimizer), "example" (a method
            that demonstrates the contract in tests and docs) or "reserved".
        make_optimizer: ``make_optimizer(params, **hparams)`` → a ``torch.optim.Optimizer``;
            it also gets ``context=`` when ``capabilities.build_context``.
        defaults: the documented default hyperparameters.
        tunable: the hyperparameters a suite's grid may tune (baselines: ``lr``).
        base: the registry name of the optimizer whose step time the cost benchmark divides
            by.
        capabilities: what the method needs beyond the training closure.
        requires: the importable package an optional method needs.
        extra: the ``pip install 'lrkit[extra]'`` that provides ``requires``.
        schedules: whether the LR schedules of :mod:`lrkit.methods.schedules` apply.
        default_schedule: the schedule used when a run names none (a peer whose authors
            recommend one, e.g. Prodigy with cosine annealing).
        make_averager: ``make_averager(model, total_steps)`` → the weight averager whose
            model is evaluated (Polyak EMA, DoG's polynomial averaging).
        train_eval_switch: the optimizer has ``train()``/``eval()`` (Schedule-Free): steps in
            train mode, evaluation in eval mode.
        diagnostics: ``diagnostics(optimizer)`` → what to log every logged step (default:
            the group-0 ``lr`` and the optimizer's own ``diagnostics()``).
        solver: for kind "solver", the whole-run solver.
        paper: where the method comes from.
    """

    name: str
    summary: str
    kind: MethodKind
    make_optimizer: OptimizerFactory | None
    defaults: dict[str, Any] = field(default_factory=dict)
    tunable: tuple[str, ...] = ()
    base: str | None = None
    capabilities: Capabilities = Capabilities()
    requires: str | None = None
    extra: str = "peers"
    schedules: bool = False
    default_schedule: str = "constant"
    make_averager: AveragerFactory | None = None
    train_eval_switch: bool = False
    diagnostics: Diagnostics = learning_rate_diagnostics
    solver: Solver | None = None
    paper: str = ""

    @property
    def available(self) -> bool:
        if self.make_optimizer is None and self.solver is None:
            return False
        return self.requires is None or importlib.util.find_spec(self.requires) is not None

    def check_available(self) -> None:
        """Raises NotImplementedError for a reserved name and :class:`MissingExtraError`
        (naming the extra to install) when the optional package is missing."""
        if self.make_optimizer is None and self.solver is None:
            raise NotImplementedError(f"method {self.name!r} is reserved and not implemented yet")
        if not self.available:
            raise MissingExtraError(
                f"method {self.name!r} needs the package {self.requires!r}: "
                f"pip install 'lrkit[{self.extra}]'"
            )

    def build_optimizer(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        context: BuildContext | None = None,
        **hparams: Any,
    ) -> torch.optim.Optimizer:
        """The optimizer with the defaults overridden by ``hparams``; ``context`` is required
        by (and only passed to) methods that declare ``build_context``."""
        self.check_available()
        if self.make_optimizer is None:
            raise TypeError(f"method {self.name!r} is a whole-run solver, not an optimizer")
        merged = {**self.defaults, **hparams}
        if self.capabilities.build_context:
            if context is None:
                raise ValueError(
                    f"method {self.name!r} needs a BuildContext (it declares build_context): "
                    "pass context=lrkit.methods.BuildContext(model=..., num_train=..., ...)"
                )
            return self.make_optimizer(params, context=context, **merged)
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
