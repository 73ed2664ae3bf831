"""The L4 rule (Rolinek & Martius 2018, Sec. 2, Eqs. 5-6): the step size as pure functions,
the valid range of each hyperparameter, and :class:`L4Rule`, the state every L4 optimizer
keeps — L_min, η, the envelope of ``max_growth``, the skipped-step counter, the scale of the
moment buffers — with its diagnostics and its ``"l4"`` state-dict entry. The directions are
in :mod:`lrkit.methods.l4.direct` (L4Adam, L4Mom) and :mod:`lrkit.methods.l4.wrapper`
(``L4(base)``)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from lrkit.methods.foreach import scalar_dtype
from lrkit.methods.guards import Interval, resolve_loss
from lrkit.methods.loading import check_own_entry, restore_scalars
from lrkit.methods.scaling import MomentScale

LossClosure = Callable[[], Any]


# --------------------------------------------------------------------------- the L4 rule


def update_l_min(l_min: Tensor | None, loss: Tensor, gamma0: float) -> Tensor:
    """L_min ← γ0·L at the first step (``l_min is None``), else min(L_min, L) (Sec. 2.4)."""
    if l_min is None:
        return gamma0 * loss
    return torch.minimum(l_min, loss)


def forget_l_min(l_min: Tensor, tau: float) -> Tensor:
    """L_min ← (1 + 1/τ)·L_min, applied after the step (paper Eq. 5)."""
    return l_min * (1.0 + 1.0 / tau)


def usable_step(grad_dot_direction: Tensor, step_size: Tensor) -> Tensor:
    """Whether the rule's step can be taken: g·v is a finite positive number (the paper
    requires g·v ≥ 0, Sec. 2.4) and so is η."""
    finite = torch.isfinite(grad_dot_direction) & torch.isfinite(step_size)
    return finite & (grad_dot_direction > 0)


def linearised_step_size(
    loss: Tensor,
    l_min: Tensor,
    grad_dot_direction: Tensor,
    alpha: float,
    gamma: float,
    epsilon: float,
) -> Tensor:
    """η = α·(L − γ·L_min) / (g·v + ε) (paper Eq. 6): a fraction α of the step that brings
    the linearised loss down to γ·L_min."""
    return alpha * (loss - gamma * l_min) / (grad_dot_direction + epsilon)


def l4_step_size(
    loss: Tensor,
    l_min: Tensor,
    grad_dot_direction: Tensor,
    alpha: float,
    gamma: float,
    epsilon: float,
) -> Tensor:
    """:func:`linearised_step_size`, and η = 0 — the safe step — where :func:`usable_step`
    is false."""
    step_size = linearised_step_size(loss, l_min, grad_dot_direction, alpha, gamma, epsilon)
    return torch.where(usable_step(grad_dot_direction, step_size), step_size, 0.0)


def limit_growth(step_size: Tensor, envelope: Tensor | None, max_growth: float | None) -> Tensor:
    """min(η, c·η̄): η at most c times the envelope of recent step sizes — no limit without a
    ``max_growth`` c, or before a step was taken (no envelope, or 0)."""
    if max_growth is None or envelope is None:
        return step_size
    return torch.where(envelope > 0, torch.minimum(step_size, max_growth * envelope), step_size)


def next_envelope(
    step_size: Tensor, envelope: Tensor | None, usable: Tensor, max_growth: float | None
) -> Tensor | None:
    """η̄_t = max(η_t, η̄_{t−1}/c) after a step taken by the rule: follows η up at once and
    down by a factor c per step; a safe step (``usable`` false) leaves it as it was. None
    without ``max_growth``."""
    if max_growth is None:
        return None
    previous = torch.zeros_like(step_size) if envelope is None else envelope
    return torch.where(usable, torch.maximum(step_size, previous / max_growth), previous)


L4_RULES = {
    "alpha": Interval(
        "fraction of the linearised step, paper Eq. 3",
        low=0.0,
        hint="the paper's default is 0.15 and its useful range 0.10-0.30",
    ),
    "gamma": Interval("fraction of L_min believed reachable", 0.0, 1.0),
    "gamma0": Interval("initial L_min as a fraction of L", 0.0, 1.0),
    "tau": Interval("forgetting time scale of L_min, in steps", 0.0, low_open=True),
    "epsilon": Interval("added to g·v", 0.0),
    "max_growth": Interval("largest factor by which η may rise per step", 1.0, optional=True),
}
GLOBAL_HPARAMS = ("gamma", "gamma0", "tau", "epsilon", "max_growth")
EMA_BETA = Interval("gradient EMA decay, paper time scale 10", 0.0, 1.0, high_open=True)
WEIGHT_DECAY = Interval("L2 coefficient inside the loss", 0.0)

# -------------------------------------------------------------------------------- the base


class L4Rule(torch.optim.Optimizer):
    """What every L4 optimizer shares: L_min, η, the envelope, the scale of the moment buffers,
    diagnostics, and the ``"l4"`` entry of the state dict."""

    _direction_kind = ""
    _SCALARS = ("l_min", "l_min_used", "step_size_per_alpha", "envelope", "loss")
    _SCALARS += ("grad_dot_direction", "skipped_steps")

    def __init__(self, params: Any, defaults: dict[str, Any], all_reduce_loss: bool) -> None:
        super().__init__(params, defaults)
        self.all_reduce_loss = bool(all_reduce_loss)
        self._l4: dict[str, Any] = {"step": 0, **dict.fromkeys(self._SCALARS)}
        self._scale = MomentScale()

    def _alphas(self) -> list[float]:
        return [group["alpha"] for group in self.param_groups]

    def _device(self) -> torch.device:
        return next(p for group in self.param_groups for p in group["params"]).device

    def _resolve(self, closure: LossClosure | None, loss: Any) -> tuple[Any, Tensor]:
        device = self._device()
        resolved = resolve_loss(
            closure,
            loss,
            who="L4",
            device=device,
            dtype=scalar_dtype(device),
            average_over_ranks=self.all_reduce_loss,
        )
        return resolved.returned, resolved.value

    def _step_size(
        self, loss: Tensor, grad_dot_direction: Tensor, hparams: dict[str, Any]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """(L_min used, η/α, whether the rule's step is usable): steps 1 and 4."""
        l_min_used = update_l_min(self._l4["l_min"], loss, hparams["gamma0"])
        raw = linearised_step_size(
            loss, l_min_used, grad_dot_direction, 1.0, hparams["gamma"], hparams["epsilon"]
        )
        usable = usable_step(grad_dot_direction, raw)
        per_alpha = torch.where(usable, raw, 0.0)
        per_alpha = limit_growth(per_alpha, self._l4["envelope"], hparams["max_growth"])
        return l_min_used, per_alpha, usable

    def _record(
        self,
        loss: Tensor,
        l_min_used: Tensor,
        per_alpha: Tensor,
        usable: Tensor,
        grad_dot_direction: Tensor,
        hparams: dict[str, Any],
    ) -> None:
        """Step 6 (forgetting, after the update), the envelope and the diagnostics."""
        skipped = self._l4["skipped_steps"]
        if skipped is None:
            skipped = torch.zeros((), dtype=torch.int64, device=loss.device)
        self._l4.update(
            step=self._l4["step"] + 1,
            l_min=forget_l_min(l_min_used, hparams["tau"]),
            l_min_used=l_min_used,
            step_size_per_alpha=per_alpha,
            envelope=next_envelope(per_alpha, self._l4["envelope"], usable, hparams["max_growth"]),
            loss=loss,
            grad_dot_direction=grad_dot_direction,
            skipped_steps=skipped + (~usable).to(torch.int64),
        )

    def diagnostics(self) -> dict[str, float]:
        """What to log (this synchronises with the device): ``effective_lr`` — η of the last
        step for group 0 (``effective_lr/group{i}`` per group when alphas differ); ``l_min``,
        ``l_min_next`` (after forgetting); ``loss`` (rank average, plus the L2 term);
        ``grad_dot_direction``; ``skipped_steps`` (safe steps so far); ``step``. NaN before
        the first step."""
        state = self._l4

        def value(tensor: Tensor | None, alpha: float = 1.0) -> float:
            return math.nan if tensor is None else float(tensor * alpha)

        alphas = self._alphas()
        out = {
            "effective_lr": value(state["step_size_per_alpha"], alphas[0]),
            "l_min": value(state["l_min_used"]),
            "l_min_next": value(state["l_min"]),
            "loss": value(state["loss"]),
            "grad_dot_direction": value(state["grad_dot_direction"]),
            "skipped_steps": 0.0
            if state["skipped_steps"] is None
            else value(state["skipped_steps"]),
            "step": float(state["step"]),
        }
        if len(set(alphas)) > 1:
            for index, alpha in enumerate(alphas):
                out[f"effective_lr/group{index}"] = value(state["step_size_per_alpha"], alpha)
        return out

    def _l4_state_dict(self) -> dict[str, Any]:
        saved = {k: v.clone() if isinstance(v, Tensor) else v for k, v in self._l4.items()}
        return {**saved, "direction": self._direction_kind, "scale": self._scale.state_dict()}

    def _checked_l4_entry(
        self, state_dict: Any, who: str, fields: tuple[str, ...] = (), **saved_by: Any
    ) -> dict[str, Any]:
        """The ``"l4"`` entry, checked (ValueError), with its scale already parsed."""
        entry = check_own_entry(
            state_dict,
            "l4",
            who=who,
            fields=("step", "scale", *fields),
            saved_by={"direction": self._direction_kind, **saved_by},
            scalars=self._SCALARS,
        )
        try:
            scale = MomentScale.from_state_dict(entry["scale"])
        except ValueError as error:
            raise ValueError(f"{who}.load_state_dict: the 'l4' entry's {error}") from None
        return {**entry, "scale": scale}

    def _load_l4_entry(self, entry: dict[str, Any]) -> None:
        device = self._device()
        restored = restore_scalars(entry, self._SCALARS, device, scalar_dtype(device))
        self._l4 = {"step": int(entry["step"]), **restored}
        self._scale = entry["scale"]
