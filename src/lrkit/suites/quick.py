"""The quick suite: the README's main job, a few minutes on 2 CPU cores."""

from __future__ import annotations

from lrkit.harness.experiments import Contender, Experiment, Suite
from lrkit.suites.common import l4adam_claim, l4mom_claim, lrkit_methods, peers, tuned_baselines


def build(scale: str = "cpu") -> Suite:
    return Suite(
        name="quick",
        description=(
            "The quick suite: every baseline tuned on a log LR grid, the learning-rate-free "
            "peers at their defaults and lrkit's methods at their defaults, on three small "
            "offline problems."
        ),
        seeds=3,
        scaled="small problems and short budgets chosen to finish in under 3 minutes on 2 "
        "CPU cores; not a paper-scale experiment.",
        plan=(
            Experiment(
                name="digits_mlp",
                title="scikit-learn digits, MLP",
                task="digits_mlp",
                contenders=tuned_baselines() + peers() + lrkit_methods(),
                claims=(l4adam_claim("Sec. 3, Table 1"), l4mom_claim("Sec. 3, Table 1")),
            ),
            Experiment(
                name="recht_regression",
                title="Ill-conditioned regression (Recht's 2-layer linear net, linspace A)",
                task="recht_regression",
                task_options={"variant": "linspace"},
                steps=1000,
                contenders=(
                    Contender("sgd", grid={"lr": (1e-6, 1e-5, 1e-4, 1e-3)}),
                    Contender("adam", grid={"lr": (1e-5, 1e-4, 1e-3, 1e-2)}),
                )
                + peers()
                + lrkit_methods(),
                loss_thresholds=(1e-2, 1e-6),
                claims=(l4adam_claim("Sec. 3, Table 1"),),
            ),
            Experiment(
                name="beale",
                title="Beale function, 500 steps of first-order methods",
                task="beale",
                seeds=1,
                notes="Deterministic (fixed start, no data): one seed per configuration.",
                contenders=(
                    Contender("sgd", grid={"lr": (1e-4, 1e-3, 1e-2, 1e-1)}),
                    Contender("momentum", grid={"lr": (1e-4, 1e-3, 1e-2, 1e-1)}),
                    Contender("adam", grid={"lr": (1e-3, 1e-2, 1e-1, 1.0)}),
                )
                + peers()
                + lrkit_methods(),
            ),
        ),
    )
