"""Shared test setup: the datasets the suites read, on any machine.

lrkit finds Fashion-MNIST and Tiny Shakespeare where it always looks (``$LRKIT_DATA``,
``../shared/data`` beside the clone, ``~/.local/share/lrkit``, ``/usr/share/datasets``).
Where it does not (a fresh clone), the session writes small files in their real formats
into a temporary folder (``tests/data_files.py``) and points ``$LRKIT_DATA`` at it, before
any test is collected, so that the smoke run of every suite works; tests that need the real
files skip (``data_files.needs_real_data``). ``$LRKIT_DATA`` stays the same for the whole
session, so a dataset that lrkit caches in memory is the one every test expects.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from data_files import provide_small_data


@dataclass
class SmallData:
    root: Path
    written: list[str]
    saved_env: str | None


_small_data: SmallData | None = None


def pytest_configure(config: pytest.Config) -> None:
    global _small_data
    root = Path(tempfile.mkdtemp(prefix="lrkit-test-data-"))
    written = provide_small_data(root)
    if not written:
        shutil.rmtree(root)
        return
    _small_data = SmallData(root, written, os.environ.get("LRKIT_DATA"))
    os.environ["LRKIT_DATA"] = str(root)


def pytest_unconfigure(config: pytest.Config) -> None:
    global _small_data
    if _small_data is None:
        return
    if _small_data.saved_env is None:
        os.environ.pop("LRKIT_DATA", None)
    else:
        os.environ["LRKIT_DATA"] = _small_data.saved_env
    shutil.rmtree(_small_data.root)
    _small_data = None


def pytest_report_header(config: pytest.Config) -> str:
    if _small_data is None:
        return "lrkit data: the real Fashion-MNIST and Tiny Shakespeare"
    return (
        f"lrkit data: small stand-ins written for {', '.join(_small_data.written)} in "
        f"{_small_data.root} (tests that need the real files skip)"
    )


def pytest_terminal_summary(terminalreporter) -> None:
    """The fault suite's counts (tests/test_faults.py), when it ran."""
    faults = sys.modules.get("test_faults")
    if faults is not None and faults.RESULTS:
        terminalreporter.section("fault suite")
        for line in faults.summary_lines():
            terminalreporter.write_line(line)
