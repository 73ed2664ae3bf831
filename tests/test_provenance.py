"""package_versions(): what results.json records about the packages behind its numbers."""

from __future__ import annotations

import dataclasses
import json

import numpy
import pytest
import torch

from lrkit.harness import provenance
from lrkit.methods import registry


def test_records_torch_numpy_and_every_peer_package() -> None:
    versions = provenance.package_versions()
    assert versions["torch"] == torch.__version__
    assert versions["numpy"] == numpy.__version__
    for peer in ("schedulefree", "prodigyopt", "dadaptation", "dog-optimizer", "mechanic-pytorch"):
        assert peer in versions
    json.dumps(versions)  # goes into results.json as it is


def test_a_package_that_is_not_installed_is_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(provenance, "RECORDED_PACKAGES", ("torch", "lrkit-no-such-package"))
    versions = provenance.package_versions()
    assert versions["lrkit-no-such-package"] is None and versions["torch"]


def test_a_registered_method_adds_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    """A new peer in the registry is recorded by its distribution's name (here the import
    ``_pytest`` stands for a peer package, provided by the distribution ``pytest``)."""
    monkeypatch.setattr(provenance, "RECORDED_PACKAGES", ("torch",))
    spec = dataclasses.replace(registry.get_method("prodigy"), name="new_peer", requires="_pytest")
    monkeypatch.setitem(registry.METHODS, "new_peer", spec)
    assert provenance.package_versions()["pytest"] == pytest.__version__
