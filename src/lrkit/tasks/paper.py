"""Paper-scale tasks: the papers' own datasets, which lrkit loads from a directory the user
gives (``--data-dir``, ``$LRKIT_DATA``) and never downloads. They run where the data exist (a
GPU machine, ``--scale paper``); here they are smoke-tested on tiny files in the real formats.

* ``mnist_mlp2`` — L4's MNIST MLP (784-300-100-10, batch 64) on MNIST itself.
* ``cifar10_resnet32`` — L4 Sec. 3.3's CIFAR-10 ResNet-32 (He et al.: 3 stages of 5 basic
  blocks, widths 16/32/64, BatchNorm), batch 128, 64,000 steps (≈ 164 epochs, TensorFlow's
  official schedule length). Inputs are standardised per pixel and channel; the official model's
  random crops and flips are not applied (the harness has no on-the-fly augmentation).
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

from lrkit.data import load_cifar10, load_mnist
from lrkit.tasks import register_task
from lrkit.tasks.base import Task, TaskData
from lrkit.tasks.vision import classification_task, l4_mlp, small_resnet, split_task_data


@lru_cache(maxsize=2)
def _mnist_split(root: str | None, validation_per_class: int) -> TaskData:
    return split_task_data(load_mnist(root), validation_per_class, None, per_feature=False)


@lru_cache(maxsize=2)
def _cifar10_split(root: str | None, validation_per_class: int) -> TaskData:
    return split_task_data(load_cifar10(root), validation_per_class, None, per_feature=True)


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
