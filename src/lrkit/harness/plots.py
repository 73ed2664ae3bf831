"""The figures of a report, drawn from results alone: curves per experiment (median over
seeds with the interquartile band), LR sensitivity of the tuned baselines against the
learned-LR methods at their defaults, and the suite's verdicts as effects with intervals.

Every figure draws a method in the same colour and line style, from :func:`style` — one
palette in one place: lrkit's methods solid, baselines dashed, learning-rate-free peers
dotted.
"""

from __future__ import annotations

import hashlib
import math
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from lrkit.harness.results import ExperimentResult, metric_values, run_failure

# Colour per method family member; unknown names get a stable colour from FALLBACK.
COLORS = {
    "l4adam": "#d62728",
    "l4mom": "#ff7f0e",
    "hd_sgd": "#8c564b",
    "hd_adam": "#e377c2",
    "rtho": "#bcbd22",
    "marthe": "#17becf",
    "sgd": "#7f7f7f",
    "gd": "#7f7f7f",
    "momentum": "#1f77b4",
    "adam": "#2ca02c",
    "adamw": "#98df8a",
    "nadamw": "#9467bd",
    "polyak": "#aec7e8",
    "lookahead": "#c5b0d5",
    "schedulefree_adamw": "#393b79",
    "prodigy": "#637939",
    "dadapt_adam": "#8c6d31",
    "dog": "#843c39",
    "mechanic": "#7b4173",
    "levenberg_marquardt": "#000000",
}
FALLBACK = (
    "#5254a3",
    "#6b6ecf",
    "#9c9ede",
    "#8ca252",
    "#b5cf6b",
    "#bd9e39",
    "#e7ba52",
    "#ad494a",
    "#d6616b",
    "#a55194",
    "#ce6dbd",
    "#de9ed6",
)
LINESTYLES = {"lrkit": "-", "baseline": "--", "peer": ":", "solver": "-.", "example": "-"}
OUTCOME_COLORS = {"better": "#2ca02c", "tie": "#7f7f7f", "worse": "#d62728", "undecided": "#c7c7c7"}


def method_of(label: str) -> str:
    """The method a table label names: ``adam+sgdr`` → adam, ``gd [lr=0.1]`` → gd."""
    return label.split(" [")[0].split("+")[0]


def style(label: str, kind: str | None = None) -> dict[str, Any]:
    """Matplotlib keyword arguments for ``label``'s line: its colour and line style."""
    name = method_of(label)
    color = COLORS.get(name)
    if color is None:
        index = int(hashlib.sha1(name.encode()).hexdigest(), 16) % len(FALLBACK)
        color = FALLBACK[index]
    if kind is None:
        from lrkit.methods import METHODS

        spec = METHODS.get(name)
        kind = spec.kind if spec is not None else "baseline"
    width = 2.0 if kind in ("lrkit", "example") else 1.3
    return {"color": color, "linestyle": LINESTYLES.get(kind, "--"), "linewidth": width}


def wrapped(title: str, width: int = 80) -> str:
    """A figure title broken into lines that fit the figure (long experiment titles were cut
    off at the edges)."""
    return textwrap.fill(title, width)


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None without matplotlib (the report then
    says how to get plots)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _band(runs: list[dict[str, Any]], key: str):
    """(steps, median, q25, q75) over the runs that did not fail (all of them when every
    run failed), up to the shortest curve."""
    finished = [r for r in runs if run_failure(r) is None] or runs
    series = [(r["curve"]["step"], r["curve"][key]) for r in finished if key in r["curve"]]
    if not series:
        return None
    length = min(len(s[0]) for s in series)
    if length == 0:
        return None
    steps = np.asarray(series[0][0][:length], dtype=float)
    values = _drawable(np.asarray([s[1][:length] for s in series], dtype=float))
    with np.errstate(all="ignore"):
        q25, median, q75 = np.nanpercentile(values, [25, 50, 75], axis=0)
    return steps, median, q25, q75


PLOT_LIMIT = 1e100


def _drawable(values: np.ndarray) -> np.ndarray:
    """inf, NaN and magnitudes beyond PLOT_LIMIT — a failed run on its way to overflow,
    whose curve is drawn when every seed failed — as gaps: matplotlib's log axes break on
    values near 1e300. (A learned LR of exactly 0 is a gap on the log axis by itself.)"""
    return np.where(np.abs(values) <= PLOT_LIMIT, values, np.nan)


def _draw(axis, band, label: str) -> None:
    if band is None:
        return
    steps, median, q25, q75 = band
    line_style = style(label)
    axis.plot(steps, median, label=label, **line_style)
    if not np.allclose(q25, q75, equal_nan=True):
        axis.fill_between(steps, q25, q75, color=line_style["color"], alpha=0.15, linewidth=0)


def plot_experiment(result: ExperimentResult, out: Path) -> Path | None:
    """Training loss, learning rate (the effective LR where the method reports one) and the
    primary metric against steps: median over the selected seeds with the interquartile
    band."""
    plt = pyplot()
    labels = list(dict.fromkeys(r["label"] for r in result.runs if r["role"] == "selected"))
    if plt is None or not labels:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    for label in labels:
        runs = result.selected_runs(label)
        _draw(axes[0], _band(runs, "train_loss"), label)
        lr_key = "effective_lr" if any("effective_lr" in r["curve"] for r in runs) else "lr"
        _draw(axes[1], _band(runs, lr_key), label)
        finished = [r for r in runs if run_failure(r) is None] or runs
        evals = [[e.get(result.primary_metric, math.nan) for e in r["evals"]] for r in finished]
        length = min(len(e) for e in evals)
        steps = np.asarray([e["step"] for e in finished[0]["evals"][:length]], dtype=float)
        values = _drawable(np.asarray([e[:length] for e in evals], dtype=float))
        with np.errstate(all="ignore"):
            q25, median, q75 = np.nanpercentile(values, [25, 50, 75], axis=0)
        _draw(axes[2], (steps, median, q25, q75), label)
    n_seeds = max(len(result.selected_runs(label)) for label in labels)
    axes[0].set(title="training loss (logged mean)", xlabel="step", yscale="log")
    axes[1].set(title="learning rate (effective LR where reported)", xlabel="step", yscale="log")
    axes[2].set(title=result.primary_metric, xlabel="step")
    if not result.maximize:
        axes[2].set_yscale("log")
    axes[2].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(
        wrapped(f"{result.experiment.title} — median over {n_seeds} seeds, band: quartiles", 120)
    )
    fig.tight_layout()
    path = out / f"{result.experiment.name}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_sensitivity(
    result: ExperimentResult, tuning: list[dict[str, Any]], out: Path
) -> Path | None:
    """Each tuned contender's primary metric across its whole LR grid (the tuning runs), and
    every untuned method's median over its seeds as a horizontal line: what "no tuning"
    buys against a grid search."""
    plt = pyplot()
    tuned = [t for t in tuning if t["experiment"] == result.experiment.name and t["values"]]
    numeric = [t for t in tuned if all(isinstance(v, (int, float)) for v in t["values"])]
    if plt is None or not numeric:
        return None
    fig, axis = plt.subplots(figsize=(8, 4.8))
    for entry in numeric:
        label = entry["contender"]
        points = []
        for value in entry["values"]:
            runs = [
                r
                for r in result.runs
                if r["label"] == label
                and r["role"] in ("tuning", "grid", "selected")
                and r["config"]["hparams"].get(entry["hyperparameter"]) == value
                and (r["role"] != "selected" or entry["seed"] == "reported seeds")
            ]
            values = metric_values(runs, result.primary_metric)
            points.append((value, float(np.median(values)) if values else math.nan))
        xs, ys = zip(*sorted(points), strict=True)
        axis.plot(xs, ys, marker="o", label=f"{label} ({entry['hyperparameter']})", **style(label))
    tuned_labels = {t["contender"] for t in tuned}
    for label in dict.fromkeys(r["label"] for r in result.runs if r["role"] == "selected"):
        if label in tuned_labels:
            continue
        values = result.values(label)
        if values:
            axis.axhline(
                float(np.median(values)), label=f"{label} (no grid search)", **style(label)
            )
    axis.set(
        xscale="log",
        xlabel="learning rate (tuned hyperparameter)",
        ylabel=result.primary_metric,
        title=wrapped(f"{result.experiment.title}: LR sensitivity", width=56),
    )
    if not result.maximize:
        axis.set_yscale("log")
    axis.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    path = out / f"{result.experiment.name}_sensitivity.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_verdicts(claims: list[dict[str, Any]], out: Path, title: str) -> Path | None:
    """Every comparison claim as its effect with the 95 % interval, coloured by outcome
    (positive: the method is better); one panel per metric and scale."""
    plt = pyplot()
    rows = [c for c in claims if c.get("comparison") and c["comparison"]["effect"] is not None]
    if plt is None or not rows:
        return None
    groups: dict[str, list[dict[str, Any]]] = {}
    for claim in rows:
        key = f"{claim['metric'] or 'metric'} ({claim['comparison']['scale']})"
        groups.setdefault(key, []).append(claim)
    heights = [0.45 * len(group) + 0.9 for group in groups.values()]
    fig, axes = plt.subplots(
        len(groups),
        1,
        figsize=(11, sum(heights) + 0.8),
        squeeze=False,
        gridspec_kw={"height_ratios": heights},
    )
    for axis, (key, group) in zip(axes[:, 0], groups.items(), strict=True):
        for index, claim in enumerate(group):
            comparison = claim["comparison"]
            color = OUTCOME_COLORS[comparison["outcome"]]
            axis.plot([comparison["low"], comparison["high"]], [index, index], color=color, lw=2.5)
            axis.plot([comparison["effect"]], [index], "o", color=color)
        axis.axvline(0.0, color="black", linewidth=0.8)
        axis.set_yticks(range(len(group)))
        axis.set_yticklabels([f"{c['experiment']}: {c['name']}" for c in group], fontsize=7)
        axis.set_ylim(len(group) - 0.5, -0.5)
        axis.set_xlabel(f"effect on {key}; > 0: the method is better; 95 % interval", fontsize=8)
    handles = [
        plt.Line2D([], [], color=color, lw=2.5, label=outcome)
        for outcome, color in OUTCOME_COLORS.items()
    ]
    axes[0, 0].legend(handles=handles, fontsize=7, loc="upper right", ncol=4)
    fig.suptitle(title)
    fig.tight_layout()
    path = out / "verdicts.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


HYPERGRADIENT_KEYS = ("effective_lr", "mu", "beta", "hypergradient")


def plot_diagnostics(
    result: ExperimentResult,
    out: Path,
    keys: tuple[str, ...] = HYPERGRADIENT_KEYS,
    log_keys: tuple[str, ...] = ("effective_lr", "beta"),
) -> Path | None:
    """One panel per logged diagnostic (default: a hypergradient method's η, μ, β and
    hypergradient) against steps, median over the selected seeds with the interquartile
    band, for every method that reports it; an experiment's own figure
    (``Experiment(figure=...)``)."""
    plt = pyplot()
    labels = list(dict.fromkeys(r["label"] for r in result.runs if r["role"] == "selected"))
    reported = [k for k in keys if any(k in r["curve"] for r in result.runs)]
    if plt is None or not labels or not reported:
        return None
    fig, axes = plt.subplots(1, len(reported), figsize=(4.4 * len(reported), 4.2), squeeze=False)
    for axis, key in zip(axes[0], reported, strict=True):
        for label in labels:
            runs = [r for r in result.selected_runs(label) if key in r["curve"]]
            if runs:
                _draw(axis, _band(runs, key), label)
        axis.set(title=key, xlabel="step", yscale="log" if key in log_keys else "linear")
    axes[0, -1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(wrapped(f"{result.experiment.title}: what the learned-LR methods report", 120))
    fig.tight_layout()
    path = out / f"{result.experiment.name}_diagnostics.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
