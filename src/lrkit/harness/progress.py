"""Progress bars for long runs: tqdm when it is installed and wanted, else nothing."""

from __future__ import annotations

from typing import Any


class _NoBar:
    total = 0

    def refresh(self) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, description: str, enabled: bool, unit: str = "step") -> Any:
    """A tqdm bar when enabled and tqdm is installed, else an object that ignores updates."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _NoBar()
    return tqdm(total=total, desc=description, unit=unit, leave=False)
