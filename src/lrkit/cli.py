"""The ``lrkit`` command line: list, bench, report, cost, train.

Every command takes ``--data-dir DIR`` (where the datasets are: sets ``$LRKIT_DATA`` for the
command and the processes it starts) and ``--threads N`` (torch's intra-op threads, 1 unless
given: float32 results differ in the last bits between thread counts, and the methods that
estimate their own step size amplify that, so a fixed count keeps every run reproducible),
before or after the command's name. A missing optional package is a one-line error naming the
extra to install (exit status 2); Ctrl-C exits with status 130.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shlex
import sys
from pathlib import Path

import lrkit
from lrkit.data import root as data_root
from lrkit.errors import MissingExtraError

DEFAULT_THREADS = 1


def _csv(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _key_values(pairs: list[str]) -> dict:
    values = {}
    for pair in pairs:
        if "=" not in pair:
            raise SystemExit(f"lrkit: expected NAME=VALUE, got {pair!r}")
        key, value = pair.split("=", 1)
        values[key] = _value(value)
    return values


def cmd_list(args: argparse.Namespace) -> int:
    from lrkit.methods import METHODS
    from lrkit.methods.schedules import SCHEDULE_SUMMARIES
    from lrkit.suites import SUITES
    from lrkit.tasks import TASK_SUMMARIES

    print("tasks:")
    for name, summary in sorted(TASK_SUMMARIES.items()):
        print(f"  {name:24s} {summary}")
    print("methods:")
    for spec in sorted(METHODS.values(), key=lambda s: (s.kind, s.name)):
        status = "" if spec.available or spec.kind == "reserved" else " (not installed)"
        needs = spec.capabilities.declared()
        needs_text = f" — needs: {', '.join(needs)}" if needs else ""
        print(f"  {spec.name:24s} [{spec.kind}] {spec.summary}{needs_text}{status}")
    print("schedules:")
    for name, summary in SCHEDULE_SUMMARIES.items():
        print(f"  {name:24s} {summary}")
    print("suites:")
    for name, entry in sorted(SUITES.items()):
        print(f"  {name:24s} {entry.summary} (scales: {', '.join(entry.scales)})")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from lrkit.harness.bench import run_suite
    from lrkit.harness.executors import default_workers, make_executor
    from lrkit.harness.plan import select
    from lrkit.harness.provenance import code_state
    from lrkit.harness.report import write_report
    from lrkit.suites import get_suite

    suite = get_suite(args.suite, args.scale)
    if args.smoke:
        suite = suite.smoke()
    if args.tasks or args.methods:
        suite = select(suite, tasks=_csv(args.tasks or ""), methods=_csv(args.methods or ""))
    command = shlex.join(["lrkit", *args.argv])
    workers = args.workers or default_workers()
    threads = getattr(args, "threads", None) or max(1, default_workers() // workers)
    executor = make_executor(args.backend, workers, threads, code_state(), args.ray_address)
    try:
        results = run_suite(
            suite,
            Path(args.out),
            executor,
            seeds=args.seeds,
            command=command,
            progress=not args.no_progress,
            smoke=args.smoke,
            device=args.device,
            allow_mixed=args.allow_mixed,
            threads=threads,
            backend=args.backend,
        )
    finally:
        executor.close()
    write_report(results, Path(args.out), suite)
    _note_missing_plots()
    held = [c for c in results.get("claims", []) if c["held"]]
    print(
        f"lrkit bench {suite.name}: {len(results['runs'])} runs in "
        f"{results['duration_s']:.0f} s; claims held {len(held)}/{len(results.get('claims', []))}; "
        f"report: {Path(args.out) / 'report.md'}"
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from lrkit.harness.bench import finalize
    from lrkit.harness.plan import select, selection_in_command
    from lrkit.harness.provenance import code_state
    from lrkit.harness.report import write_report
    from lrkit.suites import get_suite

    out = Path(args.dir)
    results_file = out / "results.json"
    if not results_file.exists():
        raise SystemExit(f"lrkit report: {results_file} does not exist; run `lrkit bench` first")
    results = json.loads(results_file.read_text())
    suite = get_suite(results["suite"], results.get("scale", "cpu"))
    if results.get("smoke"):
        suite = suite.smoke()
    selection = results.get("selection") or selection_in_command(results.get("command", ""))
    if selection:  # the run's --tasks/--methods: the same experiments and claims
        suite = select(suite, tasks=selection["tasks"], methods=selection["methods"])
    finalize(results, suite)
    results["report_rebuilt"] = code_state()
    results_file.write_text(json.dumps(results, separators=(",", ":")))
    report = write_report(results, out, suite)
    _note_missing_plots()
    print(f"wrote {report}")
    return 0


def _note_missing_plots() -> None:
    """The report is complete without its plots; say how to get them."""
    if importlib.util.find_spec("matplotlib") is None:
        print(
            "lrkit: the report has no plots: they need the package 'matplotlib': "
            "pip install 'lrkit[plots]'",
            file=sys.stderr,
        )


def cmd_cost(args: argparse.Namespace) -> int:
    import torch

    from lrkit.harness.cost import measure_cost, with_bases

    methods = _csv(args.methods)
    bases = [name for name in with_bases(methods) if name not in methods]
    threads = torch.get_num_threads()
    print(
        f"lrkit cost {args.task}: {', '.join(methods)}"
        + (f" (+ bases {', '.join(bases)})" if bases else "")
        + f"; {args.steps} timed steps after {args.warmup} warm-up, interleaved in one process "
        f"(single worker: the timings need a quiet machine) with {threads} torch "
        f"thread{'s' if threads != 1 else ''} (--threads N to change)"
        + ("" if args.no_memory else "; then peak memory, one child process per method"),
        flush=True,
    )
    rows = measure_cost(
        args.task,
        methods,
        steps=args.steps,
        warmup=args.warmup,
        memory=not args.no_memory,
        progress=not args.no_progress,
        repeats=args.repeats,
    )
    print(
        f"{'method':20s} {'base':12s} {'ms/step':>9s} {'ratio':>7s} {'min-max':>13s} "
        f"{'peak MB':>8s}"
    )
    for row in rows:
        ratio, spread = "—", "—"
        if row["ratio_to_base"] is not None:
            ratio = f"{row['ratio_to_base']:.3f}"
            spread = f"{row['ratio_min']:.3f}-{row['ratio_max']:.3f}"
        memory = "—" if row["peak_memory_mb"] is None else f"{row['peak_memory_mb']:.1f}"
        print(
            f"{row['method']:20s} {row['base'] or '—':12s} {row['ms_per_step']:9.3f} "
            f"{ratio:>7s} {spread:>13s} {memory:>8s}"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    import torch

    from lrkit.harness.distributed import distributed_context
    from lrkit.harness.results import RunConfig
    from lrkit.harness.training import train

    config = RunConfig(
        task=args.task,
        method=args.method,
        seed=args.seed,
        hparams=_key_values(args.hparam),
        task_options=_key_values(args.task_option),
        steps=args.steps,
        batch_size=args.batch_size,
        grad_clip=args.grad_clip,
        device=args.device,
    )
    with distributed_context() as rank:
        record = train(config, progress=not args.no_progress)
        if rank == 0:
            print(
                json.dumps(
                    {
                        "final": record["final"],
                        "diverged": record["diverged"],
                        "steps_done": record["steps_done"],
                        "threads": torch.get_num_threads(),
                    }
                )
            )
            if args.json:
                Path(args.json).write_text(json.dumps(record))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lrkit", description="Learned learning rates for PyTorch: methods and benchmarks."
    )
    parser.add_argument("--version", action="version", version=f"lrkit {lrkit.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="list tasks, methods and suites")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("bench", help="run a benchmark suite (resumes finished runs)")
    p.add_argument("suite")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seeds", type=int, default=None, help="seeds per configuration")
    p.add_argument("--tasks", help="comma-separated tasks or experiment names to keep")
    p.add_argument("--methods", help="comma-separated methods or entry labels to keep")
    p.add_argument("--smoke", action="store_true", help="a few steps of everything (CI)")
    p.add_argument(
        "--scale", default="cpu", help="cpu (default: runs here) or paper, where the suite has it"
    )
    p.add_argument("--device", default=None, help="cpu (default) or cuda")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="runs in parallel (default: the cores available); each run uses --threads "
        "torch threads (default: cores // workers), so results do not depend on workers",
    )
    p.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local worker processes (default) or a Ray cluster (pip install 'lrkit[ray]')",
    )
    p.add_argument("--ray-address", default=None, help="a running Ray cluster (default: local)")
    p.add_argument(
        "--allow-mixed",
        action="store_true",
        help="resume run files recorded by another code state (the report says so)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("report", help="rebuild report.md and plots from DIR/results.json")
    p.add_argument("dir")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "cost",
        help="step time and memory of methods vs their base optimizer",
        description="Times every method's full training step against its base optimizer, "
        "interleaved step by step in one process, then measures each method's peak memory in "
        "a child process. It runs single-worker (the timings need a quiet machine) with 1 "
        "torch thread unless --threads N says otherwise.",
    )
    p.add_argument("--task", required=True)
    p.add_argument("--methods", required=True, help="comma-separated; bases are added")
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument(
        "--repeats", type=int, default=3, help="interleaved measurements (median, min-max)"
    )
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory children")
    p.add_argument("--json", help="write the rows to this file")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_cost)

    p = sub.add_parser("train", help="one training run (works under torchrun)")
    p.add_argument("--task", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--grad-clip", type=float, default=None)
    p.add_argument("--hparam", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--task-option", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--json", help="write the full run record to this file")
    p.add_argument("--device", default=None, help="cpu (default) or cuda")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_train)

    for command_parser in (parser, *sub.choices.values()):
        _add_process_options(command_parser)
    return parser


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return int(text)


def _add_process_options(parser: argparse.ArgumentParser) -> None:
    """--data-dir and --threads, accepted before and after a command's name (SUPPRESS: an
    option given before the name is not reset by the command's parser)."""
    group = parser.add_argument_group("data and threads (before or after the command)")
    group.add_argument(
        "--data-dir",
        metavar="DIR",
        default=argparse.SUPPRESS,
        help=f"the folder that holds the datasets (sets ${data_root.ENV_VAR} for this command); "
        f"default: ${data_root.ENV_VAR}, then ../shared/data beside a clone of lrkit, "
        "~/.local/share/lrkit, /usr/share/datasets",
    )
    group.add_argument(
        "--threads",
        metavar="N",
        type=_positive_int,
        default=argparse.SUPPRESS,
        help=f"torch intra-op threads (default {DEFAULT_THREADS}: results do not depend on "
        "the machine's core count)",
    )


@contextlib.contextmanager
def _process_settings(args: argparse.Namespace, parser: argparse.ArgumentParser):
    """Sets $LRKIT_DATA (from --data-dir) and torch's threads for the command, and restores
    both afterwards (``main`` may be called in-process, by tests or a notebook)."""
    import torch

    saved_data, saved_threads = os.environ.get(data_root.ENV_VAR), torch.get_num_threads()
    data_dir = getattr(args, "data_dir", None)
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            parser.error(f"--data-dir {data_dir}: no such folder")
        os.environ[data_root.ENV_VAR] = str(folder.resolve())
    torch.set_num_threads(getattr(args, "threads", DEFAULT_THREADS))
    try:
        yield
    finally:
        torch.set_num_threads(saved_threads)
        if saved_data is None:
            os.environ.pop(data_root.ENV_VAR, None)
        else:
            os.environ[data_root.ENV_VAR] = saved_data


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)
    try:
        with _process_settings(args, parser):
            return args.func(args)
    except (MissingExtraError, data_root.DataNotFoundError) as error:
        print(f"lrkit {args.command}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\n{_interrupted(args)}", file=sys.stderr)
        return 130


def _interrupted(args: argparse.Namespace) -> str:
    """What Ctrl-C leaves behind: for bench, the finished runs and how to resume from them."""
    if args.command == "bench":
        return (
            f"lrkit bench: interrupted; the finished runs are kept in "
            f"{Path(args.out) / 'runs'}, and the same command resumes from them: "
            f"{shlex.join(['lrkit', *args.argv])}"
        )
    return f"lrkit {args.command}: interrupted"
