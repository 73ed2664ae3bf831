"""Shared test setup: point lrkit at the offline data beside the checkout when the
environment does not say where it is (CI: a clean clone with ../shared/data beside it)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

_SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if "LRKIT_DATA" not in os.environ and _SHARED_DATA.is_dir():
    os.environ["LRKIT_DATA"] = str(_SHARED_DATA)


def pytest_terminal_summary(terminalreporter) -> None:
    """The fault suite's counts (tests/test_faults.py), when it ran."""
    faults = sys.modules.get("test_faults")
    if faults is not None and faults.RESULTS:
        terminalreporter.section("fault suite")
        for line in faults.summary_lines():
            terminalreporter.write_line(line)
