"""The Markdown report of a bench run, rendered from its results (what ``lrkit bench``
returns and results.json holds): provenance, the protocol, the verdicts at a glance, and per
experiment its table, the grids the baselines were tuned on, its claims and its figures.
Verdicts are read from the results, never decided here."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from lrkit.harness.experiments import Suite
from lrkit.harness.plots import plot_experiment, plot_sensitivity, plot_verdicts
from lrkit.harness.results import (
    ExperimentResult,
    experiment_results,
    fmt,
    format_value,
    mean_std,
)
from lrkit.harness.statistics import CONFIDENCE, MIN_SEEDS
from lrkit.harness.tuning import TUNING_SEED
from lrkit.methods import METHODS

VERDICT_WORDS = {True: "held", False: "did not hold", None: "undecided"}


def _level(text: str) -> str:
    """A loss level as a share of the initial loss: 0.01 → "1 %", 1e-06 → "1e-6"."""
    level = float(text)
    if level >= 1e-3:
        return f"{level * 100:g} %"
    return format_value(level)


def metric_heading(metric: str) -> str:
    """Column headings that say what they measure (seeds that never got there are left out
    and counted as n/N)."""
    if metric.startswith("steps_to_"):
        return f"steps to {_level(metric.removeprefix('steps_to_'))} of the initial loss"
    if metric.startswith("time_to_"):
        return f"time (s) to {_level(metric.removeprefix('time_to_'))} of the initial loss"
    return metric


def _hyperparameters(label: str, method: str, hparams: dict[str, Any]) -> str:
    """The values a run used: the method's documented defaults overridden by the suite's."""
    spec = METHODS.get(method)
    merged = {**(spec.defaults if spec else {}), **hparams}
    shown = {k: v for k, v in merged.items() if k != "schedule_options"}
    return ", ".join(f"{k}={format_value(v)}" for k, v in shown.items()) or "—"


def _table(result: ExperimentResult) -> list[str]:
    metrics = list(dict.fromkeys(row["metric"] for row in result.rows))
    labels = list(dict.fromkeys(row["method"] for row in result.rows))
    arrow = "↑" if result.maximize else "↓"
    header = ["method", "hyperparameters"] + [
        f"{metric_heading(m)} {arrow}" if m == result.primary_metric else metric_heading(m)
        for m in metrics
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    methods = {r["label"]: r["config"]["method"] for r in result.runs}
    for label in labels:
        first = result.row(label, metrics[0]) or {}
        method = methods.get(label.split(" [")[0], label)
        cells = [label, _hyperparameters(label, method, first.get("hparams", {}))]
        cells += [mean_std(result.row(label, m)) for m in metrics]
        failed = []
        if first.get("diverged"):
            failed.append(f"{first['diverged']}/{first['runs']} diverged")
        if first.get("at_chance"):
            failed.append(f"{first['at_chance']}/{first['runs']} at chance")
        if failed:
            cells[0] += f" ({', '.join(failed)})"
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _grids(result: ExperimentResult, tuning: list[dict[str, Any]]) -> list[str]:
    entries = [t for t in tuning if t["experiment"] == result.experiment.name]
    if not entries:
        return []
    lines = [
        "",
        "Grids (selection on the validation split, or the training loss where it is the "
        "objective; score per point; ✔ selected; ⚠ still on an edge after extension):",
        "",
        "| contender | tuned | selected on | seed | grid: score |",
        "|---|---|---|---|---|",
    ]
    for entry in entries:
        points = []
        for value, score in zip(entry["values"], entry["scores"], strict=True):
            mark = " ✔" if value == entry["selected"] else ""
            shown = "failed" if score is None else fmt(abs(score))
            points.append(f"{format_value(value)}: {shown}{mark}")
        edge = " ⚠ edge" if entry["at_edge"] else ""
        extended = f" (+{entry['extended']} extended)" if entry["extended"] else ""
        lines.append(
            f"| {entry['contender']}{edge} | {entry['hyperparameter']}{extended} | "
            f"{entry['selection_metric']} | {entry['seed']} | {'; '.join(points)} |"
        )
    return lines


def _claim_lines(claims: list[dict[str, Any]], experiment: str) -> list[str]:
    lines = []
    for claim in claims:
        if claim["experiment"] != experiment:
            continue
        lines.append(f"- **{_verdict(claim)}** — {claim['claim']} Measured: {claim['measured']}")
    return lines


def _verdict(claim: dict[str, Any]) -> str:
    """ "held (tie)": the verdict, and the comparison's outcome where it adds to it."""
    word = VERDICT_WORDS[claim["held"]]
    outcome = claim.get("outcome")
    return f"{word} ({outcome})" if outcome and outcome != word else word


def _at_a_glance(claims: list[dict[str, Any]], figure: Path | None) -> list[str]:
    if not claims:
        return []
    held = Counter(VERDICT_WORDS[c["held"]] for c in claims)
    outcomes = Counter(c["outcome"] for c in claims if c.get("outcome"))
    lines = [
        "",
        "## Claims at a glance: "
        + ", ".join(f"{held[w]} {w}" for w in ("held", "did not hold", "undecided")),
        "",
        "Comparisons: "
        + ", ".join(f"{outcomes[o]} {o}" for o in ("better", "tie", "worse", "undecided"))
        + f". Rule: Welch {CONFIDENCE:.0%} interval of the difference (log10 where stated), "
        f"at least {MIN_SEEDS} seeds a side, else undecided; 'at least as good' holds on "
        "better or tie, 'beats' only on better; a method that failed (diverged, or ended at "
        "chance level) on more seeds than its baseline is worse.",
        "",
    ]
    if figure is not None:
        lines += ["", f"![verdicts]({figure.name})"]
    lines += [
        "",
        "| experiment | claim | verdict | effect [95 % interval] | n |",
        "|---|---|---|---|---|",
    ]
    for claim in claims:
        comparison = claim.get("comparison") or {}
        effect = "—"
        if comparison.get("effect") is not None:
            unit = " dec" if comparison["scale"] == "log10" else ""
            effect = f"{comparison['effect']:+.3g}{unit}"
            if comparison["low"] != comparison["high"]:
                effect += f" [{comparison['low']:+.3g}, {comparison['high']:+.3g}]"
        n = f"{comparison['n_method']} vs {comparison['n_baseline']}" if comparison else "—"
        lines.append(
            f"| {claim['experiment']} | {claim['claim']} | {_verdict(claim)} | {effect} | {n} |"
        )
    return lines


def _header(results: dict[str, Any], suite: Suite) -> list[str]:
    env = results["environment"]
    provenance = results.get("provenance") or {}
    state = provenance.get("code_state") or "not a git checkout"
    if provenance.get("dirty"):
        state += " (uncommitted changes)"
    packages = ", ".join(
        f"{name} {version}" for name, version in env.get("packages", {}).items() if version
    )
    lines = [
        f"# lrkit bench `{results['suite']}`" + (" (smoke run)" if results.get("smoke") else ""),
        "",
        suite.description,
        "",
        f"- Command: `{results['command']}`",
        f"- Code: lrkit {provenance.get('lrkit', '?')}, commit {state}",
        f"- Machine: {env['cpu']}, {env['cpu_count']} cores; {env.get('workers', 1)} worker(s) "
        f"× {env['torch_threads']} torch thread(s) per run; Python {env['python']}, "
        f"{env['platform']}",
        f"- Packages: {packages or 'torch ' + env['torch']}",
        f"- Started {results['started']}; wall time {results['duration_s'] / 60:.1f} min"
        + (
            f" (this invocation; {results['resumed_runs']} runs resumed from earlier ones)"
            if results.get("resumed_runs")
            else ""
        )
        + f"; summed training time {results.get('train_time_s', 0) / 60:.1f} min; "
        f"{len(results['runs'])} runs; reported seeds per configuration: {results['seeds']}",
    ]
    rebuilt = results.get("report_rebuilt")
    if rebuilt and rebuilt.get("code_state") != provenance.get("code_state"):
        lines.append(
            f"- Report rebuilt from results.json by `lrkit report` at commit "
            f"{rebuilt.get('code_state')}: the summaries and verdicts come from that code, the "
            "runs from the commit above."
        )
    if results.get("mixed_runs"):
        lines.append(
            f"- **Mixed code states:** {results['mixed_runs']} resumed runs were recorded by "
            "another code state (resumed with --allow-mixed)."
        )
    lines += [
        f"- Protocol: tuned hyperparameters are selected on the validation split (the "
        f"training loss where it is the task's objective) with seed {TUNING_SEED}, which no "
        "reported run uses; a grid whose best point sits on an edge is extended by one log "
        "step, as often as the experiment allows (3 times a side unless stated). The winner "
        "and every untuned method run with the reported seeds 0…N−1; tables show mean ± std "
        "over them (n/N where some runs failed or never reached a threshold). Figures show "
        "medians with the interquartile band.",
    ]
    if suite.scaled:
        lines.append(f"- Scaled to this machine: {suite.scaled}")
    return lines


def _cost_section(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "## Cost per training step",
        "",
        "Milliseconds per full step (forward, backward, update), methods interleaved step by "
        "step in one process on the same batches; the ratio to the base optimizer is the "
        "median over repeated measurements (min–max beside it), each the ratio of medians of "
        "one interleaved run. Peak memory: growth of the peak RSS of a child process running "
        "only that method.",
        "",
        "| task | method | base | ms/step | ratio to base (min–max) | target | peak MB |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        target = row.get("max_ratio")
        ratio = fmt(row["ratio_to_base"])
        if row.get("ratio_min") is not None:
            ratio += f" ({row['ratio_min']:.3f}–{row['ratio_max']:.3f})"
        lines.append(
            f"| {row['task']} | {row['method']} | {row['base'] or '—'} | "
            f"{row['ms_per_step']:.3f} | {ratio} | {'≤ ' + fmt(target) if target else '—'} | "
            f"{fmt(row['peak_memory_mb'])} |"
        )
    return lines


def write_report(results: dict[str, Any], out: Path, suite: Suite) -> Path:
    """Writes report.md and the PNG figures of ``results`` (a finalized results dict) into
    ``out``; returns the report's path."""
    claims = results.get("claims", [])
    tuning = results.get("tuning", [])
    lines = _header(results, suite)
    summary_at = len(lines)
    for result in experiment_results(suite, results["runs"]):
        exp = result.experiment
        lines += [
            "",
            f"## {exp.title}",
            "",
            f"Task `{exp.task}`"
            + (f" {dict(exp.task_options)}" if exp.task_options else "")
            + f"; primary metric `{result.primary_metric}`"
            + (" (deterministic: one run is exact)" if exp.deterministic else "")
            + ".",
        ]
        if exp.notes:
            lines += ["", exp.notes]
        lines += ["", *_table(result), *_grids(result, tuning)]
        claim_lines = _claim_lines(claims, exp.name)
        if claim_lines:
            lines += ["", "Claims:", "", *claim_lines]
        if exp.extra is not None:
            lines += ["", exp.extra(result)]
        plots = [plot_experiment(result, out), plot_sensitivity(result, tuning, out)]
        if exp.figure is not None:
            plots.append(exp.figure(result, out))
        for plot in plots:
            if plot is not None:
                lines += ["", f"![{plot.stem}]({plot.name})"]
    suite_claims = _claim_lines(claims, "suite")
    if suite_claims:
        lines += ["", "## Claims across experiments", "", *suite_claims]
    if results.get("cost"):
        lines += _cost_section(results["cost"]) + ["", *_claim_lines(claims, "cost")]
    figure = plot_verdicts(claims, out, f"lrkit bench {results['suite']}: verdicts")
    lines[summary_at:summary_at] = _at_a_glance(claims, figure)
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
