"""The suites `lrkit bench` knows. Each is one registered factory."""

from __future__ import annotations

from lrkit.harness.claims import matches_or_beats
from lrkit.harness.suites import Entry, Experiment, Suite, register_suite
from lrkit.methods import implemented_methods

LR_GRID_SGD = (1e-3, 1e-2, 1e-1, 1.0)
LR_GRID_ADAM = (1e-4, 1e-3, 1e-2, 1e-1)
PEERS = ("schedulefree_adamw", "prodigy", "dadapt_adam", "dog")


def tuned_baselines(sgd_grid=LR_GRID_SGD, adam_grid=LR_GRID_ADAM) -> tuple[Entry, ...]:
    return (
        Entry("sgd", grid={"lr": sgd_grid}),
        Entry("momentum", grid={"lr": sgd_grid}),
        Entry("adam", grid={"lr": adam_grid}),
        Entry("adamw", grid={"lr": adam_grid}),
        Entry("polyak", grid={"lr": sgd_grid}),
        Entry("lookahead", grid={"lr": sgd_grid}),
    )


def peers(adam_grid=LR_GRID_ADAM) -> tuple[Entry, ...]:
    """The learning-rate-free peers at their defaults; Schedule-Free AdamW still has an LR
    (its authors suggest 1–10× AdamW's), so it is tuned on the Adam grid."""
    return tuple(
        Entry(name, grid={"lr": adam_grid}) if name == "schedulefree_adamw" else Entry(name)
        for name in PEERS
    )


def lrkit_methods() -> tuple[Entry, ...]:
    """lrkit's own methods at their defaults (whichever are implemented so far)."""
    return tuple(Entry(spec.name) for spec in implemented_methods("lrkit"))


def l4_claims() -> tuple:
    names = {spec.name for spec in implemented_methods("lrkit")}
    claims = []
    if "l4adam" in names:
        claims.append(
            matches_or_beats(
                "l4adam",
                "adam",
                "L4Adam at its defaults is at least as good as Adam at its best constant LR "
                "(L4 paper, Sec. 5).",
            )
        )
    if "l4mom" in names:
        claims.append(
            matches_or_beats(
                "l4mom",
                "momentum",
                "L4Mom at its defaults is at least as good as momentum SGD at its best "
                "constant LR (L4 paper, Sec. 5).",
            )
        )
    return tuple(claims)


@register_suite("quick", "offline, a few minutes: digits MLP, Recht regression, Beale")
def quick() -> Suite:
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
        experiments=(
            Experiment(
                name="digits_mlp",
                title="scikit-learn digits, MLP",
                task="digits_mlp",
                entries=tuned_baselines() + peers() + lrkit_methods(),
                claims=l4_claims(),
            ),
            Experiment(
                name="recht_regression",
                title="Ill-conditioned regression (Recht's 2-layer linear net, linspace A)",
                task="recht_regression",
                task_options={"variant": "linspace"},
                steps=1000,
                entries=(
                    Entry("sgd", grid={"lr": (1e-6, 1e-5, 1e-4, 1e-3)}),
                    Entry("adam", grid={"lr": (1e-5, 1e-4, 1e-3, 1e-2)}),
                )
                + peers()
                + lrkit_methods(),
                loss_thresholds=(1e-2, 1e-6),
                claims=l4_claims()[:1],
            ),
            Experiment(
                name="beale",
                title="Beale function, 500 steps of first-order methods",
                task="beale",
                entries=(
                    Entry("sgd", grid={"lr": (1e-4, 1e-3, 1e-2, 1e-1)}),
                    Entry("momentum", grid={"lr": (1e-4, 1e-3, 1e-2, 1e-1)}),
                    Entry("adam", grid={"lr": (1e-3, 1e-2, 1e-1, 1.0)}),
                )
                + peers()
                + lrkit_methods(),
            ),
        ),
    )
