"""Three small methods that prove the method contract before the real ones exist, one per
capability: a validation batch every step, a per-instance table sized from the build
context, and a meta-network with its own meta-optimizer updated every k steps.

Each is one class plus one registry entry (kind "example"); the harness, the CLI, the
conformance suite and the DDP suite run them through the same code path as every method.
Their rules are deliberately simple; what they exercise is the plumbing: the declared
inputs, state in ``state_dict``, identical state on every DDP rank, and refusing NaN/inf
without changing anything.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from lrkit.data.batches import Batch
from lrkit.methods import BuildContext, Capabilities, MethodSpec, register_method
from lrkit.methods.distributed import (
    average_across_ranks,
    average_across_ranks_,
    gather_across_ranks,
)

META_EVERY = 5


def _params(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _check_finite(loss: torch.Tensor, grads: list[torch.Tensor], who: str) -> None:
    values = [loss.detach().float().sum()] + [g.float().sum() for g in grads]
    if not bool(torch.isfinite(torch.stack(values)).all()):
        raise FloatingPointError(f"{who} got a non-finite loss or gradient; nothing changed")


class ValidationScaledSGD(torch.optim.Optimizer):
    """SGD whose LR multiplier s grows ×1.05 while the validation loss falls and shrinks
    ×0.7 when it rises: w ← w − lr·s·g. Needs a validation closure every step."""

    def __init__(self, params: Any, lr: float = 0.01) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        super().__init__(params, {"lr": lr})
        self.scale = 1.0
        self.previous_validation: float | None = None

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor], *, validation_closure=None) -> torch.Tensor:
        if validation_closure is None:
            raise ValueError(
                "ValidationScaledSGD needs a validation batch every step: "
                "step(closure, validation_closure=...)"
            )
        with torch.enable_grad():
            loss = closure()
        params = [p for p in _params(self) if p.grad is not None]
        _check_finite(loss, [p.grad for p in params], "ValidationScaledSGD")
        validation = float(average_across_ranks(validation_closure().detach()))
        if not math.isfinite(validation):
            raise FloatingPointError("ValidationScaledSGD got a non-finite validation loss")
        if self.previous_validation is not None:
            factor = 1.05 if validation < self.previous_validation else 0.7
            self.scale = min(10.0, max(0.1, self.scale * factor))
        self.previous_validation = validation
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"] * self.scale)
        return loss

    def diagnostics(self) -> dict[str, float]:
        return {"effective_lr": self.param_groups[0]["lr"] * self.scale}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["toy"] = {"scale": self.scale, "previous_validation": self.previous_validation}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        own = state_dict["toy"]
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "toy"})
        self.scale, self.previous_validation = own["scale"], own["previous_validation"]


class InstanceTableSGD(torch.optim.Optimizer):
    """SGD on per-example losses weighted by a table of per-instance multipliers (one per
    training instance, sized from the build context): w ← w − lr·∇ mean_i(c_i·ℓ_i); after
    the step c_i ← clip(c_i·exp(−rate·z_i), 0.1, 10) for the batch's instances, z_i the
    standardised loss. Needs per-example losses and instance indices."""

    def __init__(
        self, params: Any, *, context: BuildContext, lr: float = 0.01, rate: float = 0.1
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        super().__init__(params, {"lr": lr})
        self.rate = rate
        self.reduce = context.reduce
        self.instance_multipliers = torch.ones(context.num_train, device=context.device)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor], *, batch: Batch) -> torch.Tensor:
        pairs = [
            (p, group["lr"])
            for group in self.param_groups
            for p in group["params"]
            if p.requires_grad
        ]
        params = [p for p, _ in pairs]
        with torch.enable_grad():
            losses = closure()
            if losses.shape != batch.indices.shape:
                raise ValueError(
                    f"got {tuple(losses.shape)} per-example losses for a batch of "
                    f"{tuple(batch.indices.shape)} instances"
                )
            multipliers = self.instance_multipliers[batch.indices].to(losses.dtype)
            grads = torch.autograd.grad(self.reduce(multipliers * losses), params)
        loss = self.reduce(losses.detach())
        _check_finite(loss, list(grads), "InstanceTableSGD")
        grads = [g.clone() for g in grads]
        average_across_ranks_(grads)
        for (p, lr), g in zip(pairs, grads, strict=True):
            p.add_(g, alpha=-lr)
        indices = gather_across_ranks(batch.indices)
        all_losses = gather_across_ranks(losses.detach().float())
        z = (all_losses - all_losses.mean()) / (all_losses.std() + 1e-8)
        updated = self.instance_multipliers[indices] * torch.exp(-self.rate * z)
        self.instance_multipliers[indices] = updated.clamp(0.1, 10.0)
        return loss

    def diagnostics(self) -> dict[str, float]:
        return {
            "lr": self.param_groups[0]["lr"],
            "instance_multiplier_mean": float(self.instance_multipliers.mean()),
        }

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["toy"] = {"instance_multipliers": self.instance_multipliers.clone()}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        table = state_dict["toy"]["instance_multipliers"]
        if table.shape != self.instance_multipliers.shape:
            raise ValueError(
                f"the saved table holds {table.shape[0]} instances, this one "
                f"{self.instance_multipliers.shape[0]}"
            )
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "toy"})
        self.instance_multipliers = table.to(self.instance_multipliers.device).clone()


class MetaNetSGD(torch.optim.Optimizer):
    """SGD whose LR is lr·2σ(f_φ(log L)), f_φ a 1-8-1 tanh network meta-trained with Adam
    every k-th step on a validation batch: the virtual step w' = w − lr_φ·g is linear in
    lr_φ, so dE(w')/dφ = −(∇E(w')·g)·∂lr_φ/∂φ exactly (no second-order terms)."""

    def __init__(
        self,
        params: Any,
        *,
        context: BuildContext,
        lr: float = 0.01,
        meta_lr: float = 1e-2,
        seed: int = 0,
    ) -> None:
        if not lr > 0:
            raise ValueError(f"lr must be > 0, got {lr!r}")
        super().__init__(params, {"lr": lr})
        generator = torch.Generator().manual_seed(seed)
        self.meta_net = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))
        with torch.no_grad():
            for weight in self.meta_net.parameters():
                weight.copy_(0.1 * torch.randn(weight.shape, generator=generator))
        self.meta_net.to(context.device)
        self.meta_optimizer = torch.optim.Adam(self.meta_net.parameters(), lr=meta_lr)
        self.last_multiplier = 1.0

    def _multiplier(self, loss: torch.Tensor) -> torch.Tensor:
        features = torch.log(loss.detach().float().clamp_min(1e-12)).reshape(1, 1)
        return 2.0 * torch.sigmoid(self.meta_net(features)).reshape(())

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor], *, validation_closure=None) -> torch.Tensor:
        with torch.enable_grad():
            loss = closure()
        params = [p for p in _params(self) if p.grad is not None]
        grads = [p.grad for p in params]
        _check_finite(loss, grads, "MetaNetSGD")
        mean_loss = average_across_ranks(loss.detach())
        lr = self.param_groups[0]["lr"]
        if validation_closure is not None:
            with torch.enable_grad():
                multiplier = self._multiplier(mean_loss)
            virtual = float(multiplier) * lr
            for p, g in zip(params, grads, strict=True):
                p.add_(g, alpha=-virtual)
            try:
                with torch.enable_grad():
                    validation_grads = torch.autograd.grad(validation_closure(), params)
            finally:
                for p, g in zip(params, grads, strict=True):
                    p.add_(g, alpha=virtual)
            validation_grads = [v.clone() for v in validation_grads]
            average_across_ranks_(validation_grads)
            slope = -sum(
                float(torch.dot(v.reshape(-1).double(), g.reshape(-1).double()))
                for v, g in zip(validation_grads, grads, strict=True)
            )
            if math.isfinite(slope):
                self.meta_optimizer.zero_grad()
                with torch.enable_grad():
                    (slope * lr * self._multiplier(mean_loss)).backward()
                self.meta_optimizer.step()
        self.last_multiplier = float(self._multiplier(mean_loss))
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"] * self.last_multiplier)
        return loss

    def diagnostics(self) -> dict[str, float]:
        return {"effective_lr": self.param_groups[0]["lr"] * self.last_multiplier}

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["toy"] = {
            "meta_net": {k: v.clone() for k, v in self.meta_net.state_dict().items()},
            "meta_optimizer": self.meta_optimizer.state_dict(),
            "last_multiplier": self.last_multiplier,
        }
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        own = state_dict["toy"]
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "toy"})
        self.meta_net.load_state_dict(own["meta_net"])
        self.meta_optimizer.load_state_dict(own["meta_optimizer"])
        self.last_multiplier = own["last_multiplier"]


register_method(
    MethodSpec(
        name="toy_validation",
        summary="example: SGD scaled by the validation loss's trend (validation every step)",
        kind="example",
        make_optimizer=ValidationScaledSGD,
        defaults={"lr": 0.01},
        base="sgd",
        capabilities=Capabilities(validation_every=1),
    )
)
register_method(
    MethodSpec(
        name="toy_instance_table",
        summary="example: SGD with a per-instance LR table (per-example losses, indices)",
        kind="example",
        make_optimizer=InstanceTableSGD,
        defaults={"lr": 0.01, "rate": 0.1},
        base="sgd",
        capabilities=Capabilities(
            per_example_losses=True, instance_indices=True, build_context=True
        ),
    )
)
register_method(
    MethodSpec(
        name="toy_meta_net",
        summary="example: SGD with a meta-trained LR network (validation every 5 steps)",
        kind="example",
        make_optimizer=MetaNetSGD,
        defaults={"lr": 0.01, "meta_lr": 1e-2, "seed": 0},
        base="sgd",
        capabilities=Capabilities(validation_every=META_EVERY, build_context=True),
    )
)
