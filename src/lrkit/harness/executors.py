"""Where a sweep's independent runs execute: this process, a pool of worker processes, or a
Ray cluster.

A benchmark sweep is hundreds of small independent runs, and on a CPU the fast way to use a
machine for it is many single-threaded workers rather than one multi-threaded run. Every
executor runs a run with the same fixed number of torch threads (``threads``), so results do
not depend on how many workers there are (a different thread count changes float reduction
orders, which some optimizers amplify). Each run writes its own run file; the runner orders
records by its plan, not by completion, so results.json is the same for any worker count.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import ctypes.util
import json
import multiprocessing
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from lrkit.harness.results import RunConfig, downsample
from lrkit.harness.training import train

BACKENDS = ("local", "ray")


def end_with_parent(parent: int) -> None:
    """In a worker: be sent SIGTERM when the bench process ends, however it ends (a bench
    killed with SIGTERM or SIGKILL left its workers running their runs). Linux only
    (prctl PR_SET_PDEATHSIG); elsewhere the workers end when they next read the pool."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent ended before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def write_json(path: Path, value: Any) -> None:
    """Writes ``value`` atomically (a crash never leaves half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value))
    tmp.replace(path)


def run_and_save(
    config: dict[str, Any], path: str, threads: int, provenance: dict[str, Any]
) -> dict[str, Any]:
    """Trains one run with ``threads`` torch threads, writes its run file, returns the
    record (what every executor calls, in whatever process it runs)."""
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        record = train(RunConfig(**config))
    finally:
        torch.set_num_threads(saved)
    record["curve"] = downsample(record["curve"])
    record["provenance"] = {**provenance, "torch_threads": threads}
    write_json(Path(path), record)
    return record


class Executor(Protocol):
    """Runs batches of independent runs; ``map`` returns records in the input order."""

    workers: int

    def map(self, jobs: Sequence[tuple[dict[str, Any], str]], on_done) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


class LocalExecutor:
    """``workers`` = 1: runs in this process; more: a pool of spawned worker processes."""

    def __init__(self, workers: int, threads: int, provenance: dict[str, Any]) -> None:
        if workers < 1 or threads < 1:
            raise ValueError(f"workers and threads must be >= 1, got {workers} and {threads}")
        self.workers, self.threads, self.provenance = workers, threads, provenance
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None

    def map(self, jobs: Sequence[tuple[dict[str, Any], str]], on_done) -> list[dict[str, Any]]:
        if self.workers == 1 or len(jobs) <= 1:
            records = []
            for config, path in jobs:
                records.append(run_and_save(config, path, self.threads, self.provenance))
                on_done()
            return records
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=end_with_parent,
                initargs=(os.getpid(),),
            )
        futures = [
            self._pool.submit(run_and_save, config, path, self.threads, self.provenance)
            for config, path in jobs
        ]
        return _collect(futures, on_done)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class RayExecutor:
    """Runs on a Ray cluster: the one at ``address`` (or $RAY_ADDRESS), else a local Ray
    instance with ``workers`` CPUs; each run reserves ``threads`` CPUs."""

    def __init__(
        self, workers: int, threads: int, provenance: dict[str, Any], address: str | None
    ) -> None:
        try:
            import ray
        except ImportError as missing:
            raise ImportError("--backend ray needs Ray: pip install 'lrkit[ray]'") from missing
        self._ray = ray
        self.workers, self.threads, self.provenance = workers, threads, provenance
        self._initialised_here = not ray.is_initialized()
        if self._initialised_here:
            address = address or os.environ.get("RAY_ADDRESS")
            environment = {
                key: os.environ[key] for key in ("LRKIT_DATA", "PYTHONPATH") if key in os.environ
            }
            ray.init(
                address=address,
                num_cpus=None if address else workers * threads,
                include_dashboard=False,
                runtime_env={"env_vars": environment} if environment else None,
                log_to_driver=False,
            )
        self._remote = ray.remote(num_cpus=threads)(run_and_save)

    def map(self, jobs: Sequence[tuple[dict[str, Any], str]], on_done) -> list[dict[str, Any]]:
        futures = [
            self._remote.remote(config, path, self.threads, self.provenance).future()
            for config, path in jobs
        ]
        return _collect(futures, on_done)

    def close(self) -> None:
        """Disconnects if this executor connected (a cluster keeps running; a local
        instance it started stops)."""
        if self._initialised_here:
            self._ray.shutdown()


def _collect(futures: list[concurrent.futures.Future], on_done) -> list[dict[str, Any]]:
    for future in concurrent.futures.as_completed(futures):
        future.result()
        on_done()
    return [future.result() for future in futures]


def make_executor(
    backend: str,
    workers: int,
    threads: int,
    provenance: dict[str, Any],
    address: str | None = None,
) -> Executor:
    if backend == "local":
        return LocalExecutor(workers, threads, provenance)
    if backend == "ray":
        return RayExecutor(workers, threads, provenance, address)
    raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)
