"""Lookahead (Zhang, Lucas, Hinton & Ba, "Lookahead Optimizer: k steps forward, 1 step back",
NeurIPS 2019), a wrapper around any ``torch.optim.Optimizer``.

Algorithm 1 of the paper, with slow weights φ and fast weights θ (the model's parameters):
φ₀ = θ₀; the base optimizer A takes k steps θ ← θ + A(θ); then
φ ← φ + α·(θ − φ) and θ ← φ. The base optimizer's own state (momentum, Adam moments) is kept
across synchronisations (no momentum pull-back). Registered as the baseline ``lookahead``:
Lookahead(SGD(lr, momentum 0.9)), k = 5, α = 0.5, the LR tuned.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from lrkit.methods.registry import MethodSpec, register_method
from lrkit.methods.wrapping import WrapsOptimizer, base_parameters, load_wrapped_state


class Lookahead(WrapsOptimizer, torch.optim.Optimizer):
    """Lookahead around ``base_optimizer`` (composition: the base is wrapped, not subclassed).

    ``param_groups`` *is* the base optimizer's list (read through on every access), so LR
    schedulers and users see and change the base's learning rates. ``step(closure)`` runs
    the base step (the closure is called by the base, once) and, every ``k``-th step,
    ``φ ← φ + α·(θ − φ); θ ← φ`` for every parameter of every group. ``state`` holds only
    the slow weights φ (``"slow_param"``, created at the first step from the parameters
    then, i.e. φ₀ = θ₀); the base keeps its own state. ``state_dict()`` is the base's state
    dict plus a ``"lookahead"`` entry (k, α, the step counter and φ by parameter index);
    ``load_state_dict`` restores all of it, so a resumed run continues bit-identically.

    Args:
        base_optimizer: the optimizer that takes the fast steps (any torch optimizer).
        k: base steps per synchronisation (≥ 1; the paper's default 5).
        alpha: slow-weight step size in (0, 1] (the paper's default 0.5).
    """

    def __init__(self, base_optimizer: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5):
        if not isinstance(base_optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"Lookahead wraps a torch.optim.Optimizer instance, got "
                f"{type(base_optimizer).__name__}; build the base first, e.g. "
                "Lookahead(torch.optim.SGD(model.parameters(), lr=0.1))"
            )
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(
                f"Lookahead k (base steps per synchronisation) must be an int >= 1, got {k!r}"
            )
        if not 0.0 < alpha <= 1.0:
            raise ValueError(
                f"Lookahead alpha (slow-weight step size) must be in (0, 1], got {alpha!r}"
            )
        super().__init__(base_parameters(base_optimizer), {})
        self._adopt(base_optimizer)
        self.k = k
        self.alpha = float(alpha)
        self.lookahead_steps = 0

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def _parameters(self) -> list[torch.Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def _initialise_slow_weights(self) -> None:
        for p in self._parameters():
            if "slow_param" not in self.state[p]:
                self.state[p]["slow_param"] = p.detach().clone()

    @torch.no_grad()
    def _synchronise(self) -> None:
        """φ ← φ + α·(θ − φ) (``lerp``), then θ ← φ, for every parameter."""
        fast = self._parameters()
        slow = [self.state[p]["slow_param"] for p in fast]
        torch._foreach_lerp_(slow, fast, self.alpha)
        torch._foreach_copy_(fast, slow)

    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One base step (returns the closure's loss); every k-th step also synchronises."""
        self._initialise_slow_weights()
        loss = self.base_optimizer.step() if closure is None else self.base_optimizer.step(closure)
        self.lookahead_steps += 1
        if self.lookahead_steps % self.k == 0:
            self._synchronise()
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The base's state dict plus ``"lookahead"``: k, alpha, the step counter and the
        slow weights keyed by the parameter's index (the base state dict's numbering)."""
        state_dict = dict(self.base_optimizer.state_dict())
        slow = {
            index: self.state[p]["slow_param"]
            for index, p in enumerate(self._parameters())
            if "slow_param" in self.state.get(p, {})
        }
        state_dict["lookahead"] = {
            "k": self.k,
            "alpha": self.alpha,
            "steps": self.lookahead_steps,
            "slow_params": slow,
        }
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = load_wrapped_state(self, state_dict, "lookahead", "slow_params", "slow weights")
        parameters = self._parameters()
        self.k = int(saved["k"])
        self.alpha = float(saved["alpha"])
        self.lookahead_steps = int(saved["steps"])
        self.state.clear()
        for index, slow in saved["slow_params"].items():
            p = parameters[index]
            self.state[p]["slow_param"] = slow.detach().to(device=p.device, dtype=p.dtype).clone()

    def __repr__(self) -> str:
        return f"Lookahead(k={self.k}, alpha={self.alpha}, base={self.base_optimizer!r})"


def _lookahead_sgd(params, lr: float, momentum: float, k: int, alpha: float) -> Lookahead:
    base = torch.optim.SGD(params, lr=lr, momentum=momentum, foreach=True)
    return Lookahead(base, k=k, alpha=alpha)


register_method(
    MethodSpec(
        name="lookahead",
        summary="Lookahead (k=5, α=0.5) around SGD momentum 0.9; lr tuned on a log grid",
        kind="baseline",
        make_optimizer=_lookahead_sgd,
        defaults={"lr": 0.01, "momentum": 0.9, "k": 5, "alpha": 0.5},
        tunable=("lr",),
        base="momentum",
        schedules=True,
        paper="Zhang, Lucas, Hinton, Ba. Lookahead Optimizer: k steps forward, 1 step back. "
        "NeurIPS 2019",
    )
)
