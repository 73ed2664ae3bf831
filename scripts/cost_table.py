"""`lrkit cost` rows for some methods on some tasks, and a README table written from them.

Runs ``lrkit --threads 1 cost --repeats R`` once per task (the methods' registered bases are
added), keeps each task's rows as JSON, and writes ``README.md`` in the same folder: every
number in it is read from those JSON files, with the target each method must meet.

Usage (from the repository root):
    python scripts/cost_table.py --out benchmarks/results/l4/cost \\
        --tasks fmnist_mlp:100,wide_mlp:60 \\
        --methods l4_adam_wrapper_fused,l4_adam_wrapper,l4adam,l4mom \\
        --target l4_adam_wrapper_fused=1.10 --target l4_adam_wrapper=1.10 \\
        --target l4adam=1.10 --target l4mom=1.10
    python scripts/cost_table.py --out DIR ... --readme-only
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch


def measure(task: str, steps: int, methods: str, repeats: int, out: Path) -> dict:
    path = out / f"{task}.json"
    command = ["lrkit", "--threads", "1", "cost", "--task", task, "--methods", methods]
    command += ["--steps", str(steps), "--repeats", str(repeats), "--json", str(path)]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "lrkit", *command[1:]], check=True)
    return {"task": task, "command": " ".join(command), "seconds": time.perf_counter() - started}


def readme(out: Path, targets: dict[str, float], title: str) -> str:
    meta = json.loads((out / "meta.json").read_text())
    lines = [
        f"# {title}",
        "",
        "Written by `scripts/cost_table.py` from the JSON files in this folder; no number was "
        "typed by hand.",
        "",
        f"Machine: {meta['machine']}; torch {meta['torch']}, one intra-op thread; "
        f"commit {meta['commit']}.",
        "",
        "Commands:",
        "",
        *[f"- `{run['command']}` ({run['seconds']:.0f} s)" for run in meta["runs"]],
        "",
        "Each ratio is the median over the repeated interleaved measurements (one process, the "
        "methods taking turns step by step on the same batches) of the ratio of the method's "
        "median full step (forward, backward, update) to its base's, with the min–max over "
        "the repeats. A target holds on the median. Peak MB is the rise of the peak resident "
        "memory of a child process that runs only that method, from just before its first "
        "step: for a method compiled with torch.compile (`*_fused`) it includes the "
        "compilation that the first step does.",
        "",
        "| task | method | base | ms/step | ratio to base (min–max) | target | met | peak MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for run in meta["runs"]:
        for row in json.loads((out / f"{run['task']}.json").read_text()):
            ratio, target, met = "—", "—", "—"
            if row["ratio_to_base"] is not None:
                spread = f"{row['ratio_min']:.3f}–{row['ratio_max']:.3f}"
                ratio = f"{row['ratio_to_base']:.3f} ({spread})"
            if row["method"] in targets:
                target = f"≤ {targets[row['method']]:.2f}"
                met = "yes" if row["ratio_to_base"] <= targets[row["method"]] else "no"
            memory = "—" if row["peak_memory_mb"] is None else f"{row['peak_memory_mb']:.1f}"
            lines.append(
                f"| {run['task']} | {row['method']} | {row['base'] or '—'} | "
                f"{row['ms_per_step']:.2f} | {ratio} | {target} | {met} | {memory} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tasks", required=True, help="task:steps,task:steps")
    parser.add_argument("--methods", required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--target", action="append", default=[], help="method=max_ratio")
    parser.add_argument("--title", default="`lrkit cost` rows")
    parser.add_argument("--readme-only", action="store_true")
    args = parser.parse_args()
    targets = {k: float(v) for k, v in (item.split("=", 1) for item in args.target)}
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.readme_only:
        commit = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        runs = []
        for item in args.tasks.split(","):
            task, steps = item.split(":")
            runs.append(measure(task, int(steps), args.methods, args.repeats, args.out))
        meta = {
            "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}, Python "
            f"{platform.python_version()}",
            "torch": torch.__version__,
            "commit": commit,
            "runs": runs,
        }
        (args.out / "meta.json").write_text(json.dumps(meta, indent=1))
    (args.out / "README.md").write_text(readme(args.out, targets, args.title))


if __name__ == "__main__":
    main()
