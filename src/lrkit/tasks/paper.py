"""Paper-scale tasks: the papers' own datasets, which lrkit loads from a directory the user
gives (``--data-dir``, ``$LRKIT_DATA``) and never downloads. They run where the data exist (a
GPU machine, ``--scale paper``); here they are smoke-tested on tiny files in the real formats.

* ``mnist_mlp2`` — L4's MNIST MLP (784-300-100-10, batch 64) on MNIST itself.
* ``cifar10_resnet32`` — L4 Sec. 3.3's CIFAR-10 ResNet-32 (He et al.: 3 stages of 5 basic
  blocks, widths 16/32/64, BatchNorm), batch 128, 64,000 steps (≈ 164 epochs, TensorFlow's
  official schedule length).
* ``cifar10_vgg11bn`` and ``cifar100_resnet18`` — MARTHE Sec. 6's VGG-11 with BatchNorm on
  CIFAR-10 and ResNet-18 on CIFAR-100 (CIFAR variants: 3×3 stem, no max-pool), batch 128,
  200 epochs (the paper's epoch count and batch size are not legible in our copy; its
  staircase decays "every 60 epochs", which fits a 200-epoch run).

Inputs are standardised per pixel and channel; the official models' random crops and flips
are not applied (the harness has no on-the-fly augmentation).
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

from torch import nn

from lrkit.data import load_cifar10, load_cifar100, load_mnist
from lrkit.tasks import register_task
from lrkit.tasks.base import Task, TaskData
from lrkit.tasks.vision import classification_task, l4_mlp, small_resnet, split_task_data


@lru_cache(maxsize=2)
def _mnist_split(root: str | None, validation_per_class: int) -> TaskData:
    return split_task_data(load_mnist(root), validation_per_class, None, per_feature=False)


@lru_cache(maxsize=2)
def _cifar10_split(root: str | None, validation_per_class: int) -> TaskData:
    return split_task_data(load_cifar10(root), validation_per_class, None, per_feature=True)


@lru_cache(maxsize=2)
def _cifar100_split(root: str | None, validation_per_class: int) -> TaskData:
    return split_task_data(load_cifar100(root), validation_per_class, None, per_feature=True)


VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")
CIFAR_EPOCH_STEPS = 49000 // 128  # 50,000 training images, 1000 held out for validation


def vgg11_bn(num_classes: int = 10) -> nn.Sequential:
    """VGG-11 with BatchNorm for 32×32 inputs: 3×3 conv–BN–ReLU layers of widths 64, 128,
    256, 256, 512, 512, 512, 512 with five 2×2 max-pools, then a linear classifier."""
    layers: list[nn.Module] = []
    channels = 3
    for item in VGG11:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        layers += [
            nn.Conv2d(channels, int(item), 3, padding=1, bias=False),
            nn.BatchNorm2d(int(item)),
            nn.ReLU(),
        ]
        channels = int(item)
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512, num_classes))


@register_task("mnist_mlp2", "L4's MNIST MLP (784-300-100-10) on MNIST, batch 64 (paper scale)")
def mnist_mlp2(batch_size: int = 64, steps: int = 28000, root: str | None = None) -> Task:
    """L4 Sec. 3.2 on MNIST: :func:`lrkit.tasks.vision.l4_mlp`, batch 64, 28,000 steps
    (≈ 30 epochs), 100 validation images per class held out of the 60,000."""

    def data() -> TaskData:
        cached = _mnist_split(root, 100)
        return replace(cached, extras=dict(cached.extras))

    return classification_task(
        "mnist_mlp2", mnist_mlp2.__doc__ or "", l4_mlp, data, batch_size, steps, eval_every=921
    )


@register_task("cifar10_resnet32", "CIFAR-10 ResNet-32 (BN), batch 128 (paper scale)")
def cifar10_resnet32(batch_size: int = 128, steps: int = 64000, root: str | None = None) -> Task:
    """L4 Sec. 3.3: ResNet-32 (:func:`lrkit.tasks.vision.small_resnet` with 5 blocks per
    stage, 3 input channels) on CIFAR-10, batch 128; 100 validation images per class held
    out of the 50,000 training images."""

    def data() -> TaskData:
        cached = _cifar10_split(root, 100)
        return replace(cached, extras=dict(cached.extras))

    return classification_task(
        "cifar10_resnet32",
        cifar10_resnet32.__doc__ or "",
        lambda: small_resnet(blocks_per_stage=5, in_channels=3),
        data,
        batch_size,
        steps,
        eval_every=2000,
    )


@register_task("cifar10_vgg11bn", "CIFAR-10 VGG-11 with BatchNorm, batch 128 (paper scale)")
def cifar10_vgg11bn(
    batch_size: int = 128, steps: int = 200 * CIFAR_EPOCH_STEPS, root: str | None = None
) -> Task:
    """MARTHE Sec. 6: :func:`vgg11_bn` on CIFAR-10, batch 128, 200 epochs; 100 validation
    images per class held out of the training images."""

    def data() -> TaskData:
        cached = _cifar10_split(root, 100)
        return replace(cached, extras=dict(cached.extras))

    return classification_task(
        "cifar10_vgg11bn",
        cifar10_vgg11bn.__doc__ or "",
        vgg11_bn,
        data,
        batch_size,
        steps,
        eval_every=5 * CIFAR_EPOCH_STEPS,
    )


@register_task("cifar100_resnet18", "CIFAR-100 ResNet-18, batch 128 (paper scale)")
def cifar100_resnet18(
    batch_size: int = 128, steps: int = 200 * CIFAR_EPOCH_STEPS, root: str | None = None
) -> Task:
    """MARTHE Sec. 6: ResNet-18 (:func:`lrkit.tasks.vision.small_resnet`, widths
    64/128/256/512, 2 blocks per stage) on CIFAR-100, batch 128, 200 epochs; 10 validation
    images per class held out of the training images."""

    def data() -> TaskData:
        cached = _cifar100_split(root, 10)
        return replace(cached, extras=dict(cached.extras))

    return classification_task(
        "cifar100_resnet18",
        cifar100_resnet18.__doc__ or "",
        lambda: small_resnet((64, 128, 256, 512), 100, blocks_per_stage=2, in_channels=3),
        data,
        batch_size,
        steps,
        eval_every=5 * CIFAR_EPOCH_STEPS,
    )
