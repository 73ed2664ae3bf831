"""The Markdown report and PNG plots of a bench run, rendered from its results (what
``lrkit bench`` returns and results.json holds): summary tables (mean ± std over seeds),
the tuned hyperparameters, each claim's verdict with its measured numbers, and curves.
Verdicts are read from the results, never decided here."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from lrkit.harness.experiments import Suite
from lrkit.harness.results import ExperimentResult, experiment_results, fmt, mean_std


def _table(result: ExperimentResult) -> list[str]:
    metrics = list(dict.fromkeys(row["metric"] for row in result.rows))
    labels = list(dict.fromkeys(row["method"] for row in result.rows))
    arrow = "↑" if result.maximize else "↓"
    header = ["method", "hyperparameters"] + [
        f"{m} {arrow}" if m == result.primary_metric else m for m in metrics
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label in labels:
        first = result.row(label, metrics[0]) or {}
        hparams = first.get("hparams", {})
        cells = [
            label,
            ", ".join(f"{k}={fmt(v) if isinstance(v, float) else v}" for k, v in hparams.items())
            or "defaults",
        ]
        cells += [mean_std(result.row(label, m)) for m in metrics]
        if first.get("diverged"):
            cells[0] += f" ({first['diverged']}/{first['runs']} diverged)"
        lines.append("| " + " | ".join(cells) + " |")
    return lines


_VERDICT_WORDS = {True: "**held**", False: "**did not hold**", None: "**undecided**"}


def _claim_lines(claims: list[dict[str, Any]], experiment: str) -> list[str]:
    return [
        f"- {_VERDICT_WORDS[c['held']]} — {c['claim']} Measured: {c['measured']}"
        for c in claims
        if c["experiment"] == experiment
    ]


def write_report(results: dict[str, Any], out: Path, suite: Suite) -> Path:
    """Writes report.md and the PNG plots of ``results`` (a finalized results dict) into
    ``out``; returns the report's path."""
    env = results["environment"]
    lines = [
        f"# lrkit bench `{results['suite']}`" + (" (smoke run)" if results.get("smoke") else ""),
        "",
        suite.description,
        "",
        f"- Command: `{results['command']}`",
        f"- Machine: {env['cpu']}, {env['cpu_count']} cores, torch {env['torch']} "
        f"({env['torch_threads']} threads), Python {env['python']}, {env['platform']}",
        f"- Started {results['started']}; duration {results['duration_s'] / 60:.1f} min"
        + (
            f" (this invocation; {results['resumed_runs']} of the runs were resumed from an "
            "earlier one)"
            if results.get("resumed_runs")
            else ""
        )
        + f"; summed training time of all runs {results.get('train_time_s', 0) / 60:.1f} min; "
        f"{len(results['runs'])} runs; seeds per configuration: {results['seeds']}",
        "- Tuning (DeepOBS protocol): every grid point runs with seed 0, the best by the "
        "task's primary metric (diverged = worst) is rerun with the other seeds; seed 0 is "
        "reused, which favours the tuned baselines. Values are mean ± std over seeds "
        "(n/N where some runs diverged or never reached a threshold).",
    ]
    if suite.scaled:
        lines += [f"- Scaled to this machine: {suite.scaled}"]
    claims = results.get("claims", [])
    summary_at = len(lines)
    for result in experiment_results(suite, results["runs"]):
        exp = result.experiment
        lines += [
            "",
            f"## {exp.title}",
            "",
            f"Task `{exp.task}`"
            + (f" {exp.task_options}" if exp.task_options else "")
            + f"; primary metric `{result.primary_metric}`.",
        ]
        if exp.notes:
            lines += ["", exp.notes]
        lines += ["", *_table(result)]
        claim_lines = _claim_lines(claims, exp.name)
        if claim_lines:
            lines += ["", "Claims:", "", *claim_lines]
        if exp.extra is not None:
            lines += ["", exp.extra(result)]
        plot = plot_experiment(result, out)
        if plot is not None:
            lines += ["", f"![{exp.name}]({plot.name})"]
    if results.get("cost"):
        lines += _cost_section(results["cost"]) + ["", *_claim_lines(claims, "cost")]
    lines[summary_at:summary_at] = _claims_at_a_glance(claims)
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report


def _claims_at_a_glance(claims: list[dict[str, Any]]) -> list[str]:
    if not claims:
        return []
    verdicts = {True: "held", False: "did not hold", None: "undecided"}
    held = sum(1 for c in claims if c["held"])
    lines = [
        "",
        f"## Claims at a glance: {held} of {len(claims)} held",
        "",
        "| experiment | claim | verdict |",
        "|---|---|---|",
    ]
    lines += [f"| {c['experiment']} | {c['claim']} | {verdicts[c['held']]} |" for c in claims]
    return lines


def _cost_section(rows: list[dict[str, Any]]) -> list[str]:
    """The step-cost table: ratios of medians measured interleaved in one process."""
    lines = [
        "",
        "## Cost per training step",
        "",
        "Median ms per full step (forward, backward, update), methods interleaved step by step "
        "in one process on the same batches; the ratio is to the base optimizer's median from "
        "the same run. Peak memory: growth of the peak RSS of a child process running only "
        "that method.",
        "",
        "| task | method | base | ms/step | ratio to base | target | peak MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        target = row.get("max_ratio")
        lines.append(
            f"| {row['task']} | {row['method']} | {row['base'] or '—'} | "
            f"{row['ms_per_step']:.3f} | {fmt(row['ratio_to_base'])} | "
            f"{'≤ ' + fmt(target) if target else '—'} | {fmt(row['peak_memory_mb'])} |"
        )
    return lines


PLOT_LIMIT = 1e100


def _mean_curve(runs: list[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Mean over seeds, up to the shortest run; diverged runs are left out unless every
    seed diverged."""
    finished = [r for r in runs if not r["diverged"]] or runs
    series = [(r["curve"]["step"], r["curve"][key]) for r in finished if key in r["curve"]]
    if not series:
        return None
    length = min(len(s[0]) for s in series)
    if length == 0:
        return None
    steps = np.asarray(series[0][0][:length], dtype=float)
    values = np.asarray([s[1][:length] for s in series], dtype=float)
    return steps, _mean_over_seeds(values)


def _mean_over_seeds(values: np.ndarray) -> np.ndarray:
    """The mean over axis 0 of the drawable values: inf, NaN and magnitudes beyond
    PLOT_LIMIT (a diverged run on its way to overflow; matplotlib's log axes fail on values
    near 1e300) leave a gap in the plot."""
    finite = np.where(np.abs(values) <= PLOT_LIMIT, values, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a step where no seed is finite
        return np.nanmean(finite, axis=0)


def plot_experiment(result: ExperimentResult, out: Path) -> Path | None:
    """Training loss, learning rate (effective LR where the method reports one) and the
    primary metric against steps, mean over the selected seeds of each method."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    labels = list(dict.fromkeys(r["label"] for r in result.runs if r["role"] == "selected"))
    if not labels:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for label in labels:
        runs = result.selected_runs(label)
        loss = _mean_curve(runs, "train_loss")
        if loss is not None:
            axes[0].plot(*loss, label=label)
        lr_key = "effective_lr" if any("effective_lr" in r["curve"] for r in runs) else "lr"
        lr = _mean_curve(runs, lr_key)
        if lr is not None and np.any(lr[1] > 0):
            # a learned LR may sit at exactly 0 (hypergradient methods clamp η at 0): a gap
            # on the log axis, not a point at -inf
            axes[1].plot(lr[0], np.where(lr[1] > 0, lr[1], np.nan), label=label)
        metric_runs = [
            [(e["step"], e.get(result.primary_metric, math.nan)) for e in r["evals"]] for r in runs
        ]
        length = min(len(m) for m in metric_runs)
        steps = [m[0] for m in metric_runs[0][:length]]
        values = _mean_over_seeds(np.asarray([[v for _, v in m[:length]] for m in metric_runs]))
        axes[2].plot(steps, values, marker=".", label=label)
    axes[0].set(title="training loss (logged mean)", xlabel="step", yscale="log")
    axes[1].set(title="learning rate (effective LR for L4)", xlabel="step", yscale="log")
    axes[2].set(title=result.primary_metric, xlabel="step")
    if not result.maximize:
        axes[2].set_yscale("log")
    axes[2].legend(fontsize=7, loc="best")
    fig.suptitle(result.experiment.title)
    fig.tight_layout()
    path = out / f"{result.experiment.name}.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
