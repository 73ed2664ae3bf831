"""Datasets as in-memory tensors, hold-out splits, label noise and image corruptions.

Nothing is downloaded: loaders read standard files from ``root``, ``$LRKIT_DATA`` or
``/usr/share/datasets`` (see :func:`find_data_dir`).
"""

from lrkit.data.batches import Batch, iterate_batches
from lrkit.data.images import (
    ImageData,
    load_cifar10,
    load_cifar100,
    load_digits,
    load_fashion_mnist,
    load_mnist,
)
from lrkit.data.root import CorruptDataError, DataNotFoundError, find_data_dir
from lrkit.data.splits import balanced_holdout, stratified_holdout
from lrkit.data.text import TextCorpus, load_ptb, load_tiny_shakespeare

__all__ = [
    "Batch",
    "CorruptDataError",
    "DataNotFoundError",
    "ImageData",
    "TextCorpus",
    "balanced_holdout",
    "find_data_dir",
    "iterate_batches",
    "load_cifar10",
    "load_cifar100",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "load_ptb",
    "load_tiny_shakespeare",
    "stratified_holdout",
]
