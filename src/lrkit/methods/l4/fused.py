"""L4 over torch.optim.Adam or AdamW in compiled kernels: ``L4(base, fused=True)``.

The generic wrapper reads the base's direction by running ``base.step()`` at lr 1 between a
snapshot of the weights and its own step (:mod:`lrkit.methods.probe`): about 9 passes over
the parameters on top of the base's own ~18, because it cannot see inside the base. For
torch's Adam and AdamW the direction is known (Kingma & Ba 2015, Alg. 1; Loshchilov & Hutter
2019 for the decoupled decay), so L4 can do the base's work itself, on the base's own state:

    m ← β1·m + (1 − β1)·g,   u ← β2·u + (1 − β2)·g²,   t ← t + 1
    v = m / (b1·(sqrt(u)/sqrt(b2) + ε)) + λ·w          (b1 = 1 − β1^t, b2 = 1 − β2^t;
                                                         λ = AdamW's weight decay, else 0)
    ĝ·v = Σ (m/b1')·v                                   (ĝ = m̂, b1' from L4's step count)
    w ← w − η·v                                         (η from L4's rule, Sec. 2.2)

This is the same update, state and state dict as the wrapper's probe path (the same numbers
up to rounding: w − η·v here, lerp(w_before, w_before − v, η) there). Two functions compiled
with ``torch.compile`` do it: one updates the moments and returns the per-tensor ĝ·v (one
pass reading g, m, u, w and writing m, u), one applies the step (reading m, u, w, writing w)
— fewer passes than torch's own foreach Adam. The first step compiles them (seconds to a
minute, and a C++ compiler on CPU); a new model, dtype or hyperparameter value compiles
again.

Supported: ``torch.optim.Adam`` with weight_decay 0 or decoupled, and ``torch.optim.AdamW``,
with betas[0] equal to L4's ``grad_beta`` (L4 reads the base's m as its gradient estimate),
amsgrad, capturable and differentiable off. Anything else: ValueError, and ``fused=False``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from lrkit.methods.probe import base_gradient_average

FUSED_BASES = (torch.optim.Adam, torch.optim.AdamW)
_COMPILED: dict[str, Callable[..., Any]] = {}
# Every model shape, dtype and hyperparameter value compiles once more, counted per function
# over the whole process; torch's default limit (8) turns the ninth into an error under
# fullgraph=True. Past this many, the step says so (and fused=False runs without compiling).
RECOMPILE_LIMIT = 64


def check_fused_group(
    base: torch.optim.Optimizer, group: dict[str, Any], index: int, grad_beta: float
) -> None:
    """ValueError unless ``L4(base, fused=True)`` can run this group's update itself."""
    name = type(base).__name__
    if type(base) not in FUSED_BASES:
        raise ValueError(
            f"L4(fused=True) runs torch.optim.Adam or AdamW updates itself; {name} is not one "
            "of them: use fused=False"
        )
    for flag in ("amsgrad", "capturable", "differentiable", "fused"):
        if group.get(flag, False):
            raise ValueError(
                f"param group {index} of {name} has {flag}=True, which L4(fused=True) does not "
                "implement: use fused=False"
            )
    if base_gradient_average(base, group, grad_beta) is None:
        raise ValueError(
            f"param group {index} of {name}: L4(fused=True) reads the base's exp_avg as its "
            f"gradient estimate, which needs betas[0] = grad_beta ({group['betas'][0]!r} vs "
            f"{grad_beta!r}) and, for Adam, weight_decay 0 or decoupled_weight_decay=True: "
            "use fused=False"
        )


def _scalar_dtype() -> torch.dtype:
    """The dtype torch.optim.Adam gives a new step counter (its ``_get_scalar_dtype()``)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _decay(base: torch.optim.Optimizer, group: dict[str, Any]) -> float:
    decoupled = type(base) is torch.optim.AdamW or group.get("decoupled_weight_decay", False)
    return float(group["weight_decay"]) if decoupled else 0.0


def _direction(
    param: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, bias: Tensor, settings: tuple
) -> Tensor:
    """Adam's update at lr 1, bias = (b1, sqrt(b2)) as float64, plus AdamW's λ·w."""
    _, _, eps, decay = settings
    direction = exp_avg / (bias[0] * (exp_avg_sq.sqrt() / bias[1] + eps))
    return direction + decay * param if decay != 0.0 else direction


def _moments_and_dots(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    biases: Tensor,
    hparams: tuple[tuple[float, float, float, float], ...],
) -> Tensor:
    """Updates m and u in place; returns [m_i·v_i] (float64, before L4's 1/b1' weights).
    ``biases[i]`` = (1 − β1^t, sqrt(1 − β2^t)) for tensor i, t counting this step."""
    products = []
    for i, settings in enumerate(hparams):
        beta1, beta2 = settings[0], settings[1]
        exp_avgs[i].lerp_(grads[i], 1.0 - beta1)
        exp_avg_sqs[i].mul_(beta2).addcmul_(grads[i], grads[i], value=1.0 - beta2)
        direction = _direction(params[i], exp_avgs[i], exp_avg_sqs[i], biases[i], settings)
        products.append((exp_avgs[i].double() * direction.double()).sum())
    return torch.stack(products)


def _apply(
    params: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    biases: Tensor,
    hparams: tuple[tuple[float, float, float, float], ...],
    step_size: Tensor,
) -> None:
    """w ← w − η·v with v recomputed from the updated m and u."""
    for i, settings in enumerate(hparams):
        direction = _direction(params[i], exp_avgs[i], exp_avg_sqs[i], biases[i], settings)
        params[i].sub_(step_size.to(params[i].dtype) * direction)


def _compiled(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(function, fullgraph=True, dynamic=False)
    return _COMPILED[name]


def _call(name: str, function: Callable[..., Any], *args: Any) -> Any:
    limit = max(RECOMPILE_LIMIT, torch._dynamo.config.recompile_limit)
    try:
        try:
            return _compiled(name, function)(*args)
        except torch._dynamo.exc.FailOnRecompileLimitHit:  # raised before anything ran
            with torch._dynamo.config.patch(recompile_limit=limit):
                return _compiled(name, function)(*args)
    except torch._dynamo.exc.FailOnRecompileLimitHit as error:
        raise RuntimeError(
            f"L4(fused=True) has compiled its kernel for {limit} different models, dtypes or "
            "hyperparameter values in this process (each compiles once): raise "
            "torch._dynamo.config.recompile_limit, or use fused=False"
        ) from error
    except Exception as error:  # compilation (no C++ compiler, no Triton) or an unsupported op
        raise RuntimeError(
            f"L4(fused=True) could not run its compiled kernel ({type(error).__name__}: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}); "
            "torch.compile needs a C++ compiler on CPU and Triton on CUDA: use fused=False"
        ) from error


class FusedAdamDirection:
    """The base's Adam/AdamW step done by L4 on the base's state (see the module docstring).

    Per step: :meth:`dots` (updates the moments and counts the step, as ``base.step()``
    would), then :meth:`finish` with η, or ``None`` for no move."""

    def __init__(self, base: torch.optim.Optimizer) -> None:
        self.base = base
        self._pending: tuple[Any, ...] | None = None

    def dots(self, params_by_group: Sequence[list[Tensor]], grads_by_group: Sequence[list[Tensor]]):
        """Lazily creates the base's state as torch does, advances its step counts, updates
        m and u, and returns (parameters, [m_i·v_i] as float64). If the kernel cannot run,
        the state is as before and the error says so."""
        base = self.base
        params, grads, exp_avgs, exp_avg_sqs, steps, hparams = [], [], [], [], [], []
        created = []
        for group, group_params, group_grads in zip(
            base.param_groups, params_by_group, grads_by_group, strict=True
        ):
            beta1, beta2 = (float(b) for b in group["betas"])
            settings = (beta1, beta2, float(group["eps"]), _decay(base, group))
            for param, grad in zip(group_params, group_grads, strict=True):
                state = base.state[param]
                if not state:  # as torch.optim.Adam's _init_group (not fused, not capturable)
                    state["step"] = torch.tensor(0.0, dtype=_scalar_dtype())
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(
                        param, memory_format=torch.preserve_format
                    )
                    created.append(param)
                params.append(param)
                grads.append(grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])
                hparams.append(settings)
        if not params:
            self._pending = None
            return params, torch.zeros(0, dtype=torch.float64)
        frozen = tuple(hparams)
        try:
            counts = [float(step) + 1.0 for step in steps]
            biases = torch.tensor(
                [
                    (1.0 - beta1**t, math.sqrt(1.0 - beta2**t))
                    for (beta1, beta2, _, _), t in zip(frozen, counts, strict=True)
                ],
                dtype=torch.float64,
                device=params[0].device,
            )
            products = _call(
                "moments_and_dots",
                _moments_and_dots,
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                biases,
                frozen,
            )
        except Exception:
            for param in created:
                del base.state[param]
            raise
        torch._foreach_add_(steps, 1.0)
        self._pending = (params, exp_avgs, exp_avg_sqs, biases, frozen)
        return params, products

    def finish(self, step_size: Tensor | None) -> None:
        """w ← w − η·v for the parameters of the last :meth:`dots`; ``None``: no move. The
        first step that moves compiles this kernel: if that fails, the weights have not
        moved but the moments and step counts have (the caller records a refused step)."""
        pending, self._pending = self._pending, None
        if pending is None or step_size is None or not pending[0]:
            return
        device = pending[0][0].device
        _call("apply", _apply, *pending, step_size.to(device, torch.float64).reshape(()))
