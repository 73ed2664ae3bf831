"""The benchmark suites, one module per paper, registered here explicitly.

A suite module provides ``build(scale) -> Suite``; adding a suite is one module plus one
:func:`register_suite` line below. ``lrkit list`` shows them, ``lrkit bench NAME`` runs one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lrkit.harness.experiments import SCALES, Suite
from lrkit.suites import l4, marthe, quick


@dataclass(frozen=True)
class SuiteEntry:
    """A registered suite: its factory, one line for listings, and the scales it has."""

    build: Callable[[str], Suite]
    summary: str
    scales: tuple[str, ...] = ("cpu",)


SUITES: dict[str, SuiteEntry] = {}


def register_suite(
    name: str, build: Callable[[str], Suite], summary: str, scales: tuple[str, ...] = ("cpu",)
) -> None:
    if name in SUITES:
        raise ValueError(f"suite {name!r} is registered twice")
    unknown = [scale for scale in scales if scale not in SCALES]
    if unknown:
        raise ValueError(f"suite {name!r} declares unknown scales {unknown}; known: {SCALES}")
    SUITES[name] = SuiteEntry(build, summary, scales)


def get_suite(name: str, scale: str = "cpu") -> Suite:
    if name not in SUITES:
        raise KeyError(f"unknown suite {name!r}; known suites: {', '.join(sorted(SUITES))}")
    entry = SUITES[name]
    if scale not in entry.scales:
        raise ValueError(
            f"suite {name!r} has no {scale!r} scale; it has: {', '.join(entry.scales)}"
        )
    return entry.build(scale)


register_suite(
    "quick", quick.build, "a few minutes: Fashion-MNIST MLP (7000 images), Recht regression, Beale"
)
register_suite(
    "l4",
    l4.build,
    "the L4 paper's experiments (Tables 1–4, Figs. 2, 3, 6, 7, 9), scaled to 2 CPUs",
    scales=("cpu", "paper"),
)
register_suite(
    "marthe",
    marthe.build,
    "the MARTHE paper's experiments (Fig. 1, Secs. 5 and 6): HD, RTHO, MARTHE, LRS-OPT",
    scales=("cpu", "paper"),
)
