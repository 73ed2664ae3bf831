"""Language-modelling corpora as 1-D tensors of token ids: Penn Treebank (word level, from
the user's copy of Mikolov's files) and Tiny Shakespeare (character level).

Decoded corpora are cached in memory keyed on the resolved folder and the files' sizes and
modification times; the cached tensors are shared between callers, so treat them as
read-only.
"""

from __future__ import annotations

import functools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lrkit.data.root import CorruptDataError, file_signature, find_data_dir

PTB_FILES = ("ptb.train.txt", "ptb.valid.txt", "ptb.test.txt")
EOS = "<eos>"
SHAKESPEARE_FILE = "input.txt"


@dataclass(frozen=True)
class TextCorpus:
    """A tokenised corpus: ``train``, ``valid`` and ``test`` are int64 1-D tensors of ids into
    ``vocab`` (``vocab[i]`` is the token with id ``i``)."""

    name: str
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    vocab: tuple[str, ...]

    def decode(self, ids: torch.Tensor) -> list[str]:
        """The tokens of ``ids`` (join them with ``""`` for a character corpus, ``" "`` for
        a word corpus)."""
        return [self.vocab[i] for i in ids.tolist()]


def _read_text(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise CorruptDataError(f"{path}: not UTF-8 text ({error})") from error
    if not text.strip():
        raise CorruptDataError(f"{path}: the file is empty")
    return text


# ---------------------------------------------------------------- Penn Treebank


def _ptb_words(path: Path) -> list[str]:
    """The file's whitespace-separated words with ``<eos>`` after every line."""
    words = []
    for line in _read_text(path).splitlines():
        words += line.split()
        words.append(EOS)
    return words


def _ptb_ids(words: list[str], word_to_id: dict[str, int], path: Path) -> torch.Tensor:
    unknown = sorted({w for w in words if w not in word_to_id})
    if unknown:
        shown = ", ".join(unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise CorruptDataError(
            f"{path}: {len(unknown)} words do not occur in ptb.train.txt ({shown}); the Penn "
            "Treebank files map rare words to <unk>, so valid/test words must all be in train"
        )
    return torch.tensor([word_to_id[w] for w in words], dtype=torch.int64)


@functools.lru_cache(maxsize=2)
def _load_ptb_cached(folder: Path, signature: tuple) -> TextCorpus:
    train, valid, test = (_ptb_words(folder / name) for name in PTB_FILES)
    counts = Counter(train)
    vocab = tuple(word for word, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])))
    word_to_id = {word: i for i, word in enumerate(vocab)}
    return TextCorpus(
        "ptb",
        _ptb_ids(train, word_to_id, folder / PTB_FILES[0]),
        _ptb_ids(valid, word_to_id, folder / PTB_FILES[1]),
        _ptb_ids(test, word_to_id, folder / PTB_FILES[2]),
        vocab,
    )


def load_ptb(root: str | Path | None = None) -> TextCorpus:
    """Penn Treebank, word level (Mikolov's preprocessing: 10k-word vocabulary, rare words
    already ``<unk>``), from ``ptb.train.txt``, ``ptb.valid.txt`` and ``ptb.test.txt`` in a
    folder ``ptb``.

    As in the reader of Zaremba et al. (2014): every line is split on whitespace and
    followed by ``<eos>``; the vocabulary is the set of training words ordered by decreasing
    count, ties alphabetically (id 0 is the most frequent word). A valid/test word missing
    from the training vocabulary raises :class:`CorruptDataError`.
    """
    folder = find_data_dir("ptb", PTB_FILES, root, folder_names=("ptb", "simple-examples/data"))
    return _load_ptb_cached(folder, file_signature(folder, PTB_FILES))


# ---------------------------------------------------------------- Tiny Shakespeare


def _split_sizes(total: int, valid_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    for label, fraction in (("valid_fraction", valid_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= fraction < 1.0:
            raise ValueError(f"{label} must lie in [0, 1), got {fraction}")
    if valid_fraction + test_fraction >= 1.0:
        raise ValueError(
            f"valid_fraction {valid_fraction} + test_fraction {test_fraction} must be below 1 "
            "to leave training text"
        )
    num_valid = int(total * valid_fraction)
    num_test = int(total * test_fraction)
    return total - num_valid - num_test, num_valid, num_test


@functools.lru_cache(maxsize=4)
def _load_shakespeare_cached(
    path: Path, signature: tuple, valid_fraction: float, test_fraction: float
) -> TextCorpus:
    text = _read_text(path)
    sizes = _split_sizes(len(text), valid_fraction, test_fraction)
    codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    alphabet, ids = np.unique(codepoints, return_inverse=True)
    train, valid, test = torch.from_numpy(ids.astype(np.int64)).split(sizes)
    vocab = tuple(chr(c) for c in alphabet.tolist())
    return TextCorpus("tinyshakespeare", train, valid, test, vocab)


def load_tiny_shakespeare(
    root: str | Path | None = None, valid_fraction: float = 0.05, test_fraction: float = 0.05
) -> TextCorpus:
    """Tiny Shakespeare (Karpathy's char-rnn ``input.txt``, 1,115,394 characters), character
    level, from ``tinyshakespeare/input.txt``.

    The vocabulary is every character of the whole file, sorted by code point (65 for the
    standard file). The text is split contiguously, train | valid | test, with
    ``int(n · valid_fraction)`` and ``int(n · test_fraction)`` characters in the last two.
    """
    folder = find_data_dir(
        "tinyshakespeare", (SHAKESPEARE_FILE,), root, folder_names=("tinyshakespeare",)
    )
    signature = file_signature(folder, (SHAKESPEARE_FILE,))
    return _load_shakespeare_cached(
        folder / SHAKESPEARE_FILE, signature, float(valid_fraction), float(test_fraction)
    )
