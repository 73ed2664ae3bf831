"""Small files in the real formats of the datasets the suites read, for a machine without
the real data (a fresh clone), and the real datasets where lrkit finds them.

``tests/conftest.py`` calls :func:`provide_small_data` when lrkit's search (``$LRKIT_DATA``,
``../shared/data`` beside the clone, ``~/.local/share/lrkit``, ``/usr/share/datasets``) does
not find Fashion-MNIST or Tiny Shakespeare, so that the smoke run of every suite works
everywhere. Every folder written here holds :data:`SMALL_DATA_MARKER`; tests that need the
real files (60,000 images, 1,115,394 characters, accuracy after real training) use
:func:`needs_real_data`, which skips them when only the small files (or none) are found.
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lrkit.data import DataNotFoundError, find_data_dir
from lrkit.data.images import IDX_FILES
from lrkit.data.text import SHAKESPEARE_FILE

SMALL_DATA_MARKER = "SMALL-TEST-DATA.txt"
MARKER_TEXT = (
    "Small files in the real format, written by lrkit's tests (tests/data_files.py) because "
    "the real dataset was not found. Not the real data.\n"
)


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """A gzip-compressed idx file of unsigned bytes: magic ``0x08nn`` (nn = dimensions),
    the big-endian dimension sizes, then the bytes."""
    magic = 0x0800 + array.ndim if magic is None else magic
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


SMALL_FASHION_TRAIN_PER_CLASS = 800
SMALL_FASHION_TEST_PER_CLASS = 50


def small_fashion_mnist_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    """The four idx arrays of a small Fashion-MNIST stand-in: 28×28 grey images of 10
    classes, each class a fixed random template plus noise (learnable, like the real data),
    labels balanced and shuffled. 800 training images per class are what every task needs
    at its defaults (fmnist_mlp_subset: 700 per class for training and 70 held out)."""
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 2, (10, 7, 7)).repeat(4, axis=1).repeat(4, axis=2) * 180

    def split(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.permutation(np.repeat(np.arange(10), per_class))
        noise = rng.integers(0, 4, (labels.size, 28, 28)) * 25
        return (templates[labels] + noise).astype(np.uint8), labels.astype(np.uint8)

    train_images, train_labels = split(SMALL_FASHION_TRAIN_PER_CLASS)
    test_images, test_labels = split(SMALL_FASHION_TEST_PER_CLASS)
    return dict(zip(IDX_FILES, (train_images, train_labels, test_images, test_labels), strict=True))


def write_small_fashion_mnist(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in small_fashion_mnist_arrays().items():
        (folder / name).write_bytes(idx_bytes(array))


SHAKESPEARE_LINES = (
    "ROMEO:\nBut, soft! what light through yonder window breaks?\n",
    "JULIET:\nO Romeo, Romeo! wherefore art thou Romeo?\n",
    "HAMLET:\nTo be, or not to be: that is the question.\n",
    "MACBETH:\nTo-morrow, and to-morrow, and to-morrow,\nCreeps in this petty pace.\n",
    "KING LEAR:\nNothing will come of nothing: speak again.\n",
    "PORTIA:\nThe quality of mercy is not strain'd;\n",
)


def small_shakespeare_text(characters: int = 20_000, seed: int = 0) -> str:
    """About ``characters`` characters of a few famous lines in random order: a small
    stand-in for ``input.txt`` (the real file has 1,115,394)."""
    rng = np.random.default_rng(seed)
    parts, length = [], 0
    while length < characters:
        line = SHAKESPEARE_LINES[rng.integers(len(SHAKESPEARE_LINES))] + "\n"
        parts.append(line)
        length += len(line)
    return "".join(parts)


def write_small_shakespeare(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / SHAKESPEARE_FILE).write_text(small_shakespeare_text(), encoding="utf-8")


@dataclass(frozen=True)
class SuiteDataset:
    """A dataset the suites read: lrkit's name for it (also its folder), its files, and the
    writer of its small stand-in."""

    name: str
    files: tuple[str, ...]
    write_small: Callable[[Path], None]


SUITE_DATASETS = (
    SuiteDataset("fashion-mnist", IDX_FILES, write_small_fashion_mnist),
    SuiteDataset("tinyshakespeare", (SHAKESPEARE_FILE,), write_small_shakespeare),
)


def suite_dataset(name: str) -> SuiteDataset:
    return next(dataset for dataset in SUITE_DATASETS if dataset.name == name)


def found_folder(dataset: SuiteDataset) -> Path | None:
    """Where lrkit's default search finds ``dataset`` now, or None."""
    try:
        return find_data_dir(dataset.name, dataset.files, folder_names=(dataset.name,))
    except DataNotFoundError:
        return None


def real_data_folder(name: str) -> Path | None:
    """The folder of the real dataset ``name`` where lrkit finds it, or None when it finds
    none or only the small stand-in."""
    folder = found_folder(suite_dataset(name))
    if folder is None or (folder / SMALL_DATA_MARKER).exists():
        return None
    return folder


def needs_real_data(name: str) -> pytest.MarkDecorator:
    """Skips a test unless lrkit finds the real dataset ``name``."""
    return pytest.mark.skipif(
        real_data_folder(name) is None,
        reason=f"needs the real {name} files, which lrkit does not find here (only the small "
        "stand-in that the tests write, or nothing): see the README's Data section",
    )


def provide_small_data(root: Path) -> list[str]:
    """Makes ``root`` a data folder with every dataset the suites read: a link to the
    folder where lrkit finds the dataset, else small files in its real format (with
    :data:`SMALL_DATA_MARKER`). Returns the names of the datasets written small."""
    written = []
    for dataset in SUITE_DATASETS:
        folder = found_folder(dataset)
        if folder is not None:
            (root / dataset.name).symlink_to(folder, target_is_directory=True)
            continue
        dataset.write_small(root / dataset.name)
        (root / dataset.name / SMALL_DATA_MARKER).write_text(MARKER_TEXT)
        written.append(dataset.name)
    return written
