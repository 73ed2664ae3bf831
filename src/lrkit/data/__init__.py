"""Datasets as in-memory tensors, hold-out splits, label noise and image corruptions.

Nothing is downloaded: loaders read standard files from ``root``, ``$LRKIT_DATA`` or the
default places (``../shared/data`` beside a clone, ``~/.local/share/lrkit``,
``/usr/share/datasets``; see :mod:`lrkit.data.root`).
"""

from lrkit.data.batches import Batch, iterate_batches
from lrkit.data.corruptions import CORRUPTIONS, Corruption, corrupt_images
from lrkit.data.images import (
    ImageData,
    load_cifar10,
    load_cifar100,
    load_digits,
    load_fashion_mnist,
    load_mnist,
)
from lrkit.data.noise import NoisyLabels, pair_flip_noise, uniform_label_noise
from lrkit.data.root import CorruptDataError, DataNotFoundError, find_data_dir, search_key
from lrkit.data.splits import balanced_holdout, stratified_holdout
from lrkit.data.text import TextCorpus, load_ptb, load_tiny_shakespeare

__all__ = [
    "CORRUPTIONS",
    "Batch",
    "CorruptDataError",
    "Corruption",
    "DataNotFoundError",
    "ImageData",
    "NoisyLabels",
    "TextCorpus",
    "balanced_holdout",
    "corrupt_images",
    "find_data_dir",
    "iterate_batches",
    "load_cifar10",
    "load_cifar100",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "load_ptb",
    "load_tiny_shakespeare",
    "pair_flip_noise",
    "search_key",
    "stratified_holdout",
    "uniform_label_noise",
]
