"""What several suites share: the tuned baselines, the learning-rate-free peers, lrkit's
own methods at their defaults, and L4's central claim."""

from __future__ import annotations

from lrkit.harness.claims import at_least_as_good
from lrkit.harness.experiments import Claim, Contender
from lrkit.methods import implemented_methods

LR_GRID_SGD = (1e-3, 1e-2, 1e-1, 1.0)
LR_GRID_ADAM = (1e-4, 1e-3, 1e-2, 1e-1)
PEERS = ("schedulefree_adamw", "prodigy", "dadapt_adam", "dog")


def tuned_baselines(sgd_grid=LR_GRID_SGD, adam_grid=LR_GRID_ADAM) -> tuple[Contender, ...]:
    return (
        Contender("sgd", grid={"lr": sgd_grid}),
        Contender("momentum", grid={"lr": sgd_grid}),
        Contender("adam", grid={"lr": adam_grid}),
        Contender("adamw", grid={"lr": adam_grid}),
        Contender("polyak", grid={"lr": sgd_grid}),
        Contender("lookahead", grid={"lr": sgd_grid}),
    )


def peers(adam_grid=LR_GRID_ADAM) -> tuple[Contender, ...]:
    """The learning-rate-free peers at their defaults; Schedule-Free AdamW still has an LR
    (its authors suggest 1–10× AdamW's), so it is tuned on the Adam grid."""
    return tuple(
        Contender(name, grid={"lr": adam_grid}) if name == "schedulefree_adamw" else Contender(name)
        for name in PEERS
    )


PEERS_AT_DEFAULTS = tuple(Contender(name) for name in PEERS)


def lrkit_methods() -> tuple[Contender, ...]:
    """lrkit's own methods at their defaults (whichever are implemented so far)."""
    return tuple(Contender(spec.name) for spec in implemented_methods("lrkit"))


def l4adam_claim(source: str) -> Claim:
    """L4's central claim for L4Adam; ``source`` names where in the paper this experiment's
    version of it stands."""
    return at_least_as_good(
        "l4adam_vs_adam",
        "l4adam",
        "adam",
        "L4Adam at its defaults is at least as good as Adam at its best constant LR "
        f"(L4 paper, {source}).",
    )


def l4mom_claim(source: str) -> Claim:
    """L4's central claim for L4Mom (see :func:`l4adam_claim`)."""
    return at_least_as_good(
        "l4mom_vs_momentum",
        "l4mom",
        "momentum",
        "L4Mom at its defaults is at least as good as momentum SGD at its best constant "
        f"LR (L4 paper, {source}).",
    )
