"""Shared test setup: point lrkit at the offline data beside the checkout when the
environment does not say where it is (CI: a clean clone with ../shared/data beside it)."""

from __future__ import annotations

import os
from pathlib import Path

_SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if "LRKIT_DATA" not in os.environ and _SHARED_DATA.is_dir():
    os.environ["LRKIT_DATA"] = str(_SHARED_DATA)
