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
from lrkit.methods.guards import (
    Interval,
    check_loss_and_gradients,
    check_param_groups,
    gradients_by_group,
    resolve_loss,
)
from lrkit.methods.loading import check_optimizer_state, check_own_entry, without

META_EVERY = 5
LEARNING_RATE = Interval("learning rate", 0.0, low_open=True)


class _Example(torch.optim.Optimizer):
    """What the examples share through lrkit's guards: the group hyperparameters checked at
    construction and at every step, the loss resolved and checked with the gradients before
    anything changes, and a ``"toy"`` state-dict entry checked (with the torch part) before
    any of it loads."""

    _RULES: dict[str, Interval] = {"lr": LEARNING_RATE}
    _OWN: tuple[str, ...] = ()

    def _check(self) -> None:
        check_param_groups(self.param_groups, self._RULES, shared=(), who=type(self).__name__)

    def _loss_and_grads(
        self, returned: Any
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """The loss, the parameters with a gradient and their gradients, checked
        (ValueError/TypeError for what is no scalar loss, FloatingPointError for NaN/inf)."""
        device = next(p for g in self.param_groups for p in g["params"]).device
        loss = resolve_loss(
            None,
            returned,
            who=type(self).__name__,
            device=device,
            dtype=torch.float64,
            average_over_ranks=False,
        ).value
        batch = gradients_by_group(self.param_groups, who=type(self).__name__)
        grads = batch.flat_grads()
        check_loss_and_gradients(
            loss,
            grads,
            who=type(self).__name__,
            describe=batch.describe(self.param_groups),
            nonnegative=False,
        )
        return loss, [p for group in batch.params for p in group], grads

    def _own_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load_own(self, own: dict[str, Any]) -> None:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "toy": {"kind": type(self).__name__, **self._own_state()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        who = type(self).__name__
        own = check_own_entry(state_dict, "toy", who=who, fields=self._OWN, saved_by={"kind": who})
        rest = without(state_dict, "toy")
        check_optimizer_state(self, rest, who=who, hyperparameters=self._RULES)
        check_param_groups(rest["param_groups"], self._RULES, shared=(), who=who)
        self._check_own(own)
        super().load_state_dict(rest)
        self._load_own(dict(own))

    def _check_own(self, own: Any) -> None:
        """Raises ValueError where the saved entry does not fit this optimizer."""


class ValidationScaledSGD(_Example):
    """SGD whose LR multiplier s grows ×1.05 while the validation loss falls and shrinks
    ×0.7 when it rises: w ← w − lr·s·g. Needs a validation closure every step."""

    _OWN = ("scale", "previous_validation")

    def __init__(self, params: Any, lr: float = 0.01) -> None:
        super().__init__(params, {"lr": lr})
        self._check()
        self.scale = 1.0
        self.previous_validation: float | None = None

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor], *, validation_closure=None) -> torch.Tensor:
        self._check()
        if validation_closure is None:
            raise ValueError(
                "ValidationScaledSGD needs a validation batch every step: "
                "step(closure, validation_closure=...)"
            )
        with torch.enable_grad():
            loss = closure()
        self._loss_and_grads(loss)
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

    def _own_state(self) -> dict[str, Any]:
        return {"scale": self.scale, "previous_validation": self.previous_validation}

    def _load_own(self, own: dict[str, Any]) -> None:
        self.scale, self.previous_validation = own["scale"], own["previous_validation"]


class InstanceTableSGD(_Example):
    """SGD on per-example losses weighted by a table of per-instance multipliers (one per
    training instance, sized from the build context): w ← w − lr·∇ mean_i(c_i·ℓ_i); after
    the step c_i ← clip(c_i·exp(−rate·z_i), 0.1, 10) for the batch's instances, z_i the
    standardised loss. Needs per-example losses and instance indices."""

    _RULES = {"lr": LEARNING_RATE, "rate": Interval("table update rate", 0.0)}
    _OWN = ("instance_multipliers",)

    def __init__(
        self, params: Any, *, context: BuildContext, lr: float = 0.01, rate: float = 0.1
    ) -> None:
        super().__init__(params, {"lr": lr, "rate": rate})
        self._check()
        self.reduce = context.reduce
        self.instance_multipliers = torch.ones(context.num_train, device=context.device)

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor], *, batch: Batch) -> torch.Tensor:
        self._check()
        pairs = [
            (p, group["lr"])
            for group in self.param_groups
            for p in group["params"]
            if p.requires_grad
        ]
        params = [p for p, _ in pairs]
        with torch.enable_grad():
            losses = closure()
            if not isinstance(losses, torch.Tensor) or losses.shape != batch.indices.shape:
                found = tuple(losses.shape) if isinstance(losses, torch.Tensor) else losses
                raise ValueError(
                    f"InstanceTableSGD got {found!r} as per-example losses for a batch of "
                    f"{tuple(batch.indices.shape)} instances"
                )
            multipliers = self.instance_multipliers[batch.indices].to(losses.dtype)
            grads = torch.autograd.grad(self.reduce(multipliers * losses), params)
        loss = self.reduce(losses.detach())
        check_loss_and_gradients(
            loss,
            grads,
            who="InstanceTableSGD",
            describe=lambda i: f"parameter {i}",
            nonnegative=False,
        )
        grads = [g.clone() for g in grads]
        average_across_ranks_(grads)
        for (p, lr), g in zip(pairs, grads, strict=True):
            p.add_(g, alpha=-lr)
        indices = gather_across_ranks(batch.indices)
        # standardised in float64: a float32 copy of large losses overflows their variance
        all_losses = gather_across_ranks(losses.detach().double())
        z = (all_losses - all_losses.mean()) / (all_losses.std() + 1e-8)
        factor = torch.exp(-self.param_groups[0]["rate"] * z).to(self.instance_multipliers.dtype)
        updated = self.instance_multipliers[indices] * factor
        self.instance_multipliers[indices] = updated.clamp(0.1, 10.0)
        return loss

    def diagnostics(self) -> dict[str, float]:
        return {
            "lr": self.param_groups[0]["lr"],
            "instance_multiplier_mean": float(self.instance_multipliers.mean()),
        }

    def _own_state(self) -> dict[str, Any]:
        return {"instance_multipliers": self.instance_multipliers.clone()}

    def _check_own(self, own: Any) -> None:
        table = own["instance_multipliers"]
        if not isinstance(table, torch.Tensor) or table.shape != self.instance_multipliers.shape:
            found = tuple(table.shape) if isinstance(table, torch.Tensor) else table
            raise ValueError(
                f"InstanceTableSGD.load_state_dict: the saved table has shape {found}, this one "
                f"{tuple(self.instance_multipliers.shape)}; nothing changed"
            )

    def _load_own(self, own: dict[str, Any]) -> None:
        table = own["instance_multipliers"]
        self.instance_multipliers = table.to(self.instance_multipliers.device).clone()


class MetaNetSGD(_Example):
    """SGD whose LR is lr·2σ(f_φ(log L)), f_φ a 1-8-1 tanh network meta-trained with Adam
    every k-th step on a validation batch: the virtual step w' = w − lr_φ·g is linear in
    lr_φ, so dE(w')/dφ = −(∇E(w')·g)·∂lr_φ/∂φ exactly (no second-order terms)."""

    _OWN = ("meta_net", "meta_optimizer", "last_multiplier")

    def __init__(
        self,
        params: Any,
        *,
        context: BuildContext,
        lr: float = 0.01,
        meta_lr: float = 1e-2,
        seed: int = 0,
    ) -> None:
        super().__init__(params, {"lr": lr})
        self._check()
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
        self._check()
        with torch.enable_grad():
            loss = closure()
        value, params, grads = self._loss_and_grads(loss)
        mean_loss = average_across_ranks(value)
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

    def _own_state(self) -> dict[str, Any]:
        return {
            "meta_net": {k: v.clone() for k, v in self.meta_net.state_dict().items()},
            "meta_optimizer": self.meta_optimizer.state_dict(),
            "last_multiplier": self.last_multiplier,
        }

    def _check_own(self, own: Any) -> None:
        saved, current = own["meta_net"], self.meta_net.state_dict()
        if (
            not isinstance(saved, dict)
            or saved.keys() != current.keys()
            or any(
                not isinstance(saved[k], torch.Tensor) or saved[k].shape != v.shape
                for k, v in current.items()
            )
        ):
            raise ValueError("MetaNetSGD.load_state_dict: the saved meta-network does not fit")
        check_optimizer_state(
            self.meta_optimizer, own["meta_optimizer"], who="MetaNetSGD", tensor_shapes=True
        )

    def _load_own(self, own: dict[str, Any]) -> None:
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
