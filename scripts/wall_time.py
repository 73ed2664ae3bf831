"""Wall time of a suite with W workers × T torch threads, on an idle machine and with another
process keeping one core busy; writes JSON and a Markdown table read from it.

Each configuration runs ``lrkit bench SUITE --out <fresh temporary folder> --workers W
--threads T`` from scratch (nothing resumed), one after the other.

Usage (from the repository root):
    python scripts/wall_time.py quick --configs 1x2,2x1 --busy 2x1 \\
        --out benchmarks/results/quick/wall_time
    python scripts/wall_time.py --configs 1x2,2x1 --out benchmarks/results/l4/wall_time \\
        l4 -- --tasks recht_linspace_192,mlp_batch64     # a subset: bench arguments after --
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _spin() -> None:
    while True:
        pass


def measure(suite: str, workers: int, threads: int, busy: bool, extra: list[str]) -> dict:
    spinner = None
    if busy:
        spinner = multiprocessing.get_context("spawn").Process(target=_spin, daemon=True)
        spinner.start()
    try:
        with tempfile.TemporaryDirectory() as out:
            command = ["bench", suite, "--out", out, "--workers", str(workers)]
            command += ["--threads", str(threads), "--no-progress", *extra]
            started = time.perf_counter()
            subprocess.run([sys.executable, "-m", "lrkit", *command], check=True)
            seconds = time.perf_counter() - started
    finally:
        if spinner is not None:
            spinner.terminate()
    shown = " ".join(["lrkit", *command]).replace(out, "<fresh folder>")
    return {"workers": workers, "threads": threads, "busy_core": busy, "seconds": seconds,
            "command": shown}  # fmt: skip


def table(rows: list[dict], suite: str, commit: str) -> str:
    lines = [
        f"# Wall time of `lrkit bench {suite}`",
        "",
        "Written by `scripts/wall_time.py` from wall_time.json; no number was typed by hand.",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; commit {commit}. Each row ran "
        "the suite from scratch in a fresh folder — only the experiments named by `--tasks` "
        "where its command has one; 'busy core' rows ran beside a process that kept one core "
        "busy.",
        "",
        "| workers × threads | another process on one core | wall time (min) | command |",
        "|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['workers']} × {row['threads']} | {'yes' if row['busy_core'] else 'no'} | "
            f"{row['seconds'] / 60:.2f} | `{row['command']}` |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("suite")
    parser.add_argument("--configs", default="1x2,2x1", help="WxT,WxT on an idle machine")
    parser.add_argument("--busy", default="", help="WxT,... beside a busy core")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("extra", nargs="*", help="more bench arguments (after --)")
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    rows = []
    for text, busy in [(args.configs, False), (args.busy, True)]:
        for item in filter(None, text.split(",")):
            workers, threads = (int(v) for v in item.split("x"))
            rows.append(measure(args.suite, workers, threads, busy, args.extra))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "wall_time.json").write_text(json.dumps({"commit": commit, "rows": rows}, indent=1))
    (args.out / "README.md").write_text(table(rows, args.suite, commit))


if __name__ == "__main__":
    main()
