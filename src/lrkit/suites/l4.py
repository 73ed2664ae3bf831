"""The L4 paper's experiments (Rolinek & Martius 2018: Tables 1–4, Figs. 2, 3, 6, 7, 9), each
claim checked with the paper's own metric, at the CPU scale that runs here and at the
paper's scale where its data exist. This module is long because it is the paper's whole
evaluation in one place (one module per paper): its experiments, their claims in the
paper's words, and the two tables only this suite reports.

What the paper claims, and how it is checked here (every comparison by the noise rule):

* Sec. 3.1, Fig. 2 — on the ill-conditioned regression L4 overcomes what stalls GD and
  Adam: final training loss (log10) against the best LR of each grid; near machine
  precision (1e-10 × the initial loss) on every seed.
* Table 2 — L4Adam needs fewer steps than any grid point of GD and Adam; Levenberg–Marquardt
  fewer steps still, but each of its steps costs more, the more so on the larger instance.
* Sec. 3.2, Fig. 3, Table 3 — on the MNIST MLP: a lower training loss than the tuned bases,
  "comparable" test accuracy; the α = 0.25 variants (Table 1's bracketed values) too.
* Sec. 3.5, Fig. 7, Table 4 — on the Fashion-MNIST ConvNet with dropout: a training loss
  "roughly an order of magnitude lower" and a mild test-accuracy gain; a higher dropout rate
  adds test accuracy for L4.
* Sec. 3.4, Fig. 6 — on the recurrent task, without gradient clipping, L4 is better than or
  on par with the clipped, tuned baselines.
* Sec. 3.6, Fig. 9 — L4's advantage grows as the batch shrinks (MNIST MLP and the recurrent
  task).
* "no measurable runtime increase" — the cost checks.
"""

from __future__ import annotations

import statistics
from typing import Any

from lrkit.harness.claims import (
    at_least_as_good,
    beats,
    fewer_steps_than_grid,
    reaches_relative_loss,
)
from lrkit.harness.experiments import Claim, Contender, CostCheck, Experiment, Suite
from lrkit.harness.results import ExperimentResult, run_failure
from lrkit.harness.statistics import compare, describe
from lrkit.harness.trends import advantage_grows_along, setting_helps
from lrkit.suites.common import PEERS, l4adam_claim, l4mom_claim, peers

L4_METHODS = (Contender("l4adam"), Contender("l4mom"))
L4_STARRED = (
    Contender("l4adam", {"alpha": 0.25}, label="l4adam*"),
    Contender("l4mom", {"alpha": 0.25}, label="l4mom*"),
)
RECHT_GD_GRID = (1e-6, 1e-5, 1e-4, 1e-3)
RECHT_ADAM_GRID = (1e-5, 1e-4, 1e-3, 1e-2)
MLP_ADAM_GRID = (1e-4, 3e-4, 1e-3, 3e-3)
MLP_MOMENTUM_GRID = (0.003, 0.01, 0.03, 0.1, 0.3)
CONV_ADAM_GRID = (1e-4, 3e-4, 1e-3, 3e-3)
CONV_MOMENTUM_GRID = (3e-3, 1e-2, 3e-2, 0.1)
RECURRENT_ADAM_GRID = (1e-3, 3e-3, 1e-2, 3e-2)
RECURRENT_MOMENTUM_GRID = (0.03, 0.1, 0.3, 1.0)
RECURRENT_CLIP = 10.0
BATCH_SIZES = (8, 16, 32, 64)
TRAIN_LOSS = "train_loss_end"

# The CPU scale: budgets that fit 2 cores (what the paper ran is in SCALES["paper"]).
SCALES: dict[str, dict[str, Any]] = {
    "cpu": {
        "image_data": "fashion-mnist",
        "mlp_task": "fmnist_mlp2",
        "mlp_epochs": 5,
        "table3_epochs": (1, 2, 5),
        "conv_steps": 1200,
        "conv_budgets": (300, 600, 1200),
        "recurrent_steps": 3000,
        "sweep_recurrent_steps": 1500,
        "resnet": None,
    },
    "paper": {
        "image_data": "mnist",
        "mlp_task": "mnist_mlp2",
        "mlp_epochs": 30,
        "table3_epochs": (1, 10, 30),
        "conv_steps": 24000,
        "conv_budgets": (6000, 12000, 24000),
        "recurrent_steps": 20000,
        "sweep_recurrent_steps": 10000,
        "resnet": "cifar10_resnet32",
    },
}
MLP_EPOCH_STEPS = 59000 // 64  # the MLP tasks hold out 1000 of the 60,000 training images


def _recht(
    name: str, title: str, options: dict[str, Any], claims: tuple[Claim, ...], *, grids: bool = True
) -> Experiment:
    baselines = (
        (
            Contender("sgd", grid={"lr": RECHT_GD_GRID}, report_grid=True, label="gd"),
            Contender("adam", grid={"lr": RECHT_ADAM_GRID}, report_grid=True),
        )
        if grids
        else ()
    )
    return Experiment(
        name=name,
        title=title,
        task="recht_regression",
        task_options=options,
        steps=3000,
        log_every=1,
        seeds=5,
        contenders=(
            *baselines,
            *L4_METHODS,
            *L4_STARRED,
            Contender("levenberg_marquardt", label="lma"),
            *(peers() if grids else ()),
        ),
        loss_thresholds=(1e-2, 1e-6, 1e-10),
        notes=(
            "Full-batch gradient descent (`gd` = SGD on the full batch) and Adam at every LR "
            "of the paper's grids (extended while the best sits on an edge), 5 problem seeds "
            "each (a new A, X and initialisation per seed). Steps of Levenberg–Marquardt are "
            "its iterations (Jacobian evaluations). Times are seconds of training on this "
            "machine with parallel workers, comparable only within this table. Final losses "
            "span orders of magnitude: compared as log10."
        ),
        claims=claims,
    )


def _regression_claims(variant: str) -> tuple[Claim, ...]:
    return (
        at_least_as_good(
            "l4adam_vs_adam",
            "l4adam",
            "adam",
            f"L4Adam at its defaults ends with a training loss at least as low as Adam at its "
            f"best LR ({variant} A; L4 paper, Sec. 3.1, Fig. 2).",
            log_scale=True,
        ),
        at_least_as_good(
            "l4mom_vs_gd",
            "l4mom",
            "gd",
            f"L4Mom at its defaults ends with a training loss at least as low as gradient "
            f"descent at its best LR ({variant} A; L4 paper, Sec. 3.1, Fig. 2).",
            log_scale=True,
        ),
        reaches_relative_loss(
            "l4adam_machine_precision",
            "l4adam",
            1e-10,
            "L4Adam drives the loss to near machine precision (≤ 1e-10 × initial) "
            "(L4 paper, Sec. 3.1).",
        ),
        reaches_relative_loss(
            "l4mom_machine_precision",
            "l4mom",
            1e-10,
            "L4Mom drives the loss to near machine precision (≤ 1e-10 × initial) "
            "(L4 paper, Sec. 3.1).",
        ),
        fewer_steps_than_grid(
            "l4adam_fewer_steps",
            "l4adam",
            ("gd", "adam"),
            1e-6,
            "L4Adam reaches 1e-6 × the initial loss in fewer steps than GD and Adam at any LR "
            "of their grids (L4 paper, Table 2).",
        ),
        beats(
            "lma_fewer_steps",
            "lma",
            "l4adam*",
            "Levenberg–Marquardt reaches 1e-6 × the initial loss in fewer steps than L4Adam* "
            "(α = 0.25; L4 paper, Table 2).",
            metric="steps_to_1e-06",
        ),
    )


def _accuracy_at_epochs(epochs: tuple[int, ...]):
    def table(result: ExperimentResult) -> str:
        """L4's Table 3 analog: test accuracy after each epoch of ``epochs``."""
        lines = [
            f"Test accuracy after {', '.join(map(str, epochs))} epochs (L4 Table 3):",
            "",
            "| method | " + " | ".join(f"epoch {e}" for e in epochs) + " |",
            "|---|" + "---|" * len(epochs),
        ]
        labels = list(dict.fromkeys(r["label"] for r in result.runs if r["role"] == "selected"))
        for label in labels:
            cells = []
            for epoch in epochs:
                values = [
                    e["test_accuracy"]
                    for run in result.selected_runs(label)
                    for e in run["evals"]
                    if e["step"] == epoch * run["steps_per_epoch"] and run_failure(run) is None
                ]
                spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
                cells.append(f"{statistics.fmean(values):.4f}{spread}" if values else "—")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    return table


def _verdicts_by_budget(budgets: tuple[int, ...]):
    pairs = (("l4adam", "adam"), ("l4mom", "momentum"))

    def table(result: ExperimentResult) -> str:
        """The ConvNet's claims as a function of budget, from the same runs: training loss
        (log10) and test accuracy of each L4 variant against its base at every budget."""
        lines = [
            "The claims as a function of budget (the same runs, read at each step; L4 forgets "
            "L_min over τ = 1000 steps):",
            "",
            "| step | comparison | training loss (log10) | test accuracy |",
            "|---|---|---|---|",
        ]
        for budget in budgets:
            for method, base in pairs:
                cells = []
                for key, maximize, log in (
                    ("train_loss", False, True),
                    ("test_accuracy", True, False),
                ):
                    ours = _value_at(result.selected_runs(method), key, budget)
                    theirs = _value_at(result.selected_runs(base), key, budget)
                    comparison = compare(ours, theirs, maximize=maximize, log_scale=log)
                    cells.append(describe(comparison))
                lines.append(f"| {budget} | {method} vs {base} | {cells[0]} | {cells[1]} |")
        return "\n".join(lines)

    return table


def _value_at(runs: list[dict[str, Any]], key: str, step: int) -> list[float]:
    """Each successful run's ``key`` at ``step``: from the evaluations, or the logged
    training loss nearest before it."""
    values = []
    for run in runs:
        if run_failure(run) is not None:
            continue
        if key == "train_loss":
            logged = [
                loss
                for s, loss in zip(run["curve"]["step"], run["curve"]["train_loss"], strict=True)
                if s <= step
            ]
            if logged:
                values.append(logged[-1])
        else:
            values += [e[key] for e in run["evals"] if e["step"] == step and key in e]
    return values


def _conv(name: str, title: str, dropout: float, scale: dict[str, Any], claims) -> Experiment:
    return Experiment(
        name=name,
        title=title,
        task="fmnist_2c2d",
        task_options={"dropout": dropout},
        steps=scale["conv_steps"],
        eval_every=scale["conv_budgets"][0],
        seeds=5,
        contenders=(
            Contender("adam", grid={"lr": CONV_ADAM_GRID}),
            Contender("momentum", grid={"lr": CONV_MOMENTUM_GRID}),
            *L4_METHODS,
        ),
        claims=claims,
        extra=_verdicts_by_budget(scale["conv_budgets"]),
        notes=(
            f"Dropout {dropout}. Training loss is the logged mean mini-batch loss (with "
            "dropout active), as in the paper's Fig. 7. No peers here: each run of this "
            "ConvNet costs minutes on 2 CPU cores."
        ),
    )


def _sweep(kind: str, batch_size: int, scale: dict[str, Any]) -> Experiment:
    if kind == "mlp":
        steps = 59000 // batch_size
        return Experiment(
            name=f"mlp_batch{batch_size}",
            title=f"Batch-size sweep: MLP, batch {batch_size}, 1 epoch — L4 Fig. 9",
            task=scale["mlp_task"],
            batch_size=batch_size,
            steps=steps,
            eval_every=steps,
            seeds=5,
            contenders=(
                Contender("adam", grid={"lr": MLP_ADAM_GRID}),
                Contender("momentum", grid={"lr": MLP_MOMENTUM_GRID}),
                *L4_METHODS,
            ),
            notes="One point of the batch-size trend (claims across experiments).",
        )
    return Experiment(
        name=f"recurrent_batch{batch_size}",
        title=f"Batch-size sweep: repeat-copy LSTM, batch {batch_size} — L4 Fig. 9",
        task="repeat_copy",
        batch_size=batch_size,
        steps=scale["sweep_recurrent_steps"],
        eval_every=scale["sweep_recurrent_steps"] // 3,
        seeds=5,
        contenders=(
            Contender("adam", grid={"lr": RECURRENT_ADAM_GRID}, grad_clip=RECURRENT_CLIP),
            Contender("momentum", grid={"lr": RECURRENT_MOMENTUM_GRID}, grad_clip=RECURRENT_CLIP),
            *L4_METHODS,
        ),
        notes="One point of the batch-size trend (claims across experiments).",
    )


def _trend_claims() -> tuple[Claim, ...]:
    claims = []
    for kind, metric, text in (
        ("mlp", TRAIN_LOSS, "MNIST MLP, final training loss"),
        ("recurrent", "test_loss", "recurrent task, final loss"),
    ):
        points = tuple((f"{kind}_batch{b}", float(b)) for b in BATCH_SIZES)
        for method, base in (("l4adam", "adam"), ("l4mom", "momentum")):
            claims.append(
                advantage_grows_along(
                    f"{method}_batch_trend_{kind}",
                    f"{method}'s advantage over tuned {base} grows as the batch shrinks "
                    f"(batch 8 against 64; {text}, log10; L4 paper, Sec. 3.6, Fig. 9).",
                    method,
                    base,
                    points,
                    metric=metric,
                    log_scale=True,
                )
            )
    return tuple(claims)


def build(scale: str = "cpu") -> Suite:
    s = SCALES[scale]
    mlp_steps = s["mlp_epochs"] * MLP_EPOCH_STEPS
    recurrent_peers = tuple(Contender(name) for name in PEERS if name != "schedulefree_adamw")
    plan: list[Experiment] = [
        _recht(
            "recht_linspace",
            "Ill-conditioned regression, linspace A (the notebook's, κ ≈ 20) — L4 Fig. 2, Table 2",
            {"variant": "linspace"},
            _regression_claims("linspace"),
        ),
        _recht(
            "recht_logspace",
            "Ill-conditioned regression, logspace A (the intended, κ ≈ 1e3–1e4) — L4 Fig. 2",
            {"variant": "logspace"},
            _regression_claims("logspace"),
        ),
        _recht(
            "recht_linspace_192",
            "Ill-conditioned regression, the larger instance (192 weights) — L4 Table 2",
            {"variant": "linspace", "out_dim": 16, "in_dim": 8},
            (
                beats(
                    "lma_fewer_steps",
                    "lma",
                    "l4adam*",
                    "Levenberg–Marquardt reaches 1e-6 × the initial loss in fewer steps than "
                    "L4Adam* (α = 0.25) on the larger instance too (L4 paper, Table 2).",
                    metric="steps_to_1e-06",
                ),
            ),
            grids=False,
        ),
        Experiment(
            name="mlp",
            title=f"MLP 784-300-100-10 on {s['image_data']}, batch 64 — L4 Fig. 3, Table 3",
            task=s["mlp_task"],
            steps=mlp_steps,
            eval_every=MLP_EPOCH_STEPS,
            seeds=5,
            contenders=(
                Contender("adam", grid={"lr": MLP_ADAM_GRID}),
                Contender("momentum", grid={"lr": MLP_MOMENTUM_GRID}),
                *L4_METHODS,
                *L4_STARRED,
                *peers(MLP_ADAM_GRID),
            ),
            claims=(
                beats(
                    "l4adam_train_loss",
                    "l4adam",
                    "adam",
                    "L4Adam reaches a lower training loss than Adam at its best LR (log10; "
                    "L4 paper, Sec. 3.2, Fig. 3).",
                    metric=TRAIN_LOSS,
                    log_scale=True,
                ),
                beats(
                    "l4mom_train_loss",
                    "l4mom",
                    "momentum",
                    "L4Mom reaches a lower training loss than momentum SGD at its best LR "
                    "(log10; L4 paper, Sec. 3.2, Fig. 3).",
                    metric=TRAIN_LOSS,
                    log_scale=True,
                ),
                l4adam_claim("Table 3: test accuracy comparable"),
                l4mom_claim("Table 3: test accuracy comparable"),
                at_least_as_good(
                    "l4adam_star_vs_adam",
                    "l4adam*",
                    "adam",
                    "L4Adam with α = 0.25 (Table 1's bracketed value) is at least as good as "
                    "Adam at its best LR (L4 paper, Table 3, L4Adam*).",
                ),
                at_least_as_good(
                    "l4mom_star_vs_momentum",
                    "l4mom*",
                    "momentum",
                    "L4Mom with α = 0.25 is at least as good as momentum SGD at its best LR "
                    "(L4 paper, Table 3, L4Mom*).",
                ),
            ),
            extra=_accuracy_at_epochs(s["table3_epochs"]),
        ),
        _conv(
            "convnet",
            "Fashion-MNIST ConvNet (2 conv + 2 fc, dropout 0.4), batch 100 — L4 Fig. 7, Table 4",
            0.4,
            s,
            (
                beats(
                    "l4adam_train_loss",
                    "l4adam",
                    "adam",
                    "Despite dropout, L4Adam reaches a training loss roughly an order of "
                    "magnitude lower than Adam at its best LR (log10; L4 paper, Sec. 3.5, Fig. 7).",
                    metric=TRAIN_LOSS,
                    log_scale=True,
                ),
                beats(
                    "l4mom_train_loss",
                    "l4mom",
                    "momentum",
                    "Despite dropout, L4Mom reaches a training loss roughly an order of "
                    "magnitude lower than momentum SGD at its best LR (log10; L4 paper, "
                    "Sec. 3.5, Fig. 7).",
                    metric=TRAIN_LOSS,
                    log_scale=True,
                ),
                l4adam_claim("Table 4: a mild gain in test accuracy"),
                l4mom_claim("Table 4: a mild gain in test accuracy"),
            ),
        ),
        _conv(
            "convnet_dropout06",
            "Fashion-MNIST ConvNet with a higher dropout rate (0.6) — L4 Table 4",
            0.6,
            s,
            (
                l4adam_claim("Table 4, higher dropout"),
                l4mom_claim("Table 4, higher dropout"),
            ),
        ),
        Experiment(
            name="recurrent",
            title="Repeat-copy LSTM (DNC stand-in), batch 16; baselines clip the gradient norm "
            "at 10, L4 does not — L4 Fig. 6",
            task="repeat_copy",
            steps=s["recurrent_steps"],
            eval_every=s["recurrent_steps"] // 6,
            seeds=5,
            contenders=(
                Contender("adam", grid={"lr": RECURRENT_ADAM_GRID}, grad_clip=RECURRENT_CLIP),
                Contender(
                    "momentum", grid={"lr": RECURRENT_MOMENTUM_GRID}, grad_clip=RECURRENT_CLIP
                ),
                *L4_METHODS,
                *recurrent_peers,
            ),
            notes="Final losses span orders of magnitude across seeds: compared as log10.",
            claims=(
                l4adam_claim("Sec. 3.4, Fig. 6: recurrent, no clipping", log_scale=True),
                l4mom_claim("Sec. 3.4, Fig. 6: recurrent, no clipping", log_scale=True),
            ),
        ),
        *(_sweep("mlp", b, s) for b in BATCH_SIZES),
        *(_sweep("recurrent", b, s) for b in BATCH_SIZES),
    ]
    suite_claims = (
        *_trend_claims(),
        setting_helps(
            "l4adam_higher_dropout",
            "A higher dropout rate (0.6 instead of 0.4) gives L4Adam an additional gain in "
            "test accuracy (L4 paper, Sec. 3.5, Table 4).",
            "l4adam",
            "convnet_dropout06",
            "convnet",
        ),
        setting_helps(
            "l4mom_higher_dropout",
            "A higher dropout rate gives L4Mom an additional gain in test accuracy (L4 "
            "paper, Sec. 3.5, Table 4).",
            "l4mom",
            "convnet_dropout06",
            "convnet",
        ),
        setting_helps(
            "adam_higher_dropout",
            "For comparison, not the paper's claim: does the higher dropout rate help tuned "
            "Adam as well?",
            "adam",
            "convnet_dropout06",
            "convnet",
        ),
        advantage_grows_along(
            "lma_cost_grows_with_size",
            "Levenberg–Marquardt's cost per step grows faster with the problem size than "
            "L4Adam's (96 → 192 weights; log10 of seconds per step; L4 paper, Table 2).",
            "l4adam*",
            "lma",
            (("recht_linspace", 96.0), ("recht_linspace_192", 192.0)),
            metric="seconds_per_step",
            log_scale=True,
            towards="larger",
        ),
    )
    if s["resnet"] is not None:
        plan.insert(
            4,
            Experiment(
                name="resnet",
                title="CIFAR-10 ResNet-32, batch 128 — L4 Fig. 5",
                task=s["resnet"],
                seeds=5,
                contenders=(
                    Contender("momentum", grid={"lr": (0.01, 0.03, 0.1, 0.3)}),
                    Contender("adam", grid={"lr": CONV_ADAM_GRID}),
                    *L4_METHODS,
                ),
                claims=(l4adam_claim("Sec. 3.3, Fig. 5"), l4mom_claim("Sec. 3.3, Fig. 5")),
            ),
        )
    return Suite(
        name="l4",
        description=(
            "The experiments of Rolinek & Martius (2018), L4: practical loss-based stepsize "
            "adaptation, each claim checked with the paper's metric: L4Adam and L4Mom at their "
            "defaults (and α = 0.25) against Adam and momentum SGD at their best constant LR, "
            "the learning-rate-free peers as their authors run them, and Levenberg–Marquardt "
            "on the regression."
        ),
        seeds=5,
        scale=scale,
        scaled=(
            ""
            if scale == "paper"
            else "MNIST → Fashion-MNIST (same MLP 784-300-100-10, batch 64), 5 epochs instead "
            "of 30 (Table 3 at epochs 1/2/5 instead of 1/10/30); the ConvNet trains 1200 steps "
            "(2 epochs; verdicts also at 300 and 600) instead of 40 epochs; the DNC "
            "repeat-copy task → a repeat-copy LSTM (4 bits, 3000 steps); CIFAR-10 ResNet-32 "
            "runs only at `--scale paper`; batch-size sweeps train 1 epoch (MLP) or 1500 "
            "steps (LSTM). 5 seeds everywhere (the noise rule's minimum)."
        ),
        plan=tuple(plan),
        claims=suite_claims,
        costs=(
            CostCheck(
                "fmnist_mlp",
                ("l4adam", "l4mom"),
                max_ratio=1.10,
                source="L4 paper: no measurable runtime increase",
            ),
            CostCheck(
                "fmnist_2c2d",
                ("l4adam", "l4mom"),
                max_ratio=1.10,
                steps=40,
                source="L4 paper: no measurable runtime increase",
            ),
        ),
    )
