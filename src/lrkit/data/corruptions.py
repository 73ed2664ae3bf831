"""CIFAR-C style image corruptions (Hendrycks & Dietterich 2019), as used by MLR-SNet's
corrupted-training-data experiment (Sec. 4.4), for any ``[N, C, H, W]`` batch in ``[0, 1]``.

Each corruption has five severities; the constants are those of the authors' CIFAR-10-C
generator (``make_cifar_c.py``), listed for severity 1..5:

============== ================================= =============================================
kind           constant c                        image x -> corrupted image
============== ================================= =============================================
gaussian_noise 0.04, 0.06, 0.08, 0.09, 0.10      x + c·ε, ε ~ N(0, 1) per pixel
shot_noise     500, 250, 100, 75, 50             Poisson(c·x) / c
impulse_noise  0.01, 0.02, 0.03, 0.05, 0.07      a fraction c of pixels set to 0 or 1 (½ each)
speckle_noise  0.06, 0.10, 0.12, 0.16, 0.20      x + x·c·ε, ε ~ N(0, 1)
gaussian_blur  0.4, 0.6, 0.7, 0.8, 1.0           Gaussian filter, σ = c pixels, truncated at 4σ,
                                                 edges extended ("nearest", as skimage)
contrast       0.75, 0.5, 0.4, 0.3, 0.15         (x − m)·c + m, m the mean of each image's channel
============== ================================= =============================================

Every result is clipped to ``[0, 1]``. The random corruptions draw from a generator seeded by
``seed``; the deterministic ones (blur, contrast) ignore it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def _normal(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype)
    return noise.to(images.device)


def _uniform(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    draws = torch.rand(images.shape, generator=generator, dtype=images.dtype)
    return draws.to(images.device)


def _gaussian_noise(images: torch.Tensor, c: float, generator: torch.Generator) -> torch.Tensor:
    return images + c * _normal(images, generator)


def _shot_noise(images: torch.Tensor, c: float, generator: torch.Generator) -> torch.Tensor:
    counts = torch.poisson((images * c).cpu(), generator=generator)
    return counts.to(images.device) / c


def _impulse_noise(images: torch.Tensor, c: float, generator: torch.Generator) -> torch.Tensor:
    hit = _uniform(images, generator) < c
    salt = (_uniform(images, generator) < 0.5).to(images.dtype)
    return torch.where(hit, salt, images)


def _speckle_noise(images: torch.Tensor, c: float, generator: torch.Generator) -> torch.Tensor:
    return images + images * c * _normal(images, generator)


def _gaussian_blur(images: torch.Tensor, c: float, generator: torch.Generator) -> torch.Tensor:
    radius = int(4.0 * c + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(offsets**2) / (2 * c * c))
    kernel = kernel / kernel.sum()
    n, channels, height, width = images.shape
    planes = images.reshape(n * channels, 1, height, width)
    planes = F.pad(planes, (radius, radius, radius, radius), mode="replicate")
    planes = F.conv2d(planes, kernel.view(1, 1, 1, -1))
    planes = F.conv2d(planes, kernel.view(1, 1, -1, 1))
    return planes.reshape(n, channels, height, width)


def _contrast(images: torch.Tensor, c: float, generator: torch.Generator) -> torch.Tensor:
    means = images.mean(dim=(2, 3), keepdim=True)
    return (images - means) * c + means


@dataclass(frozen=True)
class Corruption:
    """One corruption family: ``apply(images, c, generator)`` with the severity constant
    ``c = constants[severity - 1]``. Calling it validates the inputs and clips the result."""

    constants: tuple[float, ...]
    apply: Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]

    def __call__(self, images: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
        if isinstance(severity, bool) or severity not in range(1, len(self.constants) + 1):
            valid = ", ".join(str(s) for s in range(1, len(self.constants) + 1))
            raise ValueError(f"severity must be one of {valid}, got {severity!r}")
        if images.dim() != 4 or not images.dtype.is_floating_point:
            raise ValueError(
                f"images must be a float tensor [N, C, H, W], got dtype {images.dtype} and "
                f"shape {tuple(images.shape)}"
            )
        if images.numel() and (images.min() < 0 or images.max() > 1):
            low, high = float(images.min()), float(images.max())
            raise ValueError(
                f"images must lie in [0, 1] (corrupt before normalising), got [{low}, {high}]"
            )
        generator = torch.Generator().manual_seed(seed)
        corrupted = self.apply(images, self.constants[severity - 1], generator)
        return corrupted.clamp_(0.0, 1.0)


CORRUPTIONS: dict[str, Corruption] = {
    "gaussian_noise": Corruption((0.04, 0.06, 0.08, 0.09, 0.10), _gaussian_noise),
    "shot_noise": Corruption((500.0, 250.0, 100.0, 75.0, 50.0), _shot_noise),
    "impulse_noise": Corruption((0.01, 0.02, 0.03, 0.05, 0.07), _impulse_noise),
    "speckle_noise": Corruption((0.06, 0.10, 0.12, 0.16, 0.20), _speckle_noise),
    "gaussian_blur": Corruption((0.4, 0.6, 0.7, 0.8, 1.0), _gaussian_blur),
    "contrast": Corruption((0.75, 0.5, 0.4, 0.3, 0.15), _contrast),
}


def corrupt_images(images: torch.Tensor, kind: str, severity: int, seed: int) -> torch.Tensor:
    """``images`` (float ``[N, C, H, W]`` in ``[0, 1]``) corrupted by ``kind`` at
    ``severity`` 1..5 (see the module docstring for the constants), clipped to ``[0, 1]``;
    a new tensor of the same shape, dtype and device. Deterministic given ``seed``.
    Raises ``ValueError`` for an unknown kind or severity, listing the valid ones."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}; choose one of {sorted(CORRUPTIONS)}")
    return CORRUPTIONS[kind](images, severity, seed)
