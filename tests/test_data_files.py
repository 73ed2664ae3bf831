"""The small stand-ins that tests/conftest.py writes on a machine without the real datasets:
the loaders and tasks read them, and tests that need the real data can tell them apart."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import lrkit.data.root as data_root
from data_files import (
    SMALL_DATA_MARKER,
    SUITE_DATASETS,
    provide_small_data,
    real_data_folder,
    suite_dataset,
)
from lrkit.data import load_fashion_mnist, load_tiny_shakespeare
from lrkit.tasks import TASKS, get_task


@pytest.fixture
def nothing_found(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """lrkit's default search finds no dataset (a fresh clone on a bare machine)."""
    monkeypatch.delenv("LRKIT_DATA", raising=False)
    monkeypatch.setattr(data_root, "CHECKOUT_DATA_DIR", tmp_path / "no-clone-data")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "no-user-data"))
    monkeypatch.setattr(data_root, "SYSTEM_DATA_DIR", tmp_path / "no-system-data")


def test_small_stand_ins_are_read_by_the_loaders(tmp_path: Path, nothing_found: None) -> None:
    assert provide_small_data(tmp_path / "data") == [d.name for d in SUITE_DATASETS]
    images = load_fashion_mnist(tmp_path / "data")
    assert images.train_images.shape == (8000, 1, 28, 28)
    assert images.test_images.shape == (500, 1, 28, 28)
    assert torch.equal(images.train_labels.bincount(), torch.full((10,), 800))
    means = torch.stack([images.train_images[images.train_labels == k].mean(0) for k in range(10)])
    assert torch.cdist(means.flatten(1), means.flatten(1)).add(torch.eye(10) * 99).min() > 5
    corpus = load_tiny_shakespeare(tmp_path / "data")
    assert corpus.train.numel() > 15_000 and "R" in corpus.vocab


@pytest.mark.parametrize("name", sorted(n for n in TASKS if n.startswith("fmnist_")))
def test_every_fashion_mnist_task_builds_on_the_stand_in(name: str, tmp_path: Path) -> None:
    suite_dataset("fashion-mnist").write_small(tmp_path)
    data = get_task(name, root=str(tmp_path)).load_data(0)
    assert data.num_train > 0 and data.validation_inputs.shape[0] > 0


def test_small_stand_ins_are_never_taken_for_the_real_data(
    tmp_path: Path, nothing_found: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    provide_small_data(tmp_path / "data")
    monkeypatch.setenv("LRKIT_DATA", str(tmp_path / "data"))
    for dataset in SUITE_DATASETS:
        assert (tmp_path / "data" / dataset.name / SMALL_DATA_MARKER).is_file()
        assert real_data_folder(dataset.name) is None


def test_a_found_dataset_is_linked_not_replaced(
    tmp_path: Path, nothing_found: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where lrkit finds one dataset (through $LRKIT_DATA, which the session then points at
    the stand-ins' folder), the folder links to it: the real files stay visible."""
    shakespeare = suite_dataset("tinyshakespeare")
    shakespeare.write_small(tmp_path / "real" / shakespeare.name)  # no marker: counts as real
    monkeypatch.setenv("LRKIT_DATA", str(tmp_path / "real"))
    assert provide_small_data(tmp_path / "data") == ["fashion-mnist"]
    monkeypatch.setenv("LRKIT_DATA", str(tmp_path / "data"))
    assert real_data_folder("tinyshakespeare") == (tmp_path / "real" / shakespeare.name).resolve()
    assert real_data_folder("fashion-mnist") is None
