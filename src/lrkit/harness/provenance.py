"""What a result was computed with: the versions of the packages whose code changes the numbers.

A benchmark's ``results.json`` records :func:`package_versions` in its environment, so a
number that moves between two runs can be traced to a package that changed (or shown not to
come from one).
"""

from __future__ import annotations

import re
from importlib import metadata

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
