"""The configurations the shared suites test, like torch's ``OptimizerInfo`` table: every
registered optimizer method, plus variants the registry does not list separately (foreach on
and off, the L4 wrapper and Lookahead over several bases, baselines with LR schedules), and
the checks that cannot apply to a configuration, each with its reason.

Adding a method to the registry adds it here automatically; a variant or a documented skip is
one entry below.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

import lrkit.methods
import toy_methods  # noqa: F401  (registers the example methods)
from lrkit.methods import MethodSpec, get_method
from lrkit.methods.hypergradient import HD
from lrkit.methods.l4 import L4
from lrkit.methods.lookahead import Lookahead

# Hyperparameters for the conformance problems where a method's documented default does not
# fit them. Adam-type steps move each coordinate by about lr per step and quadratic_deep
# starts at distance 1 per coordinate (θ₀ = 1): with lr 1e-3 (2.5e-3 for Schedule-Free) the
# 200-step budget cannot reach the minimum, and in bfloat16 (spacing 2⁻⁷ at 1) such steps
# round away entirely.
# The hypergradient methods move η by β·h with h of the order of |g|² (HD) or of
# |∇E|·|Z| with Z summing past directions (MARTHE); quadratic_deep's |g|² starts near 2e4,
# so their defaults (tuned for networks with |g|² ~ 1) send η far beyond its stability limit
# 2/60 within a few steps. These problems get η0 = 0.01 and a small β (and κ).
HYPERGRADIENT_HPARAMS: dict[str, Any] = {"lr": 0.01, "beta": 1e-9, "kappa": 1e-16}
CONFORMANCE_HPARAMS: dict[str, dict[str, Any]] = {
    "adam": {"lr": 1e-2},
    "adamw": {"lr": 1e-2},
    "nadamw": {"lr": 1e-2},
    "schedulefree_adamw": {"lr": 1e-2},
    "hd_sgd": {"lr": 0.01, "hypergrad_lr": 1e-6},
    "hd_adam": {"lr": 1e-2},
    "rtho": {"lr": 0.01, "beta": 1e-9},
    "marthe": HYPERGRADIENT_HPARAMS,
    "marthe_every10": HYPERGRADIENT_HPARAMS,
}
# What the second param group changes. Default: half the lr. Prodigy and D-Adaptation
# allow only one lr across groups (others must be 0), so their second group has weight decay;
# L4(base) ignores the base's lr (its step size replaces it).
SECOND_GROUP: dict[str, dict[str, Any]] = {
    "prodigy": {"weight_decay": 1e-2},
    "dadapt_adam": {"weight_decay": 1e-2},
    "l4_adam_wrapper": {"weight_decay": 1e-2},
    # fused=True reads Adam's exp_avg as ĝ: coupled weight decay is refused, betas[1] may vary
    "l4_adam_wrapper_fused": {"betas": (0.9, 0.99)},
    # one global η: the groups share lr (η0) and may differ in everything else
    "hd_sgd": {"weight_decay": 1e-2},
    "hd_adam": {"weight_decay": 1e-2},
    "rtho": {"weight_decay": 1e-2},
    "marthe": {"weight_decay": 1e-2},
    "marthe_every10": {"weight_decay": 1e-2},
}
_BFLOAT16_STALLS = (
    "with bfloat16 parameters its first steps ({first}) are far below the spacing of bfloat16 "
    "weights (2^-7 at 1, 2^-14 at 0.01) and round away; its step size grows only from the "
    "distance already travelled, so the parameters never move. Keep float32 master weights "
    "(autocast) with {name}."
)
SKIPS: dict[str, dict[str, str]] = {
    "prodigy": {
        "bfloat16": _BFLOAT16_STALLS.format(
            first="about d0·lr·3 = 3e-6 per coordinate, d0 = 1e-6", name="Prodigy"
        )
    },
    "dog": {
        "bfloat16": _BFLOAT16_STALLS.format(
            first="a total move of r_eps = reps_rel·(1 + |x0|), reps_rel = 1e-6", name="DoG"
        )
    },
    "mechanic": {
        "bfloat16": _BFLOAT16_STALLS.format(
            first="s_init·lr = 1e-8 per coordinate", name="Mechanic"
        ),
        "state_dict": "mechanic-pytorch keeps its reference point in optimizer.state['_mechanic'] "
        "keyed by the parameter tensors themselves, so a loaded state refers to the saved "
        "tensors, not the new model's parameters: its first step after loading raises "
        "KeyError. Resume Mechanic only within one process (or keep the optimizer object).",
        "ddp_state": "its state dict is keyed by parameter objects (see state_dict), which "
        "differ between processes; the ranks' parameters are compared instead",
    },
}


@dataclass(frozen=True)
class MethodConfig:
    """One configuration the shared suites run: a registry entry (or a variant of one), the
    hyperparameters for the test problems, what its second param group changes, and the
    checks it skips with their reasons."""

    id: str
    spec: MethodSpec
    hparams: dict[str, Any] = field(default_factory=dict)
    second_group: dict[str, Any] | None = None
    skips: dict[str, str] = field(default_factory=dict)

    @property
    def guarded(self) -> bool:
        """lrkit's own methods (and the examples) refuse a NaN/inf loss, changing nothing."""
        return self.spec.kind in ("lrkit", "example")


def _variant(name: str, base: str, factory, defaults: dict[str, Any]) -> MethodSpec:
    return dataclasses.replace(
        get_method(base), name=name, make_optimizer=factory, defaults=defaults
    )


def _l4_over(base_factory):
    def factory(params, **hparams) -> L4:
        return L4(base_factory(params), **hparams)

    return factory


def _lookahead_over(base_factory):
    def factory(params, **hparams) -> Lookahead:
        return Lookahead(base_factory(params), **hparams)

    return factory


def _hd_over(base_factory, **options):
    def factory(params, **hparams) -> HD:
        return HD(base_factory(params), **options, **hparams)

    return factory


def _hypergradient_variants() -> list[MethodConfig]:
    marthe = get_method("marthe")
    hd = {"hypergrad_lr": 1e-6}
    weight_decay = {"weight_decay": 1e-2}

    def marthe_variant(label: str, **hparams: Any) -> MethodConfig:
        return MethodConfig(
            label, marthe, {**HYPERGRADIENT_HPARAMS, **hparams}, second_group=weight_decay
        )

    def hd_variant(name: str, label: str, **hparams: Any) -> MethodConfig:
        return MethodConfig(
            label,
            get_method(name),
            {**CONFORMANCE_HPARAMS[name], **hparams},
            second_group=weight_decay,
        )

    def hd_over(name: str, base: str, make_base, hparams: dict[str, Any], **options):
        return _variant(name, base, _hd_over(make_base, **options), hparams)

    return [
        hd_variant("hd_sgd", "hd_sgd[foreach=False]", foreach=False),
        hd_variant("hd_sgd", "hd_sgd[nesterov]", momentum=0.9, nesterov=True),
        hd_variant("hd_adam", "hd_adam[foreach=False]", foreach=False),
        MethodConfig(
            "HD(SGD)",
            hd_over("hd_over_sgd", "hd_sgd", lambda p: torch.optim.SGD(p, lr=0.01), hd),
            second_group=weight_decay,
        ),
        MethodConfig(
            "HD(SGD)[per_group]",
            hd_over(
                "hd_over_sgd_per_group",
                "hd_sgd",
                lambda p: torch.optim.SGD(p, lr=0.01),
                hd,
                per_group=True,
            ),
        ),
        MethodConfig(
            "HD(Adam)",
            hd_over(
                "hd_over_adam",
                "hd_adam",
                lambda p: torch.optim.Adam(p, lr=1e-2),
                {"hypergrad_lr": 1e-7},
            ),
            second_group=weight_decay,
        ),
        MethodConfig(
            "HD(AdamW)",
            hd_over(
                "hd_over_adamw",
                "hd_adam",
                lambda p: torch.optim.AdamW(p, lr=1e-2),
                {"hypergrad_lr": 1e-7},
            ),
            second_group={"weight_decay": 0.0},
        ),
        marthe_variant("marthe[momentum]", momentum=0.9),
        marthe_variant(
            "marthe[nesterov,weight_decay]", momentum=0.9, nesterov=True, **weight_decay
        ),
        marthe_variant("marthe[adam]", inner="adam"),
        marthe_variant("marthe[forward_over_reverse]", hvp="forward_over_reverse"),
        marthe_variant("marthe[mu=0]", mu=0.0, kappa=None),
    ]


def _variants() -> list[MethodConfig]:
    l4_defaults = {k: v for k, v in get_method("l4adam").defaults.items() if k in _L4_GLOBAL}
    return _hypergradient_variants() + [
        MethodConfig("l4adam[foreach=False]", get_method("l4adam"), {"foreach": False}),
        MethodConfig("l4mom[foreach=False]", get_method("l4mom"), {"foreach": False}),
        MethodConfig(
            "L4(SGD)",
            _variant(
                "l4_sgd", "l4adam", _l4_over(lambda p: torch.optim.SGD(p, lr=1.0)), l4_defaults
            ),
            second_group={"weight_decay": 1e-2},
        ),
        MethodConfig(
            "L4(AdamW)",
            _variant(
                "l4_adamw",
                "l4adam",
                _l4_over(lambda p: torch.optim.AdamW(p, eps=1e-4)),
                l4_defaults,
            ),
            second_group={"weight_decay": 0.0},
        ),
        MethodConfig(
            "Lookahead(Adam)",
            _variant(
                "lookahead_adam",
                "lookahead",
                _lookahead_over(lambda p: torch.optim.Adam(p, lr=1e-2)),
                {"k": 5, "alpha": 0.5},
            ),
            second_group={"weight_decay": 1e-2},
        ),
        MethodConfig(
            "Lookahead(AdamW)",
            _variant(
                "lookahead_adamw",
                "lookahead",
                _lookahead_over(lambda p: torch.optim.AdamW(p, lr=1e-2)),
                {"k": 5, "alpha": 0.5},
            ),
            second_group={"weight_decay": 0.0},
        ),
        MethodConfig(
            "momentum+multistep",
            get_method("momentum"),
            {"schedule": "multistep"},
        ),
        MethodConfig("adam+sgdr", get_method("adam"), {"lr": 1e-2, "schedule": "sgdr"}),
    ]


_L4_GLOBAL = ("alpha", "gamma", "gamma0", "tau", "epsilon")


_HD_SCALE = (
    "HD's η moves by β·g_t·g_(t−1): a loss scaled by 1e30 makes that ~1e60·β, and η·g "
    "overflows float32 (and the parameters with it); HD checks its inputs and η, not the "
    "update it makes (another pass and synchronisation per step). Scale hypergrad_lr with "
    "the square of the loss scale"
)
_ADAM_SCALE = (
    "its Adam second moment v = g² overflows float32 past |g| ≈ 1e19, as torch.optim.Adam's "
    "does; the loss scale 1e30 is beyond it"
)
# The loss-scale extremes (tests/test_faults.py) that a configuration does not survive, why.
LOSS_SCALE_SKIPS: dict[str, str] = {
    "hd_sgd": _HD_SCALE,
    "hd_sgd[foreach=False]": _HD_SCALE,
    "hd_sgd[nesterov]": _HD_SCALE,
    "HD(SGD)": _HD_SCALE,
    "HD(SGD)[per_group]": _HD_SCALE,
    "hd_adam": _ADAM_SCALE,
    "hd_adam[foreach=False]": _ADAM_SCALE,
    "marthe[adam]": _ADAM_SCALE,
}


def method_configs() -> list[MethodConfig]:
    """Every registered optimizer method at its conformance hyperparameters, then the
    variants."""
    configs = [
        MethodConfig(
            spec.name,
            spec,
            CONFORMANCE_HPARAMS.get(spec.name, {}),
            SECOND_GROUP.get(spec.name),
            SKIPS.get(spec.name, {}),
        )
        for spec in lrkit.methods.optimizer_methods()
    ]
    configs += _variants()
    for config in configs:
        if config.id in LOSS_SCALE_SKIPS:
            config.skips["loss_scale"] = LOSS_SCALE_SKIPS[config.id]
    return configs
