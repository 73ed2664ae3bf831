"""The registry entries of the hypergradient methods (docs/hypergradient.md)."""

from __future__ import annotations

from typing import Any

from lrkit.methods.contract import BuildContext, Capabilities
from lrkit.methods.hypergradient import lrs_opt
from lrkit.methods.hypergradient.hd import HDSGD, HDAdam
from lrkit.methods.hypergradient.marthe import MARTHE
from lrkit.methods.registry import MethodSpec, register_method

BAYDIN = "Baydin et al. 2018, Algorithms 2-3"
DONINI = "Donini et al., Secs. 3-4, Algorithm 1"
EVERY_K = 10
_MARTHE_INNER = {"inner": "sgd", "momentum": 0.0, "weight_decay": 0.0}


def _marthe_factory(validation_every: int):
    def make(params: Any, *, context: BuildContext, **hparams: Any) -> MARTHE:
        return MARTHE(params, model=context.model, validation_every=validation_every, **hparams)

    return make


def _marthe_capabilities(validation_every: int) -> Capabilities:
    return Capabilities(validation_every=validation_every, second_order=True, build_context=True)


register_method(
    MethodSpec(
        name="hd_sgd",
        summary="SGD whose global LR follows hypergradient descent on the training loss",
        kind="lrkit",
        make_optimizer=HDSGD,
        defaults={"lr": 1e-3, "hypergrad_lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0},
        tunable=("hypergrad_lr",),
        base="sgd",
        paper=BAYDIN,
    )
)
register_method(
    MethodSpec(
        name="hd_adam",
        summary="Adam whose global LR follows hypergradient descent on the training loss",
        kind="lrkit",
        make_optimizer=HDAdam,
        defaults={"lr": 1e-3, "hypergrad_lr": 1e-7, "weight_decay": 0.0},
        tunable=("hypergrad_lr",),
        base="adam",
        paper=BAYDIN,
    )
)
register_method(
    MethodSpec(
        name="rtho",
        summary="RTHO: η by forward-mode hypergradients of the validation loss, μ = 1, fixed β",
        kind="lrkit",
        make_optimizer=_marthe_factory(1),
        defaults={**_MARTHE_INNER, "lr": 0.0, "mu": 1.0, "beta": 1e-4, "kappa": None},
        tunable=("beta",),
        base="sgd",
        capabilities=_marthe_capabilities(1),
        paper="Franceschi et al. 2017; " + DONINI,
    )
)
_MARTHE_DEFAULTS = {**_MARTHE_INNER, "lr": 0.0, "mu": "adaptive", "beta": 1e-8, "kappa": 1e-8}
register_method(
    MethodSpec(
        name="marthe",
        summary="MARTHE: validation hypergradients with adaptive discount μ and adaptive β",
        kind="lrkit",
        make_optimizer=_marthe_factory(1),
        defaults=dict(_MARTHE_DEFAULTS),
        tunable=("kappa",),
        base="sgd",
        capabilities=_marthe_capabilities(1),
        paper=DONINI,
    )
)
register_method(
    MethodSpec(
        name=f"marthe_every{EVERY_K}",
        summary=f"MARTHE with the validation gradient (and η, μ, β updates) every {EVERY_K} steps",
        kind="lrkit",
        make_optimizer=_marthe_factory(EVERY_K),
        defaults=dict(_MARTHE_DEFAULTS),
        tunable=("kappa",),
        base="sgd",
        capabilities=_marthe_capabilities(EVERY_K),
        paper=DONINI,
    )
)
register_method(
    MethodSpec(
        name="lrs_opt",
        summary="LRS-OPT: the offline optimal schedule by reverse-mode hypergradients, replayed",
        kind="solver",
        make_optimizer=None,
        solver=lrs_opt.solve,
        defaults={"iterations": 20, "lr": 0.05, "outer_lr": 5e-3, "outer": "adam", "inner": "sgd"},
        tunable=("outer_lr",),
        paper="Donini et al., Sec. 5",
    )
)
