"""Power-of-two scaling that keeps gradient moment buffers inside their dtype's range.

A method that keeps, in the parameter dtype, an EMA of the gradient m ← β1·m + (1 − β1)·g and
of its square u ← β2·u + (1 − β2)·g² overflows u once |g| passes ≈ 1e20 in float32 (≈ 8e3 in
float16); u = inf then stays inf and Adam's direction m/(√u + ε) is 0 for good. Below
|g| ≈ 1e-19 the squares underflow. A rule that should not care about the loss's scale (L4,
Rolinek & Martius 2018, Sec. 2.3: L → a·L leaves the steps unchanged) then does.

:class:`MomentScale` keeps the buffers as m/2^e and u/4^e and feeds them g/2^e. The exponent e
is 0 — the buffers are the plain moments and no extra work is done — while the largest
gradient element |g|max stays inside the dtype's band (float32 and bfloat16: [2^-42, 2^56];
float16: [2^-5, 2^7]; float64: [2^-341, 2^448]). When it leaves the band, e moves so that
|g|max/2^e ≈ 1, and the existing buffers are multiplied by the exact power of two; upper
bounds on the buffers' elements, carried along in Python floats, keep that multiplication
from overflowing them. Scaling by a power of two is exact (away from subnormals), so the
moments are the same numbers as in exact arithmetic, only stored with another exponent: a run
whose loss is multiplied by 2^k takes the same steps bit for bit.

A method reads ``factor`` (2^e) to undo the scaling in its scalar arithmetic, e.g.
g·v = 2^e·(m/2^e)·v, computed in float64 (:mod:`lrkit.methods.foreach`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

MAX_SHIFT_PER_MULTIPLY = 60
"""Buffers are rescaled in factors of at most 2^60 (fewer where the dtype's range is smaller,
see :func:`multiply_by_power_of_two_`): a Python scalar becomes the tensor's dtype before it
multiplies, and 2^-200 is 0 in float32."""


@dataclass(frozen=True)
class Band:
    """log2 limits for |g|max/2^e in one dtype: ``low``, ``high``; and the range of e for which
    2^-e itself is a number of that dtype: ``min_exponent``, ``max_exponent``."""

    low: int
    high: int
    min_exponent: int
    max_exponent: int


def band(dtypes: Iterable[torch.dtype]) -> Band:
    """The band of the narrowest dtype among ``dtypes``. With log2 of the dtype's largest and
    smallest normal numbers, top and bottom: squares of g/2^e stay finite while
    |g|/2^e < 2^(top/2); ``high`` keeps a margin of top/16 below that for the EMAs' bounds;
    ``low`` = bottom/3 leaves elements down to 2^(bottom/2 − low) below |g|max their squares."""
    highs, lows, min_exponents, max_exponents = [], [], [], []
    for dtype in dtypes:
        info = torch.finfo(dtype)
        top, bottom = math.floor(math.log2(info.max)), math.ceil(math.log2(info.tiny))
        highs.append(top // 2 - top // 16)
        lows.append(bottom // 3)
        min_exponents.append(-top)
        max_exponents.append(-bottom)
    return Band(max(lows), min(highs), max(min_exponents), min(max_exponents))


def multiply_by_power_of_two_(tensors: Sequence[Tensor], exponent: int) -> None:
    """tensors ← tensors·2^exponent, exactly, in steps of at most 2^60 — and at most the
    largest power of two with a normal reciprocal in the tensors' dtype (float16: 2^14):
    ``torch._foreach_mul_`` rounds its scalar to the tensors' dtype first (2^22 in float16 is
    inf), where ``Tensor.mul_`` would not."""
    by_dtype: dict[torch.dtype, list[Tensor]] = {}
    for tensor in tensors:
        by_dtype.setdefault(tensor.dtype, []).append(tensor)
    for dtype, group in by_dtype.items():
        info = torch.finfo(dtype)
        largest = min(MAX_SHIFT_PER_MULTIPLY, -math.ceil(math.log2(info.tiny)))
        remaining = exponent
        while remaining:
            step = max(-largest, min(largest, remaining))
            torch._foreach_mul_(group, 2.0**step)
            remaining -= step


@dataclass
class MomentScale:
    """The exponent e of a method's moment buffers (m/2^e, u/4^e) and upper bounds on their
    elements in those units: ``first_bound`` ≥ max |m/2^e|, ``second_bound`` ≥ max u/4^e.

    Per step, before the buffers see the gradients: ``shift = scale.update(...)``, then
    ``scale.rescale_(states, shift, ...)`` and feed the buffers ``scale.scaled(grads)``.
    """

    exponent: int = 0
    first_bound: float = 0.0
    second_bound: float = 0.0

    @property
    def factor(self) -> float:
        """2^e: what a scaled first moment is multiplied by to give the moment."""
        return 2.0**self.exponent

    @property
    def inverse_factor(self) -> float:
        """2^-e: what the gradients are multiplied by before the buffers see them."""
        return 2.0**-self.exponent

    def update(
        self,
        max_abs_gradient: float,
        dtypes: Iterable[torch.dtype],
        first_betas: Sequence[float],
        second_betas: Sequence[float] = (),
    ) -> int:
        """Moves e for this step's gradients (largest element ``max_abs_gradient``, a finite
        number) and returns the shift (new e − old e); then advances the bounds through one EMA
        step with each of the given decays (one per param group; ``second_betas`` empty for a
        method without a second moment). No dtypes (no buffers to scale): no change."""
        dtypes = set(dtypes)
        if not dtypes:
            return 0
        limits = band(dtypes)
        scaled = max_abs_gradient * 2.0**-self.exponent
        shift = 0
        if scaled > 0 and not 2.0**limits.low <= scaled <= 2.0**limits.high:
            shift = self._allowed_shift(round(math.log2(scaled)), limits)
            shift = max(limits.min_exponent, min(limits.max_exponent, self.exponent + shift))
            shift -= self.exponent
        self.exponent += shift
        self.first_bound *= 2.0**-shift
        self.second_bound *= 4.0**-shift
        scaled = max_abs_gradient * 2.0**-self.exponent
        self.first_bound = max(
            (beta * self.first_bound + (1.0 - beta) * scaled for beta in first_betas),
            default=self.first_bound,
        )
        self.second_bound = max(
            (beta * self.second_bound + (1.0 - beta) * scaled * scaled for beta in second_betas),
            default=self.second_bound,
        )
        return shift

    def rescale_(
        self,
        states: Iterable[dict[str, Any]],
        shift: int,
        first_moments: Sequence[str],
        second_moments: Sequence[str] = (),
    ) -> None:
        """Multiplies the named buffers of every per-parameter state by 2^-shift (first
        moments) or 4^-shift (second moments), after :meth:`update` returned ``shift``."""
        if not shift:
            return
        states = list(states)
        for names, power in ((first_moments, 1), (second_moments, 2)):
            buffers = [state[name] for state in states for name in names if name in state]
            multiply_by_power_of_two_(buffers, -power * shift)

    def scaled(self, grads: list[Tensor], *, owned: bool) -> list[Tensor]:
        """g·2^-e for the buffers: ``grads`` itself while e = 0; in place when ``owned`` (the
        caller's temporaries), else new tensors."""
        if self.exponent == 0:
            return grads
        if owned:
            torch._foreach_mul_(grads, self.inverse_factor)
            return grads
        return torch._foreach_mul(grads, self.inverse_factor)

    def _allowed_shift(self, wanted: int, limits: Band) -> int:
        """``wanted``, or the smallest shift that keeps the buffers' bounds below 2^high once
        the buffers are multiplied by 2^-shift (a negative shift enlarges them)."""
        floor = -math.inf
        if self.first_bound > 0:
            floor = math.log2(self.first_bound) - limits.high
        if self.second_bound > 0:
            floor = max(floor, 0.5 * math.log2(self.second_bound) - limits.high)
        return max(wanted, math.ceil(floor)) if floor > -math.inf else wanted

    def state_dict(self) -> dict[str, float | int]:
        return {
            "exponent": self.exponent,
            "first_bound": self.first_bound,
            "second_bound": self.second_bound,
        }

    @classmethod
    def from_state_dict(cls, saved: Any) -> MomentScale:
        """The scale :meth:`state_dict` saved; ValueError for anything else."""
        try:
            exponent = saved["exponent"]
            bounds = float(saved["first_bound"]), float(saved["second_bound"])
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"not a saved MomentScale: {saved!r}") from error
        if isinstance(exponent, bool) or not isinstance(exponent, int) or min(bounds) < 0:
            raise ValueError(f"not a saved MomentScale: {saved!r}")
        return cls(exponent, *bounds)
