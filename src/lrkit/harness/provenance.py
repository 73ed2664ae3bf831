"""Where results come from: the code state that produced a run and the versions around it.

Every run records its code state — the git commit of the lrkit source tree, plus a digest of
uncommitted changes to it when the tree is dirty — and the lrkit version; results.json also
records the versions of torch and of every optional package that can change a number. A
bench resumes only runs recorded by the same code state, unless asked to mix.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

import lrkit

PACKAGES = (
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


def package_versions() -> dict[str, str | None]:
    """The installed version of torch and of every package that can change a result."""
    versions: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions
