"""Where results come from: the code state that produced a run and the versions around it.

Every run records its code state — the git commit of the lrkit source tree, plus a digest of
uncommitted changes to it when the tree is dirty — and the lrkit version; results.json also
records the versions of the packages whose code changes the numbers (:func:`package_versions`),
so that a number that moves between two runs can be traced to a package that changed (or
shown not to come from one). A bench resumes only runs recorded by the same code state,
unless asked to mix.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import lrkit
from lrkit.methods import METHODS

RECORDED_PACKAGES = (
    "torch",
    "numpy",
    "scipy",
    "scikit-learn",
    "schedulefree",
    "prodigyopt",
    "dadaptation",
    "dog-optimizer",
    "mechanic-pytorch",
)


def _git(root: Path, *args: str) -> str | None:
    try:
        result = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout if result.returncode == 0 else None


@lru_cache(maxsize=1)
def code_state() -> dict[str, Any]:
    """``{"commit", "dirty", "code_state", "lrkit"}`` of the imported lrkit. ``code_state`` is
    the commit, with ``+<digest>`` of the uncommitted changes under src/ when dirty; None
    outside a git checkout (an installed package: its version then identifies it)."""
    source = Path(lrkit.__file__).resolve().parent
    root_text = _git(source, "rev-parse", "--show-toplevel")
    commit = _git(source, "rev-parse", "HEAD")
    state: dict[str, Any] = {
        "lrkit": lrkit.__version__,
        "commit": None,
        "dirty": None,
        "code_state": None,
    }
    if root_text is None or commit is None:
        return state
    root = Path(root_text.strip())
    source_dir = str(source.parent.relative_to(root)) if source.is_relative_to(root) else "."
    diff = _git(root, "diff", "HEAD", "--", source_dir) or ""
    untracked = _git(root, "ls-files", "--others", "--exclude-standard", "--", source_dir) or ""
    digest = hashlib.sha1(diff.encode())
    for name in sorted(untracked.split()):
        digest.update(name.encode())
        digest.update((root / name).read_bytes())
    dirty = bool(diff or untracked)
    state.update(
        commit=commit.strip(),
        dirty=dirty,
        code_state=commit.strip()[:12] + (f"+{digest.hexdigest()[:10]}" if dirty else ""),
    )
    return state


def _canonical(distribution: str) -> str:
    """The normalised distribution name (PEP 503): ``Dog_Optimizer`` → ``dog-optimizer``."""
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def package_versions() -> dict[str, str | None]:
    """Distribution name → installed version, or None when it is not installed.

    Covers :data:`RECORDED_PACKAGES` (torch, numpy, scipy's Levenberg–Marquardt,
    scikit-learn's digits, the learning-rate-free peers) and the distribution of every
    registered method's optional package (``MethodSpec.requires``), so that a peer added to
    the registry is recorded without editing this list.
    """
    providers = metadata.packages_distributions()
    names = list(RECORDED_PACKAGES)
    for spec in METHODS.values():
        if spec.requires is not None:
            names += providers.get(spec.requires, [])
    return {name: _version(name) for name in dict.fromkeys(map(_canonical, names))}


def environment(threads: int, workers: int, backend: str) -> dict[str, Any]:
    """The machine and software a bench ran on (results.json's ``environment``)."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle if "model name" in line]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "packages": package_versions(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "workers": workers,
        "backend": backend,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda": torch.cuda.is_available(),
    }
