"""Image classification datasets as in-memory tensors: Fashion-MNIST, MNIST, CIFAR-10/100
(from their standard files, never downloaded) and scikit-learn's bundled 8×8 digits.

Every loader returns an :class:`ImageData` with images as float32 ``[N, C, H, W]`` in
``[0, 1]`` (pixel / 255) and labels as int64 ``[N]``. Decoded datasets are cached in memory
keyed on the resolved folder and the files' sizes and modification times, so a second load is
a dictionary lookup. The cached tensors are shared between callers: treat them as read-only
(index or ``clone()`` before modifying in place).
"""

from __future__ import annotations

import functools
import gzip
import pickle
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from lrkit.data.root import CorruptDataError, file_signature, find_data_dir
from lrkit.data.splits import stratified_holdout
from lrkit.errors import MissingExtraError

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
DIGIT_CLASSES = tuple(str(d) for d in range(10))

IDX_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)
IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions (count, rows, columns)
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension (count)

CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
CIFAR100_FILES = ("train", "test", "meta")
CIFAR_IMAGE_SHAPE = (3, 32, 32)


@dataclass(frozen=True)
class ImageData:
    """A train/test image classification dataset held in memory.

    ``train_images`` / ``test_images``: float32 ``[N, C, H, W]`` in ``[0, 1]``;
    ``train_labels`` / ``test_labels``: int64 ``[N]`` in ``[0, num_classes)``;
    ``class_names[k]`` names label ``k``.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    class_names: tuple[str, ...]


def _pixels_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 pixels -> float32 tensor in [0, 1] (pixel / 255)."""
    return torch.from_numpy(np.divide(pixels, 255, dtype=np.float32))


def _labels_to_tensor(labels: np.ndarray, num_classes: int, source: Path) -> torch.Tensor:
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise CorruptDataError(
            f"{source}: labels range over [{labels.min()}, {labels.max()}], expected integers "
            f"in [0, {num_classes - 1}]"
        )
    return torch.from_numpy(labels.astype(np.int64))


# ---------------------------------------------------------------- idx (MNIST, Fashion-MNIST)


def _gunzip(path: Path) -> bytes:
    try:
        return gzip.decompress(path.read_bytes())
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise CorruptDataError(
            f"{path}: not a complete gzip file ({error}); the download was probably "
            "truncated or the file is not gzip-compressed: fetch it again"
        ) from error


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Decodes a gzip-compressed idx file of unsigned bytes (LeCun's MNIST format).

    Layout: a big-endian int32 magic number ``0x0000 08 D`` (``08`` = unsigned byte, ``D`` =
    number of dimensions; 2051 for image files, 2049 for label files), ``D`` big-endian int32
    dimension sizes, then the bytes in row-major order. Raises :class:`CorruptDataError` on a
    wrong magic number or a payload whose length does not match the header.
    """
    data = _gunzip(path)
    if len(data) < 4:
        raise CorruptDataError(f"{path}: only {len(data)} bytes, too short for an idx header")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise CorruptDataError(
            f"{path}: idx magic number {found}, expected {magic} (unsigned bytes with "
            f"{magic & 0xFF} dimensions); is this the right file?"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CorruptDataError(f"{path}: header truncated ({len(data)} of {header} bytes)")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise CorruptDataError(
            f"{path}: header declares shape {shape} ({expected} bytes in all) but the "
            f"decompressed file has {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _read_idx_split(
    folder: Path, images_name: str, labels_name: str, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    images = read_idx(folder / images_name, IDX_IMAGES_MAGIC)
    labels = read_idx(folder / labels_name, IDX_LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise CorruptDataError(
            f"{folder}: {images_name} holds {images.shape[0]} images but {labels_name} holds "
            f"{labels.shape[0]} labels; the two files must come from the same split"
        )
    pixels = _pixels_to_tensor(images[:, None, :, :])
    return pixels, _labels_to_tensor(labels, num_classes, folder / labels_name)


@functools.lru_cache(maxsize=4)
def _load_idx_dataset(
    name: str, folder: Path, signature: tuple, class_names: tuple[str, ...]
) -> ImageData:
    train_images, train_labels = _read_idx_split(folder, *IDX_FILES[:2], len(class_names))
    test_images, test_labels = _read_idx_split(folder, *IDX_FILES[2:], len(class_names))
    return ImageData(
        name,
        train_images,
        train_labels,
        test_images,
        test_labels,
        len(class_names),
        class_names,
    )


def _load_idx(
    name: str, root: str | Path | None, folder_names: Sequence[str], classes: tuple[str, ...]
) -> ImageData:
    folder = find_data_dir(name, IDX_FILES, root, folder_names=folder_names)
    return _load_idx_dataset(name, folder, file_signature(folder, IDX_FILES), classes)


def load_fashion_mnist(root: str | Path | None = None) -> ImageData:
    """Fashion-MNIST (Xiao et al. 2017): 60,000 train and 10,000 test 28×28 grey images of
    10 clothing classes, from the four idx ``.gz`` files in a folder ``fashion-mnist``
    (see :func:`lrkit.data.root.find_data_dir` for where it is looked for)."""
    return _load_idx("fashion-mnist", root, ("fashion-mnist",), FASHION_MNIST_CLASSES)


def load_mnist(root: str | Path | None = None) -> ImageData:
    """MNIST (LeCun et al. 1998): 60,000 train and 10,000 test 28×28 grey digits, from the
    four idx ``.gz`` files in a folder ``mnist``."""
    return _load_idx("mnist", root, ("mnist",), DIGIT_CLASSES)


# ---------------------------------------------------------------- CIFAR (python pickles)

_PICKLE_GLOBALS = {
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),
}


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles only plain containers and numpy arrays, so a hostile file cannot run code.
    ``numpy.core`` (the module name in pickles written before numpy 2) maps to ``numpy._core``.
    """

    def find_class(self, module: str, name: str) -> object:
        if module.startswith("numpy.core"):
            module = "numpy._core" + module[len("numpy.core") :]
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _read_cifar_pickle(path: Path, required_keys: Sequence[str]) -> dict[str, object]:
    """Loads one CIFAR python pickle (bytes or str keys; Python 2 strings decoded as latin-1)
    and returns its entries under str keys, checking ``required_keys`` are present."""
    try:
        with path.open("rb") as handle:
            content = _ArrayUnpickler(handle, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as error:
        raise CorruptDataError(f"{path}: not a readable CIFAR python pickle ({error})") from error
    if not isinstance(content, dict):
        raise CorruptDataError(f"{path}: expected a pickled dict, found {type(content).__name__}")
    entries = {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in content.items()}
    missing = [key for key in required_keys if key not in entries]
    if missing:
        raise CorruptDataError(
            f"{path}: the pickle lacks the keys {missing} (has {sorted(map(str, entries))}); "
            "expected the python version of CIFAR (cifar-10-python.tar.gz / "
            "cifar-100-python.tar.gz)"
        )
    return entries


def _cifar_images(data: object, path: Path) -> np.ndarray:
    """``data``: uint8 ``[N, 3072]``, each row the 1024 red, then green, then blue values of a
    32×32 image in row-major order; returned as ``[N, 3, 32, 32]``."""
    array = np.asarray(data)
    row = int(np.prod(CIFAR_IMAGE_SHAPE))
    if array.dtype != np.uint8 or array.ndim != 2 or array.shape[1] != row:
        raise CorruptDataError(
            f"{path}: 'data' is {array.dtype} of shape {array.shape}, expected uint8 of shape "
            f"[N, {row}]"
        )
    return array.reshape(-1, *CIFAR_IMAGE_SHAPE)


def _cifar_split(
    paths: Sequence[Path], label_key: str, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = [], []
    for path in paths:
        entries = _read_cifar_pickle(path, ("data", label_key))
        batch_images = _cifar_images(entries["data"], path)
        batch_labels = np.asarray(entries[label_key])
        if batch_labels.ndim != 1 or batch_labels.shape[0] != batch_images.shape[0]:
            raise CorruptDataError(
                f"{path}: {batch_images.shape[0]} images but '{label_key}' has shape "
                f"{batch_labels.shape}; expected one label per image"
            )
        images.append(batch_images)
        labels.append(_labels_to_tensor(batch_labels, num_classes, path))
    return _pixels_to_tensor(np.concatenate(images)), torch.cat(labels)


def _class_names(path: Path, key: str, expected: int) -> tuple[str, ...]:
    names = _read_cifar_pickle(path, (key,))[key]
    decoded = tuple(n.decode("latin1") if isinstance(n, bytes) else str(n) for n in names)
    if len(decoded) != expected:
        raise CorruptDataError(f"{path}: '{key}' lists {len(decoded)} names, expected {expected}")
    return decoded


@functools.lru_cache(maxsize=2)
def _load_cifar10_cached(folder: Path, signature: tuple) -> ImageData:
    train = _cifar_split([folder / f for f in CIFAR10_FILES[:5]], "labels", 10)
    test = _cifar_split([folder / "test_batch"], "labels", 10)
    names = _class_names(folder / "batches.meta", "label_names", 10)
    return ImageData("cifar10", *train, *test, 10, names)


def load_cifar10(root: str | Path | None = None) -> ImageData:
    """CIFAR-10 (Krizhevsky 2009): 50,000 train and 10,000 test 32×32 colour images of 10
    classes, from the python pickles ``data_batch_1`` … ``data_batch_5``, ``test_batch`` and
    ``batches.meta`` in a folder ``cifar-10-batches-py``. The pickles are read with an
    unpickler that accepts only numpy arrays and plain containers."""
    folder = find_data_dir(
        "cifar10", CIFAR10_FILES, root, folder_names=("cifar-10-batches-py", "cifar10")
    )
    return _load_cifar10_cached(folder, file_signature(folder, CIFAR10_FILES))


@functools.lru_cache(maxsize=2)
def _load_cifar100_cached(
    folder: Path, signature: tuple, label_kind: Literal["fine", "coarse"]
) -> ImageData:
    num_classes = 100 if label_kind == "fine" else 20
    label_key = f"{label_kind}_labels"
    train = _cifar_split([folder / "train"], label_key, num_classes)
    test = _cifar_split([folder / "test"], label_key, num_classes)
    names = _class_names(folder / "meta", f"{label_kind}_label_names", num_classes)
    name = "cifar100" if label_kind == "fine" else "cifar100-coarse"
    return ImageData(name, *train, *test, num_classes, names)


def load_cifar100(
    root: str | Path | None = None, label_kind: Literal["fine", "coarse"] = "fine"
) -> ImageData:
    """CIFAR-100 (Krizhevsky 2009): 50,000 train and 10,000 test 32×32 colour images, from the
    python pickles ``train``, ``test`` and ``meta`` in a folder ``cifar-100-python``.
    ``label_kind="fine"`` gives the 100 classes, ``"coarse"`` the 20 super-classes."""
    if label_kind not in ("fine", "coarse"):
        raise ValueError(f"label_kind must be 'fine' or 'coarse', got {label_kind!r}")
    folder = find_data_dir(
        "cifar100", CIFAR100_FILES, root, folder_names=("cifar-100-python", "cifar100")
    )
    return _load_cifar100_cached(folder, file_signature(folder, CIFAR100_FILES), label_kind)


# ---------------------------------------------------------------- scikit-learn digits


@functools.lru_cache(maxsize=8)
def _load_digits_cached(test_fraction: float, seed: int) -> ImageData:
    try:
        from sklearn.datasets import load_digits as sklearn_load_digits
    except ModuleNotFoundError as error:
        if (error.name or "").split(".")[0] != "sklearn":
            raise  # scikit-learn is installed but lacks a dependency: its own error says which
        raise MissingExtraError(
            "the digits data (task digits_mlp, load_digits) need the package 'scikit-learn', "
            "which ships them: pip install 'lrkit[sklearn]'"
        ) from error
    bunch = sklearn_load_digits()
    images = torch.from_numpy(np.asarray(bunch.images, dtype=np.float32) / 16.0).unsqueeze(1)
    labels = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    train, test = stratified_holdout(labels, test_fraction, seed)
    return ImageData(
        "digits", images[train], labels[train], images[test], labels[test], 10, DIGIT_CLASSES
    )


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> ImageData:
    """scikit-learn's bundled handwritten digits (UCI optdigits test set): 1,797 8×8 grey
    images with values 0..16, scaled by 1/16 to [0, 1]; 10 classes.

    The train/test split is stratified and seeded: ``floor(test_fraction · n_c + 1/2)``
    images of each class ``c`` go to the test set (:func:`lrkit.data.splits.stratified_holdout`);
    both sets keep the original order.
    """
    return _load_digits_cached(float(test_fraction), int(seed))
