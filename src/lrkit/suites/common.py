"""What several suites share: the tuned baselines, the learning-rate-free peers as their users
run them, and L4's central claim."""

from __future__ import annotations

from lrkit.harness.claims import at_least_as_good
from lrkit.harness.experiments import Claim, Contender

LR_GRID_SGD = (1e-3, 1e-2, 1e-1, 1.0)
LR_GRID_ADAM = (1e-4, 1e-3, 1e-2, 1e-1)
PEERS = ("schedulefree_adamw", "prodigy", "dadapt_adam", "dog", "mechanic")


def tuned_baselines(sgd_grid=LR_GRID_SGD, adam_grid=LR_GRID_ADAM) -> tuple[Contender, ...]:
    """Every torch.optim baseline with its LR tuned (grids grow while their best point sits
    on an edge): SGD, momentum, Adam, AdamW, NAdamW (warmup + cosine), Polyak averaging,
    Lookahead."""
    return (
        Contender("sgd", grid={"lr": sgd_grid}),
        Contender("momentum", grid={"lr": sgd_grid}),
        Contender("adam", grid={"lr": adam_grid}),
        Contender("adamw", grid={"lr": adam_grid}),
        Contender("nadamw", grid={"lr": adam_grid}),
        Contender("polyak", grid={"lr": sgd_grid}),
        Contender("lookahead", grid={"lr": sgd_grid}),
    )


def peers(adam_grid=LR_GRID_ADAM) -> tuple[Contender, ...]:
    """The learning-rate-free peers as their authors say to run them: Prodigy (cosine
    annealing), D-Adapt Adam, DoG (iterate averaging) and Mechanic at their defaults;
    Schedule-Free AdamW (with its recommended warmup) still has an LR, which its authors
    put at 1–10× AdamW's, so it is tuned on the Adam grid."""
    return tuple(
        Contender(name, grid={"lr": adam_grid}) if name == "schedulefree_adamw" else Contender(name)
        for name in PEERS
    )


def l4adam_claim(source: str, metric: str | None = None, log_scale: bool = False) -> Claim:
    """L4's central claim for L4Adam; ``source`` names where in the paper this experiment's
    version of it stands."""
    return at_least_as_good(
        "l4adam_vs_adam",
        "l4adam",
        "adam",
        "L4Adam at its defaults is at least as good as Adam at its best constant LR "
        f"(L4 paper, {source}).",
        metric=metric,
        log_scale=log_scale,
    )


def l4mom_claim(source: str, metric: str | None = None, log_scale: bool = False) -> Claim:
    """L4's central claim for L4Mom (see :func:`l4adam_claim`)."""
    return at_least_as_good(
        "l4mom_vs_momentum",
        "l4mom",
        "momentum",
        "L4Mom at its defaults is at least as good as momentum SGD at its best constant "
        f"LR (L4 paper, {source}).",
        metric=metric,
        log_scale=log_scale,
    )
