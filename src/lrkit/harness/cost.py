"""`lrkit cost`: what a method's step costs relative to its base optimizer.

Every method (and each one's registered ``base``) is built on its own copy of the task's
model, from the same initialisation, and the methods take turns step by step in one process
(the order rotated every round), on the same pre-drawn batches. A step is everything the
method does: closure (forward, backward) and update. Reported: the median milliseconds per
step, its ratio to the base's median from the same run, and peak memory: the increase of
the peak resident set size of a child process that runs only that method, measured from
just before its first step (the peak mark is reset after setup; the harness runs on the
CPU): what the method's training adds — gradients, optimizer state, activations.
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import resource
import statistics
import time
from typing import Any

from lrkit.harness.setup import PreparedRun, prepare_run
from lrkit.methods import get_method
from lrkit.methods.contract import StepInputs
from lrkit.tasks import get_task

MMAP_THRESHOLD_VARIABLE = "MALLOC_MMAP_THRESHOLD_"


def with_bases(methods: list[str]) -> list[str]:
    ordered = list(dict.fromkeys(methods))
    for name in list(ordered):
        base = get_method(name).base
        if base is not None and base not in ordered:
            ordered.append(base)
    return ordered


def _setup(
    task_name: str, method: str, steps: int, seed: int, batch_size: int | None
) -> tuple[PreparedRun, list[StepInputs]]:
    """The method's run and the inputs of all its steps, drawn before any timing."""
    run = prepare_run(
        get_task(task_name), get_method(method), seed=seed, steps=steps, batch_size=batch_size
    )
    return run, [run.draw_inputs() for _ in range(steps)]


def measure_step_times(
    task_name: str,
    methods: list[str],
    steps: int = 50,
    warmup: int = 5,
    seed: int = 0,
    batch_size: int | None = None,
) -> dict[str, list[float]]:
    """Interleaved per-step wall times (ms) of each method, same batches for all."""
    total = warmup + steps
    setups = {m: _setup(task_name, m, total, seed, batch_size) for m in methods}
    times: dict[str, list[float]] = {m: [] for m in methods}
    for step in range(total):
        order = methods[step % len(methods) :] + methods[: step % len(methods)]
        for method in order:
            run, inputs = setups[method]
            started = time.perf_counter()
            run.take_step(inputs[step])
            elapsed = (time.perf_counter() - started) * 1e3
            if step >= warmup:
                times[method].append(elapsed)
    return times


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Resets the kernel's peak-RSS mark (VmHWM) so that the data loading before training
    does not hide the training peak (Linux >= 4.0: writing 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def _peak_memory_child(task_name, method, steps, seed, batch_size, queue) -> None:
    run, inputs = _setup(task_name, method, steps, seed, batch_size)
    if _reset_peak_rss():
        before = _status_kib("VmRSS")

        def read_peak() -> int:
            return _status_kib("VmHWM")
    else:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

        def read_peak() -> int:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    for step in range(steps):
        run.take_step(inputs[step])
    queue.put((read_peak() - before) / 1024.0)


def peak_memory_mb(
    task_name: str, method: str, steps: int, seed: int = 0, batch_size: int | None = None
) -> float:
    """Peak memory growth (MiB) of a fresh process running only ``method``."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(
        target=_peak_memory_child, args=(task_name, method, steps, seed, batch_size, queue)
    )
    # glibc serves allocations above this size with mmap and returns them on free, so the
    # child's resident set follows its live tensors instead of keeping freed setup memory.
    saved = os.environ.get(MMAP_THRESHOLD_VARIABLE)
    os.environ[MMAP_THRESHOLD_VARIABLE] = "65536"
    try:
        child.start()
    finally:
        if saved is None:
            del os.environ[MMAP_THRESHOLD_VARIABLE]
        else:
            os.environ[MMAP_THRESHOLD_VARIABLE] = saved
    while True:
        try:
            value = queue.get(timeout=1.0)
            break
        except queue_module.Empty:
            if not child.is_alive():
                raise RuntimeError(
                    f"the peak-memory process for {method!r} on {task_name!r} exited with code "
                    f"{child.exitcode} before reporting"
                ) from None
    child.join()
    return float(value)


def measure_cost(
    task_name: str,
    methods: list[str],
    steps: int = 50,
    warmup: int = 5,
    seed: int = 0,
    batch_size: int | None = None,
    memory: bool = True,
    repeats: int = 3,
) -> list[dict[str, Any]]:
    """Rows with keys method, base, ms_per_step, ratio_to_base (the median over ``repeats``
    interleaved measurements of the ratio of medians), ratio_min, ratio_max, repeats and
    peak_memory_mb."""
    names = with_bases(methods)
    medians: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(repeats):
        times = measure_step_times(task_name, names, steps, warmup, seed, batch_size)
        for name, values in times.items():
            medians[name].append(statistics.median(values))
    rows = []
    for name in names:
        base = get_method(name).base
        ratios = (
            None
            if base is None
            else [ours / theirs for ours, theirs in zip(medians[name], medians[base], strict=True)]
        )
        rows.append(
            {
                "task": task_name,
                "method": name,
                "base": base,
                "ms_per_step": statistics.median(medians[name]),
                "ratio_to_base": None if ratios is None else statistics.median(ratios),
                "ratio_min": None if ratios is None else min(ratios),
                "ratio_max": None if ratios is None else max(ratios),
                "repeats": repeats,
                "peak_memory_mb": (
                    peak_memory_mb(task_name, name, min(steps, 20), seed, batch_size)
                    if memory
                    else None
                ),
                "steps": steps,
            }
        )
    return rows
