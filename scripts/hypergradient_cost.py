"""The cost of the hypergradient methods, measured and written up from the measurements.

1. ``lrkit --threads 1 cost`` for hd_sgd, hd_adam, rtho, marthe and marthe_every10 (their
   bases sgd and adam are added) on each task; it repeats the interleaved measurement
   three times and reports the median ratio with its min–max: one JSON per task.
2. The two Hessian–vector products of MARTHE: whole MARTHE steps with each ``hvp`` setting
   and the parts of a MARTHE step — ∇L alone, ∇L with H·Z by each method, the validation
   forward+backward — interleaved with SGD steps in one loop; the parts over SGD's step give
   the floor of MARTHE's cost relative to SGD. HD-SGD's step and SGD's step plus only the dot
   product HD adds run in the same loop: HD's floor.
3. ``README.md`` with those medians and min–max, the targets of issue 9 and whether each is
   met; every number in it is read from the JSON files.

Usage (from the repository root, with the data at $LRKIT_DATA):
    python scripts/hypergradient_cost.py --out benchmarks/results/hypergradient/cost
    python scripts/hypergradient_cost.py --out DIR --readme-only
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

METHODS = ["hd_sgd", "hd_adam", "rtho", "marthe", "marthe_every10"]
TARGETS = {"hd_sgd": 1.05, "hd_adam": 1.05, "rtho": 3.0, "marthe": 3.0}
TASKS = {"fmnist_mlp": 100, "fmnist_2c2d": 40}
HVPS = ("double_backward", "forward_over_reverse")


def run_cost(task: str, steps: int, out: Path) -> dict:
    path = out / f"{task}.json"
    command = [sys.executable, "-m", "lrkit", "--threads", "1", "cost", "--task", task]
    command += ["--methods", ",".join(METHODS), "--steps", str(steps), "--json", str(path)]
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    shown = ["lrkit", *command[command.index("--threads") :]]
    return {"command": " ".join(shown), "seconds": time.perf_counter() - started}


def hvp_timing(task_name: str, steps: int, warmup: int = 5) -> dict:
    """MARTHE steps with each HVP, SGD steps and the parts of a MARTHE step, interleaved in
    one loop (the order rotates every step), each on a fresh batch of its own.

    The parts: ∇L alone (one forward+backward, no H·Z), ∇L with H·Z by each method, and the
    validation forward+backward. Their medians over SGD's median step give the floor."""
    from lrkit.harness.setup import prepare_run
    from lrkit.methods import get_method
    from lrkit.methods.hypergradient.hvp import gradient_and_hvp, validation_gradient
    from lrkit.tasks import get_task

    torch.set_num_threads(1)
    task = get_task(task_name)
    total = steps + warmup
    runs = {"sgd": prepare_run(task, get_method("sgd"), steps=total)}
    for hvp in HVPS:
        runs[hvp] = prepare_run(task, get_method("marthe"), hparams={"hvp": hvp}, steps=total)
    probe_run = prepare_run(task, get_method("marthe"), steps=total)
    params = [p for p in probe_run.model.parameters() if p.requires_grad]
    names_of = [n for n, _ in probe_run.model.named_parameters()]
    tangents = [torch.randn_like(p) * 1e-3 for p in params]

    def part(kind: str):
        def measure(inputs) -> None:
            if kind == "validation_grad":
                validation_gradient(inputs.validation_closure, params)
            elif kind == "train_grad":
                gradient_and_hvp(inputs.closure, params, None)
            else:
                hvp = kind.split("/")[1]
                gradient_and_hvp(inputs.closure, params, tangents, hvp, names_of)

        return measure

    # HD's floor: SGD's step plus the one dot product HD adds, of the fresh gradient with
    # the previous step's (kept alive, as HD keeps it), and the host read of the result
    runs["hd_sgd"] = prepare_run(task, get_method("hd_sgd"), steps=total)
    floor_run = prepare_run(task, get_method("sgd"), steps=total)
    floor_params = [p for p in floor_run.model.parameters() if p.requires_grad]
    kept: list[torch.Tensor] = []

    def sgd_plus_dot(inputs) -> None:
        inputs.closure()
        grads = [p.grad for p in floor_params]
        if kept:
            pairs = zip(grads, kept, strict=True)
            torch.stack([torch.dot(g.view(-1), u.view(-1)) for g, u in pairs]).tolist()
        floor_run.method.optimizer.step()
        kept[:] = grads

    timed = {name: run.take_step for name, run in runs.items()}
    timed["sgd_plus_dot"] = sgd_plus_dot
    part_names = ["train_grad", *(f"train_grad_and_hvp/{hvp}" for hvp in HVPS), "validation_grad"]
    timed.update({name: part(name) for name in part_names})
    sources = {name: runs.get(name, probe_run) for name in timed}
    sources["sgd_plus_dot"] = floor_run
    inputs = {name: [sources[name].draw_inputs() for _ in range(total)] for name in timed}
    elapsed: dict[str, list[float]] = {name: [] for name in timed}
    names = list(timed)
    for step in range(total):
        for name in names[step % len(names) :] + names[: step % len(names)]:
            started = time.perf_counter()
            timed[name](inputs[name][step])
            if step >= warmup:
                elapsed[name].append((time.perf_counter() - started) * 1e3)
    medians = {name: statistics.median(v) for name, v in elapsed.items()}
    return {
        "task": task_name,
        "steps": steps,
        "step_ms": {name: medians[name] for name in runs},
        "step_ms_all": {name: elapsed[name] for name in runs},
        "parts_ms": {name: medians[name] for name in part_names}
        | {"sgd_step": medians["sgd"], "sgd_plus_dot": medians["sgd_plus_dot"]},
    }


# ---------------------------------------------------------------------------- README


def write_readme(out: Path, meta: dict) -> Path:
    lines = [
        "# `lrkit cost` for the hypergradient methods (issue 9)",
        "",
        "Written by `scripts/hypergradient_cost.py` from the JSON files in this directory;",
        "no number below was typed by hand.",
        "",
        f"Machine: {meta.get('machine', '?')}; torch {meta.get('torch', '?')}, one intra-op "
        f"thread; commit {meta.get('commit', 'not recorded')}. Absolute milliseconds depend on "
        "the machine and its load; the ratios come from interleaved steps on the same batches.",
        "",
        "Commands:",
        "",
    ]
    for entry in meta.get("runs", []):
        lines.append(f"- `{entry['command']}` ({entry['seconds']:.0f} s)")
    lines += [
        "",
        "Each row: the median over three interleaved measurements (in one `lrkit cost` "
        "process) of each measurement's median step time, and of the ratio to the base "
        "measured in the same measurement, with the min–max over the three in parentheses. "
        "Targets: `hd_sgd` ≤ 1.05× SGD's full step, `hd_adam` ≤ 1.05× Adam's, "
        "`rtho`/`marthe` (validation gradient every step) ≤ 3.0× the inner optimizer's "
        "(SGD's) step; `marthe_every10` is reported without a target.",
        "",
        "| task | method | base | ms/step | ratio to base (min–max) | target | met | peak MB |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for task in TASKS:
        path = out / f"{task}.json"
        if not path.exists():
            continue
        for row in json.loads(path.read_text()):
            method, ratio = row["method"], row["ratio_to_base"]
            target = TARGETS.get(method)
            met = "—" if target is None or ratio is None else ("yes" if ratio <= target else "no")
            spread = (
                "—"
                if ratio is None
                else f"{ratio:.3f} ({row['ratio_min']:.3f}–{row['ratio_max']:.3f})"
            )
            memory = row["peak_memory_mb"]
            lines.append(
                f"| {task} | {method} | {row['base'] or '—'} | {row['ms_per_step']:.2f} | "
                f"{spread} | {'≤ ' + format(target, 'g') if target else '—'} | {met} | "
                f"{'—' if memory is None else format(memory, '.1f')} |"
            )
    hvp_file = out / "hvp.json"
    if hvp_file.exists():
        lines += _hvp_section(json.loads(hvp_file.read_text()))
    path = out / "README.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _hvp_section(results: list[dict]) -> list[str]:
    lines = [
        "",
        "## Hessian–vector products: double backward vs forward over reverse",
        "",
        "Whole MARTHE steps (registry defaults, validation every step) with each `hvp`, "
        "SGD steps and the parts of a MARTHE step, all interleaved in one loop, each on "
        "fresh batches (medians, ms). The floor is what MARTHE cannot avoid: the training "
        "gradient with H·Z, plus the validation forward+backward, over SGD's full step "
        "(forward, backward and update). H·Z's own cost is the training gradient with H·Z "
        "less the training gradient alone, in units of SGD's step.",
        "",
        "| task | hvp | MARTHE ms/step | × SGD step | ∇L and H·Z (ms) | H·Z alone (× SGD) "
        "| floor (× SGD) |",
        "|---|---|---|---|---|---|---|",
    ]
    for result in results:
        steps, parts = result["step_ms"], result["parts_ms"]
        for hvp in HVPS:
            alone = parts[f"train_grad_and_hvp/{hvp}"]
            floor = (alone + parts["validation_grad"]) / parts["sgd_step"]
            product = (alone - parts["train_grad"]) / parts["sgd_step"]
            lines.append(
                f"| {result['task']} | {hvp} | {steps[hvp]:.2f} | "
                f"{steps[hvp] / steps['sgd']:.3f} | {alone:.2f} | {product:.2f} | {floor:.2f} |"
            )
    lines += ["", "Parts of one step (ms): " + "; ".join(
        f"{r['task']}: SGD step {r['parts_ms']['sgd_step']:.2f}, training forward+backward "
        f"{r['parts_ms']['train_grad']:.2f}, validation forward+backward "
        f"{r['parts_ms']['validation_grad']:.2f}" for r in results
    ) + "."]  # fmt: skip
    faster = {r["task"]: min(HVPS, key=lambda h, r=r: r["step_ms"][h]) for r in results}
    lines += ["", "Faster per task: " + ", ".join(f"{t}: `{h}`" for t, h in faster.items()) + "."]
    lines += [
        "",
        "## HD's floor",
        "",
        "In the same loop: HD-SGD's step, and SGD's step plus "
        "only the dot product HD adds (the fresh gradient with the previous step's, kept "
        "alive as HD keeps it, read on the host), each over SGD's step (medians).",
        "",
        "| task | hd_sgd × SGD | SGD + one dot product × SGD |",
        "|---|---|---|",
    ]
    lines += [
        f"| {r['task']} | {r['step_ms']['hd_sgd'] / r['step_ms']['sgd']:.3f} | "
        f"{r['parts_ms']['sgd_plus_dot'] / r['step_ms']['sgd']:.3f} |"
        for r in results
        if "sgd_plus_dot" in r["parts_ms"]
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--readme-only", action="store_true")
    parser.add_argument("--skip-cost", action="store_true")
    parser.add_argument("--skip-hvp", action="store_true")
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated subset")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    meta_file = args.out / "meta.json"
    meta = json.loads(meta_file.read_text()) if meta_file.exists() else {"runs": []}
    tasks = {task: TASKS[task] for task in args.tasks.split(",")}
    if not args.readme_only:
        meta["machine"] = f"{platform.processor() or platform.machine()}, Python "
        meta["machine"] += platform.python_version()
        meta["torch"] = torch.__version__
        meta["commit"] = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True
        ).stdout.strip()
        if not args.skip_cost:
            done = {run["command"].split("--task ")[1].split()[0]: run for run in meta["runs"]}
            done.update({task: run_cost(task, steps, args.out) for task, steps in tasks.items()})
            meta["runs"] = [done[task] for task in TASKS if task in done]
        if not args.skip_hvp:
            hvp_file = args.out / "hvp.json"
            old = json.loads(hvp_file.read_text()) if hvp_file.exists() else []
            results = {r["task"]: r for r in old}
            results.update({task: hvp_timing(task, steps) for task, steps in tasks.items()})
            hvp_file.write_text(json.dumps([results[t] for t in TASKS if t in results], indent=1))
        meta_file.write_text(json.dumps(meta, indent=1))
    print(write_readme(args.out, meta))


if __name__ == "__main__":
    main()
