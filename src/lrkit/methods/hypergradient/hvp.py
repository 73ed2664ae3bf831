"""Gradients and exact Hessian–vector products from the contract's graph closures
(:mod:`lrkit.methods.contract`): ``closure()`` returns the loss with its graph and
``closure(parameters)`` evaluates it at a mapping name → tensor.

Two ways to get ∇L(w) and H·z together, both exact:

* ``"double_backward"`` — one forward, ∇L by backward with ``create_graph=True``, then
  H·z = ∇(∇L·z) by a second backward through the first (Pearlmutter 1994, reverse over
  reverse);
* ``"forward_over_reverse"`` — ``torch.func.jvp`` of ``torch.func.grad``: one pass that
  pushes the tangent z through the gradient computation and returns (∇L, H·z).

Which is faster depends on the model and the device; MARTHE's default is double backward,
the faster on the benchmark tasks (benchmarks/results/hypergradient/cost/README.md).
``"forward_over_reverse"`` evaluates the loss through ``closure(parameters)``, which runs on
copies of the model's buffers, so BatchNorm running statistics are not updated by the step;
``"double_backward"`` runs the model's own forward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

HvpMethod = Literal["double_backward", "forward_over_reverse"]
HVP_METHODS: tuple[str, ...] = ("double_backward", "forward_over_reverse")


def _scalar_with_graph(value: object, who: str, form: str) -> Tensor:
    if not isinstance(value, Tensor):
        raise TypeError(f"{who} must return the loss as a tensor, got {type(value).__name__}")
    if value.numel() != 1:
        raise ValueError(
            f"{who} must return a scalar loss, got a tensor of shape {tuple(value.shape)}"
            + (" (an empty batch?)" if value.numel() == 0 else "; reduce it, e.g. loss.mean()")
        )
    if not value.requires_grad:
        raise ValueError(
            f"{who} returned a loss without an autograd graph; it must be of the {form} form: "
            "forward pass only, returning the loss with its graph (no backward, no detach)"
        )
    return value.reshape(())


def _grads(
    outputs: Sequence[Tensor],
    params: Sequence[Tensor],
    grad_outputs: Sequence[Tensor] | None = None,
    create_graph: bool = False,
) -> list[Tensor]:
    """Gradients with zeros for parameters (or outputs) that are not connected."""
    pairs = [(o, g) for o, g in zip(outputs, grad_outputs or outputs, strict=True)]
    connected = [(o, g) for o, g in pairs if o.requires_grad]
    if not connected:
        return [torch.zeros_like(p) for p in params]
    grads = torch.autograd.grad(
        [o for o, _ in connected],
        list(params),
        grad_outputs=None if grad_outputs is None else [g for _, g in connected],
        create_graph=create_graph,
        allow_unused=True,
        materialize_grads=True,
    )
    return list(grads)


def gradient_and_hvp(
    closure: Callable[..., Tensor],
    params: Sequence[Tensor],
    tangents: Sequence[Tensor] | None,
    method: HvpMethod = "double_backward",
    names: Sequence[str] | None = None,
) -> tuple[Tensor, list[Tensor], list[Tensor] | None]:
    """(loss, ∇L, H·tangents) of the graph ``closure`` at ``params``, each detached; the
    closure is called once. Without ``tangents`` only the gradient is taken (one backward).
    ``names`` (the parameters' names in the model) are needed by ``forward_over_reverse``."""
    who = "the training closure"
    if tangents is not None and method == "forward_over_reverse":
        if names is None:
            raise ValueError("forward_over_reverse needs the parameters' names (pass model=)")
        primals = {name: p.detach() for name, p in zip(names, params, strict=True)}
        directions = dict(zip(names, tangents, strict=True))

        def loss_and_value(point: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
            loss = _scalar_with_graph(closure(point), who, "graph")
            return loss, loss.detach()

        grads, hvps, loss = torch.func.jvp(
            torch.func.grad(loss_and_value, has_aux=True), (primals,), (directions,), has_aux=True
        )
        return loss, [grads[n] for n in names], [hvps[n] for n in names]
    if method not in HVP_METHODS:
        raise ValueError(f"hvp must be one of {HVP_METHODS}, got {method!r}")
    with torch.enable_grad():
        loss = _scalar_with_graph(closure(), who, "graph")
        grads = _grads([loss], params, create_graph=tangents is not None)
        hvps = None if tangents is None else _grads(grads, params, list(tangents))
    return loss.detach(), [g.detach() for g in grads], hvps


def validation_gradient(
    validation_closure: Callable[..., Tensor], params: Sequence[Tensor]
) -> tuple[Tensor, list[Tensor]]:
    """(E, ∇E) of the validation closure at the model's parameters, detached."""
    with torch.enable_grad():
        value = _scalar_with_graph(validation_closure(), "the validation closure", "validation")
        grads = _grads([value], params)
    return value.detach(), grads
