"""Recurrent tasks: a character-level LSTM language model on Tiny Shakespeare (the stand-in
for MLR-SNet's Penn Treebank LSTMs) and a generated repeat-copy task (the stand-in for L4's
DNC repeat-copy; the DNC itself and PTB are not available offline). Models are built by
:func:`lrkit.tasks.vision.build_seeded`.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import lru_cache

import torch
from torch import nn
from torch.nn import functional as F

from lrkit.data import load_tiny_shakespeare
from lrkit.tasks import register_task
from lrkit.tasks.base import Task, TaskData, classification_metrics
from lrkit.tasks.vision import build_seeded

# --------------------------------------------------------------------------------------------
# shakespeare_char_lstm


class CharLSTM(nn.Module):
    """Embedding → one-layer LSTM → linear read-out; logits [batch, time, vocabulary]."""

    def __init__(self, vocab_size: int, embedding_dim: int, hidden_size: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.lstm = nn.LSTM(embedding_dim, hidden_size, batch_first=True)
        self.readout = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.lstm(self.embedding(tokens))
        return self.readout(hidden)


def sequence_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per sequence: the mean over positions of −log softmax(outputs[t])[targets[t]]
    (nats per token); ``outputs`` [batch, time, vocabulary], ``targets`` [batch, time]."""
    return F.cross_entropy(outputs.transpose(1, 2), targets, reduction="none").mean(dim=1)


def text_windows(tokens: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping windows: inputs ``tokens[k·L : k·L + L]`` and targets shifted by one,
    ``tokens[k·L + 1 : k·L + L + 1]``, for every k with a full window (the tail is dropped)."""
    count = (tokens.numel() - 1) // seq_len
    if count < 1:
        raise ValueError(
            f"a text of {tokens.numel()} tokens has no window of {seq_len} + 1 tokens; "
            "use a shorter seq_len"
        )
    used = count * seq_len
    return tokens[:used].view(count, seq_len), tokens[1 : used + 1].view(count, seq_len)


@lru_cache(maxsize=4)
def _shakespeare_windows(root: str | None, seq_len: int) -> TaskData:
    corpus = load_tiny_shakespeare(root)
    train, validation, test = (
        text_windows(part, seq_len) for part in (corpus.train, corpus.valid, corpus.test)
    )
    return TaskData(
        train_inputs=train[0],
        train_targets=train[1],
        validation_inputs=validation[0],
        validation_targets=validation[1],
        test_inputs=test[0],
        test_targets=test[1],
        num_classes=len(corpus.vocab),
        extras={"vocab": corpus.vocab},
    )


@register_task(
    "shakespeare_char_lstm",
    "Tiny Shakespeare character LSTM (embedding 32, 1×128), windows of 64, batch 32",
)
def shakespeare_char_lstm(
    seq_len: int = 64,
    embedding_dim: int = 32,
    hidden_size: int = 128,
    batch_size: int = 32,
    steps: int = 3000,
    root: str | None = None,
) -> Task:
    """Character-level language model on Tiny Shakespeare (:func:`load_tiny_shakespeare`:
    contiguous 90/5/5 % train/valid/test split, 65 characters). Rows are non-overlapping
    windows of ``seq_len`` characters (:func:`text_windows`) with the next characters as
    targets; the LSTM starts from a zero state in every window. Per-example loss: mean
    cross-entropy over the window's positions (nats/char). Metrics: ``test_loss``,
    ``test_bits_per_char`` (= test_loss / ln 2) and ``test_accuracy`` (next-character
    argmax); tuning minimises ``test_loss``. The validation split is the corpus's valid part.
    """
    if seq_len < 1:
        raise ValueError(f"shakespeare_char_lstm: seq_len must be positive, got {seq_len}")

    def data_factory(_: int) -> TaskData:
        cached = _shakespeare_windows(root, seq_len)
        return replace(cached, extras=dict(cached.extras))

    def model_factory(generator: torch.Generator) -> nn.Module:
        vocab_size = _shakespeare_windows(root, seq_len).num_classes
        return build_seeded(generator, lambda: CharLSTM(vocab_size, embedding_dim, hidden_size))

    def metrics_fn(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> dict:
        metrics = classification_metrics(task, model, inputs, targets)
        metrics["bits_per_char"] = metrics["loss"] / math.log(2.0)
        return metrics

    task = Task(
        name="shakespeare_char_lstm",
        description=shakespeare_char_lstm.__doc__ or "",
        model_factory=model_factory,
        data_factory=data_factory,
        per_example_loss=sequence_cross_entropy,
        batch_size=batch_size,
        steps=steps,
        eval_every=250,
        primary_metric="test_loss",
        maximize=False,
        metrics_fn=metrics_fn,
    )
    return task


# --------------------------------------------------------------------------------------------
# repeat_copy

IGNORE = -1.0


def repeat_copy_sequences(
    count: int,
    num_bits: int,
    max_length: int,
    max_repeats: int,
    generator: torch.Generator,
    min_length: int = 1,
    min_repeats: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` repeat-copy episodes in the layout of DeepMind's DNC ``repeat_copy.py``.

    A pattern of L random bit vectors (L uniform in [min_length, max_length]) is to be
    written out R times (R uniform in [min_repeats, max_repeats]). Input channels: the
    ``num_bits`` data bits, a start marker, and the repeat count R / max_repeats.
    Time steps: t = 0 start marker; t = 1..L the pattern; t = L + 1 the repeat count; then
    R·L output steps (the pattern R times) and one end-marker step. Target channels: the
    ``num_bits`` bits and the end marker; target entries outside the R·L + 1 output steps are
    ``IGNORE`` (−1), as is all padding to the longest episode (T = max_length·(max_repeats +
    1) + 3 steps). Returns float inputs [count, T, num_bits + 2] and targets
    [count, T, num_bits + 1].
    """
    if not 1 <= min_length <= max_length or not 1 <= min_repeats <= max_repeats:
        raise ValueError(
            f"repeat_copy needs 1 ≤ min_length ≤ max_length and 1 ≤ min_repeats ≤ max_repeats, "
            f"got lengths [{min_length}, {max_length}] and repeats [{min_repeats}, {max_repeats}]"
        )
    total = max_length * (max_repeats + 1) + 3
    inputs = torch.zeros(count, total, num_bits + 2)
    targets = torch.full((count, total, num_bits + 1), IGNORE)
    lengths = torch.randint(min_length, max_length + 1, (count,), generator=generator)
    repeats = torch.randint(min_repeats, max_repeats + 1, (count,), generator=generator)
    patterns = torch.randint(0, 2, (count, max_length, num_bits), generator=generator).float()
    for row, (length, repeat) in enumerate(zip(lengths.tolist(), repeats.tolist(), strict=True)):
        pattern = patterns[row, :length]
        inputs[row, 0, num_bits] = 1.0
        inputs[row, 1 : length + 1, :num_bits] = pattern
        inputs[row, length + 1, num_bits + 1] = repeat / max_repeats
        start, stop = length + 2, length + 2 + repeat * length
        targets[row, start : stop + 1] = 0.0
        targets[row, start:stop, :num_bits] = pattern.repeat(repeat, 1)
        targets[row, stop, num_bits] = 1.0
    return inputs, targets


class RecurrentBitPredictor(nn.Module):
    """One-layer LSTM with a linear read-out: one logit per output bit and time step."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.readout = nn.Linear(hidden_size, output_size)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        hidden, _ = self.lstm(inputs)
        return self.readout(hidden)


def masked_bit_cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per episode: mean binary cross-entropy (sigmoid logits) over the target entries that
    are not ``IGNORE``."""
    mask = targets != IGNORE
    losses = F.binary_cross_entropy_with_logits(outputs, targets.clamp(min=0.0), reduction="none")
    per_row = (losses * mask).flatten(1).sum(dim=1)
    return per_row / mask.flatten(1).sum(dim=1).clamp(min=1)


def repeat_copy_accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """(bit accuracy over target entries, fraction of episodes with every target bit right);
    a bit is predicted 1 where its logit is positive."""
    mask = targets != IGNORE
    correct = ((outputs > 0).to(targets.dtype) == targets) | ~mask
    bit_accuracy = float((correct & mask).sum()) / max(1, int(mask.sum()))
    episode_accuracy = float(correct.flatten(1).all(dim=1).double().mean())
    return bit_accuracy, episode_accuracy


@lru_cache(maxsize=4)
def _repeat_copy_pools(
    num_bits: int, max_length: int, max_repeats: int, sizes: tuple[int, int, int], seed: int
) -> TaskData:
    pools = [
        repeat_copy_sequences(
            size, num_bits, max_length, max_repeats, torch.Generator().manual_seed(seed + split)
        )
        for split, size in enumerate(sizes)
    ]
    (train_x, train_y), (val_x, val_y), (test_x, test_y) = pools
    return TaskData(train_x, train_y, val_x, val_y, test_x, test_y)


@register_task(
    "repeat_copy",
    "DNC-style repeat-copy (4 bits, length ≤ 3, ≤ 3 repeats), LSTM 64, batch 16",
)
def repeat_copy(
    num_bits: int = 4,
    max_length: int = 3,
    max_repeats: int = 3,
    hidden_size: int = 64,
    num_train: int = 8192,
    num_validation: int = 512,
    num_test: int = 1024,
    batch_size: int = 16,
    steps: int = 4000,
    seed: int = 0,
) -> Task:
    """Stand-in for L4 Sec. 3.4's DNC repeat-copy (DeepMind's ``dnc`` repository,
    ``repeat_copy.py``; its training script defaults to 4 bits): episodes from
    :func:`repeat_copy_sequences`, fixed pools of ``num_train`` / ``num_validation`` /
    ``num_test`` episodes generated from seeds ``seed``, ``seed + 1``, ``seed + 2``. The
    model is an LSTM (``hidden_size`` units) instead of a DNC, reading one input vector per
    step and emitting one logit per target bit. Per-example loss: mean sigmoid cross-entropy
    over the episode's output steps (:func:`masked_bit_cross_entropy`); batch 16 (L4's).
    Primary metric ``test_loss`` (minimise; L4 reports the loss); also ``test_bit_accuracy``
    and ``test_episode_accuracy``.
    """
    sizes = (num_train, num_validation, num_test)
    if min(sizes) < 1:
        raise ValueError(f"repeat_copy: pool sizes must be positive, got {sizes}")

    def data_factory(_: int) -> TaskData:
        cached = _repeat_copy_pools(num_bits, max_length, max_repeats, sizes, seed)
        return replace(cached, extras=dict(cached.extras))

    def model_factory(generator: torch.Generator) -> nn.Module:
        return build_seeded(
            generator, lambda: RecurrentBitPredictor(num_bits + 2, hidden_size, num_bits + 1)
        )

    def metrics_fn(model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> dict:
        dtype = next(model.parameters()).dtype
        outputs = model(inputs.to(dtype))
        targets = targets.to(dtype)
        bit_accuracy, episode_accuracy = repeat_copy_accuracy(outputs, targets)
        return {
            "loss": float(masked_bit_cross_entropy(outputs, targets).double().mean()),
            "bit_accuracy": bit_accuracy,
            "episode_accuracy": episode_accuracy,
        }

    return Task(
        name="repeat_copy",
        description=repeat_copy.__doc__ or "",
        model_factory=model_factory,
        data_factory=data_factory,
        per_example_loss=masked_bit_cross_entropy,
        batch_size=batch_size,
        steps=steps,
        eval_every=250,
        primary_metric="test_loss",
        maximize=False,
        metrics_fn=metrics_fn,
    )
