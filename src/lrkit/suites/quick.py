"""The quick suite: the README's main job, under 3 minutes on 2 CPU cores.

Three problems where the methods differ by more than the noise: a short run of MARTHE's
small Fashion-MNIST MLP (7000 images; accuracies after ~1.5 epochs still spread widely),
Recht's ill-conditioned regression (final losses span orders of magnitude, compared on the
log scale), and the Beale function (deterministic: one run is exact).
"""

from __future__ import annotations

from lrkit.harness.experiments import Contender, Experiment, Suite
from lrkit.suites.common import LR_GRID_ADAM, LR_GRID_SGD, l4adam_claim, l4mom_claim

MLP_STEPS = 100
QUICK_PEERS = (Contender("schedulefree_adamw", grid={"lr": LR_GRID_ADAM}), Contender("prodigy"))
L4 = (Contender("l4adam"), Contender("l4mom"))


def build(scale: str = "cpu") -> Suite:
    return Suite(
        name="quick",
        description=(
            "The quick suite: L4Adam and L4Mom at their defaults against momentum SGD and Adam "
            "at their best constant LR (tuned on the validation split), with Schedule-Free "
            "AdamW (tuned) and Prodigy as the learning-rate-free peers, on three small "
            "offline problems chosen so that the methods differ by more than seed noise."
        ),
        seeds=5,
        scaled="small problems and short budgets chosen to finish in under 3 minutes on 2 "
        "CPU cores; not a paper-scale experiment (the l4 suite is).",
        plan=(
            Experiment(
                name="fmnist_mlp_subset",
                title=f"Fashion-MNIST subset, MLP 3×500, {MLP_STEPS} steps",
                task="fmnist_mlp_subset",
                steps=MLP_STEPS,
                eval_every=MLP_STEPS // 4,
                contenders=(
                    Contender("momentum", grid={"lr": LR_GRID_SGD}),
                    Contender("adam", grid={"lr": LR_GRID_ADAM}),
                    *QUICK_PEERS,
                    *L4,
                ),
                claims=(l4adam_claim("Sec. 3, Table 1"), l4mom_claim("Sec. 3, Table 1")),
            ),
            Experiment(
                name="recht_regression",
                title="Ill-conditioned regression (Recht's 2-layer linear net, linspace A)",
                task="recht_regression",
                task_options={"variant": "linspace"},
                steps=1000,
                contenders=(
                    Contender("momentum", grid={"lr": (1e-6, 1e-5, 1e-4, 1e-3)}),
                    Contender("adam", grid={"lr": (1e-5, 1e-4, 1e-3, 1e-2)}),
                    *QUICK_PEERS,
                    *L4,
                ),
                loss_thresholds=(1e-2, 1e-6),
                notes="Final training losses span orders of magnitude: compared as log10.",
                claims=(
                    l4adam_claim("Sec. 3.1, Fig. 2", log_scale=True),
                    l4mom_claim("Sec. 3.1, Fig. 2", log_scale=True),
                ),
            ),
            Experiment(
                name="beale",
                title="Beale function, 500 steps of first-order methods",
                task="beale",
                seeds=1,
                deterministic=True,
                notes="Deterministic (fixed start, no data): one run per configuration.",
                contenders=(
                    Contender("momentum", grid={"lr": (1e-4, 1e-3, 1e-2, 1e-1)}),
                    Contender("adam", grid={"lr": (1e-3, 1e-2, 1e-1, 1.0)}),
                    *QUICK_PEERS,
                    *L4,
                ),
                claims=(
                    l4adam_claim("Sec. 3, Table 1, on a 2-D test function", log_scale=True),
                    l4mom_claim("Sec. 3, Table 1, on a 2-D test function", log_scale=True),
                ),
            ),
        ),
    )
