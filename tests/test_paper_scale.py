"""The paper scale of the l4 suite runs unchanged where the paper's data exist: smoke-tested
here on tiny MNIST and CIFAR-10 files in their real formats, written by the test."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from lrkit.cli import main
from lrkit.suites import get_suite
from test_data import IDX_FILES, idx_bytes

PER_CLASS_TRAIN = 110  # the paper tasks hold out 100 validation images per class


def _labels(per_class: int) -> np.ndarray:
    return np.tile(np.arange(10, dtype=np.uint8), per_class)


def write_tiny_mnist(folder: Path) -> None:
    rng = np.random.default_rng(0)
    train_labels, test_labels = _labels(PER_CLASS_TRAIN), _labels(2)
    arrays = {
        IDX_FILES[0]: rng.integers(0, 256, (train_labels.size, 28, 28), dtype=np.uint8),
        IDX_FILES[1]: train_labels,
        IDX_FILES[2]: rng.integers(0, 256, (test_labels.size, 28, 28), dtype=np.uint8),
        IDX_FILES[3]: test_labels,
    }
    folder.mkdir(parents=True)
    for name, array in arrays.items():
        (folder / name).write_bytes(idx_bytes(array))


def write_tiny_cifar10(folder: Path) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    per_batch = PER_CLASS_TRAIN * 10 // 5
    for name, count in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", 20)]:
        labels = np.tile(np.arange(10), count // 10).tolist()
        content = {
            b"batch_label": name.encode(),
            b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
            b"labels": labels,
            b"filenames": [f"{name}_{i}.png".encode() for i in range(count)],
        }
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    meta = {
        b"label_names": [f"class{k}".encode() for k in range(10)],
        b"num_cases_per_batch": per_batch,
        b"num_vis": 3072,
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


def test_the_l4_paper_scale_names_the_papers_models_and_budgets() -> None:
    paper, cpu = get_suite("l4", "paper"), get_suite("l4")
    tasks = {e.name: e.task for e in paper.experiments}
    assert tasks["mlp"] == "mnist_mlp2" and tasks["resnet"] == "cifar10_resnet32"
    steps = {e.name: e.steps for e in paper.experiments}
    assert steps["mlp"] == 30 * (59000 // 64)
    assert "resnet" not in {e.name for e in cpu.experiments}


def test_the_l4_paper_scale_runs_on_files_in_the_real_formats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    write_tiny_mnist(data / "mnist")
    write_tiny_cifar10(data / "cifar-10-batches-py")
    monkeypatch.setenv("LRKIT_DATA", str(data))
    out = tmp_path / "out"
    args = ["bench", "l4", "--scale", "paper", "--smoke", "--out", str(out), "--no-progress"]
    args += ["--tasks", "mlp,resnet", "--methods", "l4mom", "--workers", "1"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["scale"] == "paper"
    assert {r["config"]["task"] for r in results["runs"]} == {"mnist_mlp2", "cifar10_resnet32"}
    assert all(r["steps_done"] == r["total_steps"] for r in results["runs"])
