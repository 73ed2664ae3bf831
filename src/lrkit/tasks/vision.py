"""Image classification tasks on Fashion-MNIST (the offline stand-in for MNIST and CIFAR) and
scikit-learn's 8×8 digits; the paper-scale tasks on MNIST and CIFAR are in
:mod:`lrkit.tasks.paper`.

Every task holds out a class-balanced validation split of the training images
(:func:`lrkit.data.balanced_holdout`, fixed seed) for methods that need one. Inputs are
standardised with statistics of the kept training images; images keep their [N, 1, H, W]
shape (the MLPs flatten them), so all Fashion-MNIST tasks share one cached copy of the
tensors. The cached tensors are shared between calls: treat them as read-only (build new
tensors, e.g. for label noise, instead of writing into them).

Models are built by :func:`build_seeded`: the same generator state gives the same weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache

import torch
from torch import nn
from torch.nn import functional as F

from lrkit.data import ImageData, balanced_holdout, load_digits, load_fashion_mnist
from lrkit.tasks import register_task
from lrkit.tasks.base import Task, TaskData

SPLIT_SEED = 0


def build_seeded(generator: torch.Generator, build: Callable[[], nn.Module]) -> nn.Module:
    """Runs ``build`` (which may use PyTorch's default initialisers) under a forked global RNG
    seeded from one draw of ``generator``, so the model depends on the generator alone and
    the caller's global RNG state is left untouched."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def cross_entropy_per_example(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy −log softmax(outputs)[target]."""
    return F.cross_entropy(outputs, targets, reduction="none")


def _standardize(
    train: torch.Tensor, *others: torch.Tensor, per_feature: bool
) -> tuple[torch.Tensor, ...]:
    """(x − mean)/std with the training set's statistics: one scalar pair, or one pair per
    pixel (``per_feature``; constant pixels get std 1)."""
    if per_feature:
        mean, std = train.mean(dim=0, keepdim=True), train.std(dim=0, keepdim=True)
        std = torch.where(std > 0, std, torch.ones_like(std))
    else:
        mean, std = train.mean(), train.std()
    return tuple((x - mean) / std for x in (train, *others))


def split_task_data(
    images: ImageData, validation_per_class: int, train_per_class: int | None, per_feature: bool
) -> TaskData:
    """Holds out ``validation_per_class`` training images of each class; keeps all the rest
    for training, or a balanced subset of ``train_per_class`` per class."""
    kept, holdout = balanced_holdout(images.train_labels, validation_per_class, SPLIT_SEED)
    if train_per_class is not None:
        _, chosen = balanced_holdout(images.train_labels[kept], train_per_class, SPLIT_SEED + 1)
        kept = kept[chosen]
    train, validation, test = _standardize(
        images.train_images[kept],
        images.train_images[holdout],
        images.test_images,
        per_feature=per_feature,
    )
    return TaskData(
        train_inputs=train.contiguous(),
        train_targets=images.train_labels[kept],
        validation_inputs=validation.contiguous(),
        validation_targets=images.train_labels[holdout],
        test_inputs=test.contiguous(),
        test_targets=images.test_labels,
        num_classes=images.num_classes,
        extras={"class_names": tuple(images.class_names)},
    )


@lru_cache(maxsize=4)
def _fashion_mnist_split(
    root: str | None, validation_per_class: int, train_per_class: int | None
) -> TaskData:
    images = load_fashion_mnist(root)
    return split_task_data(images, validation_per_class, train_per_class, per_feature=False)


def fashion_mnist_data(
    root: str | None = None, validation_per_class: int = 100, train_per_class: int | None = None
) -> TaskData:
    """Fashion-MNIST with a balanced validation hold-out, standardised with the kept training
    images' mean and std (one scalar each). Cached; a new TaskData sharing the tensors."""
    cached = _fashion_mnist_split(root, validation_per_class, train_per_class)
    return replace(cached, extras=dict(cached.extras))


def classification_task(
    name: str,
    description: str,
    build: Callable[[], nn.Module],
    data_factory: Callable[[], TaskData],
    batch_size: int,
    steps: int,
    eval_every: int,
) -> Task:
    return Task(
        name=name,
        description=description,
        model_factory=lambda generator: build_seeded(generator, build),
        data_factory=lambda seed: data_factory(),
        per_example_loss=cross_entropy_per_example,
        batch_size=batch_size,
        steps=steps,
        eval_every=eval_every,
        primary_metric="test_accuracy",
        maximize=True,
    )


def mlp(sizes: tuple[int, ...]) -> nn.Sequential:
    """Flatten, then Linear–ReLU for each hidden size, and a final Linear (logits)."""
    layers: list[nn.Module] = [nn.Flatten()]
    for fan_in, fan_out in zip(sizes[:-2], sizes[1:-1], strict=True):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


@lru_cache(maxsize=2)
def _digits_split(test_fraction: float, validation_per_class: int) -> TaskData:
    images = load_digits(test_fraction=test_fraction, seed=SPLIT_SEED)
    return split_task_data(images, validation_per_class, None, per_feature=True)


@register_task("digits_mlp", "sklearn 8×8 digits, MLP 64-128-10, batch 64 (quick unit-test task)")
def digits_mlp(hidden: int = 128, batch_size: int = 64, steps: int = 300) -> Task:
    """scikit-learn's digits (1797 8×8 images; 20 % test split, seed 0), each pixel
    standardised with the training images' statistics; validation: 10 images per class held
    out of the training split. Model: flatten, Linear(64, ``hidden``), ReLU, Linear(·, 10);
    cross-entropy; batch 64; 300 steps (≈ 15 epochs). The cheap task of the quick suite."""

    def data_factory() -> TaskData:
        cached = _digits_split(0.2, 10)
        return replace(cached, extras=dict(cached.extras))

    return classification_task(
        "digits_mlp",
        digits_mlp.__doc__ or "",
        lambda: mlp((64, hidden, 10)),
        data_factory,
        batch_size,
        steps,
        eval_every=50,
    )


@register_task("fmnist_mlp", "Fashion-MNIST MLP 784-500-500-500-10 ReLU, batch 100")
def fmnist_mlp(batch_size: int = 100, steps: int = 3000, root: str | None = None) -> Task:
    """Fashion-MNIST, MLP 784-500-500-500-10 with ReLUs (the 3×500 architecture of MARTHE
    Sec. 5 on the full training set), PyTorch default initialisation, cross-entropy, batch 100,
    3000 steps (≈ 5 epochs). Validation: 100 images per class (1000) held out of the 60000
    training images (the MLR-SNet / data-dependent-LR convention)."""
    return classification_task(
        "fmnist_mlp",
        fmnist_mlp.__doc__ or "",
        lambda: mlp((784, 500, 500, 500, 10)),
        lambda: fashion_mnist_data(root),
        batch_size,
        steps,
        eval_every=250,
    )


@register_task(
    "fmnist_mlp_subset",
    "MARTHE Sec. 5: MLP 3×500 on 7000 Fashion-MNIST images, 700 validation, batch 100",
)
def fmnist_mlp_subset(
    num_train: int = 7000,
    num_validation: int = 700,
    batch_size: int = 100,
    steps: int = 490,
    root: str | None = None,
) -> Task:
    """MARTHE Sec. 5 (Donini et al.) with Fashion-MNIST for MNIST: a 784-500-500-500-10 ReLU
    MLP trained on a class-balanced subset of ``num_train`` training images with
    ``num_validation`` balanced validation images held out of the rest, batch 100, 490 steps
    (7 epochs of 7000). Both sizes must be multiples of the 10 classes."""
    for label, size in (("num_train", num_train), ("num_validation", num_validation)):
        if size <= 0 or size % 10:
            raise ValueError(
                f"fmnist_mlp_subset: {label}={size} must be a positive multiple of 10 "
                "(the split is class-balanced over the 10 classes)"
            )
    return classification_task(
        "fmnist_mlp_subset",
        fmnist_mlp_subset.__doc__ or "",
        lambda: mlp((784, 500, 500, 500, 10)),
        lambda: fashion_mnist_data(root, num_validation // 10, num_train // 10),
        batch_size,
        steps,
        eval_every=35,
    )


def l4_mlp(hidden: tuple[int, ...] = (300, 100)) -> nn.Sequential:
    """The MLP of the L4 authors' MNIST notebook (martius-lab/l4-optimizer, L4_MNIST.ipynb):
    hidden ReLU layers with Xavier-uniform weights and zero biases, and an all-zero output
    layer."""
    model = mlp((784, *hidden, 10))
    linears = [m for m in model if isinstance(m, nn.Linear)]
    for layer in linears[:-1]:
        nn.init.xavier_uniform_(layer.weight)
        nn.init.zeros_(layer.bias)
    nn.init.zeros_(linears[-1].weight)
    nn.init.zeros_(linears[-1].bias)
    return model


@register_task("fmnist_mlp2", "L4's MNIST MLP (784-300-100-10) on Fashion-MNIST, batch 64")
def fmnist_mlp2(batch_size: int = 64, steps: int = 5000, root: str | None = None) -> Task:
    """L4 Sec. 3.2 (Rolinek & Martius) with Fashion-MNIST for MNIST: two hidden ReLU layers of
    300 and 100 units (the sizes in the authors' notebook, L4_MNIST.ipynb; the paper's text
    lost them), initialised as there (:func:`l4_mlp`), batch 64, 5000 steps (≈ 5.4 epochs;
    the paper reports 1, 10 and 30 epochs). Inputs are standardised like the other
    Fashion-MNIST tasks (the notebook fed raw [0, 1] pixels)."""
    return classification_task(
        "fmnist_mlp2",
        fmnist_mlp2.__doc__ or "",
        l4_mlp,
        lambda: fashion_mnist_data(root),
        batch_size,
        steps,
        eval_every=500,
    )


def conv_net_2c2d(dropout: float) -> nn.Sequential:
    """conv 5×5×32 (same padding), ReLU, max-pool 2; conv 5×5×64, ReLU, max-pool 2;
    fc 7·7·64 → 1024, ReLU, dropout; fc 1024 → 10."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(7 * 7 * 64, 1024),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(1024, 10),
    )


@register_task("fmnist_2c2d", "Fashion-MNIST ConvNet 2 conv + 2 fc with dropout 0.4, batch 100")
def fmnist_2c2d(
    dropout: float = 0.4, batch_size: int = 100, steps: int = 3000, root: str | None = None
) -> Task:
    """The Fashion-MNIST ConvNet of L4 Sec. 3.5 (TensorFlow's official MNIST model) and of
    DeepOBS ``fmnist_2c2d``: :func:`conv_net_2c2d`. ``dropout`` defaults to 0.4, the official
    model's rate that L4 calls "the default" (L4's Table 4 also raises it); ``dropout=0``
    gives DeepOBS's 2c2d, which has none. PyTorch default initialisation, batch 100, 3000
    steps (≈ 5 epochs)."""
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"fmnist_2c2d: dropout must lie in [0, 1), got {dropout}")
    return classification_task(
        "fmnist_2c2d",
        fmnist_2c2d.__doc__ or "",
        lambda: conv_net_2c2d(dropout),
        lambda: fashion_mnist_data(root),
        batch_size,
        steps,
        eval_every=250,
    )


class BasicBlock(nn.Module):
    """He et al.'s basic residual block: two 3×3 conv–BN layers, ReLU, and a projection
    shortcut (1×1 conv–BN) where the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


def small_resnet(
    widths: tuple[int, ...] = (16, 32, 64),
    num_classes: int = 10,
    blocks_per_stage: int = 1,
    in_channels: int = 1,
) -> nn.Sequential:
    """3×3 conv–BN–ReLU stem, ``blocks_per_stage`` :class:`BasicBlock` s per stage (stride 2
    at the start of each stage from the second on), global average pooling, linear
    classifier. ``blocks_per_stage=5`` with widths 16/32/64 is He et al.'s ResNet-32."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(),
    ]
    for stage, width in enumerate(widths):
        previous = widths[max(stage - 1, 0)]
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            layers.append(BasicBlock(previous if block == 0 else width, width, stride=stride))
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], num_classes)]
    return nn.Sequential(*layers)


@register_task("fmnist_resnet", "Fashion-MNIST small ResNet (BN, 3 stages 16/32/64), batch 128")
def fmnist_resnet(batch_size: int = 128, steps: int = 2000, root: str | None = None) -> Task:
    """A small ResNet with BatchNorm on Fashion-MNIST, the stand-in for L4's CIFAR-10
    ResNet-32 and MLR-SNet's ResNet-18 (:func:`small_resnet`: stages of width 16, 32, 64
    with one basic block each, 28 → 14 → 7 pixels), batch 128, 2000 steps (≈ 4.3 epochs).
    BatchNorm makes the model's train and eval modes differ."""
    return classification_task(
        "fmnist_resnet",
        fmnist_resnet.__doc__ or "",
        small_resnet,
        lambda: fashion_mnist_data(root),
        batch_size,
        steps,
        eval_every=250,
    )
