"""MARTHE and RTHO: online learning-rate schedules from a validation objective (Donini et al.,
"Scheduling the learning rate via hypergradients", Sec. 4, Algorithm 1, Appendix A).

One global η over an inner optimizer Φ (SGD, SGD with momentum, Adam; :mod:`.inner`).
The tangent Z ≈ ∂s/∂η of the whole optimizer state s = (w, buffers) is carried along:

    Z_{t+1} = μ_t·A_t·Z_t + B_t,   A_t = ∂Φ_t/∂s at η_t (exact, one Hessian–vector product),
                                   B_t = ∂Φ_t/∂η

and at every step t where a validation batch is given (every ``validation_every`` steps):

1. β ← max(β + κ·δ_{t−1}·δ_{t−2}, 0) when β is adaptive (``kappa`` given);
2. μ ← z^(1/(c+1)) from q = δ_{t−1}/(∇E(w_t)·B_{t−1}) when μ is adaptive (Appendix A);
3. δ_t = ∇E(w_t)·Z_t (optionally clipped), η ← max(η − β·δ_t, 0).

Then the step: Z ← μ·A·Z + B and w ← Φ(w, η). μ = 0 gives HD on the validation objective,
μ = 1 with a fixed β gives RTHO (Franceschi et al. 2017). Defaults and the choices where the
paper and the authors' code (lucfra/Marthe-TF) are silent or differ are in
docs/hypergradient.md; in short:

* A·Z is the Jacobian–vector product at the current η_t (not Aᵀ·Z, not the initial η).
* Adaptive μ uses ∇E(w_t) from step t's validation batch, the gradient that also gives δ_t:
  one validation gradient per step. The authors evaluate ∇E(w_{t+1}) a second time on step
  t's batch right after the update, which costs a second validation backward.
* ∇E·B = 0 (or a non-number q) gives z = 0: the history is forgotten instead of μ = NaN.
* η ≥ 0 always; NaN/inf anywhere (loss, gradients, H·Z, ∇E, δ, η, β) raises
  FloatingPointError before any parameter or state changes. One host synchronisation per
  step (that check).
* Under torch.distributed the training gradient, H·Z, the validation gradient and the
  losses are averaged across ranks, so every rank holds the same η and state.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from lrkit.methods.distributed import average_across_ranks, average_across_ranks_
from lrkit.methods.hypergradient.common import (
    check_equal_across_groups,
    flat_dot,
    raise_if_non_finite,
    scalar_dtype,
)
from lrkit.methods.hypergradient.hvp import HVP_METHODS, gradient_and_hvp, validation_gradient
from lrkit.methods.hypergradient.inner import InnerOptimizer, advance_, tangent_name
from lrkit.methods.hypergradient.rules import (
    adapt_beta,
    adapt_mu,
    clip_hypergradient,
    descend_learning_rate,
)
from lrkit.methods.loading import check_optimizer_state, check_own_entry, without

_GROUP_KEYS = ("momentum", "nesterov", "betas", "eps", "weight_decay")


class MARTHE(torch.optim.Optimizer):
    """MARTHE (adaptive μ and β), RTHO (``mu=1.0``, fixed ``beta``) and HD on the validation
    objective (``mu=0.0``) over an inner SGD, momentum or Adam step; module docstring.

    Args:
        params: parameters or param groups (groups may differ in momentum, nesterov,
            betas, eps and weight_decay; η is one global learning rate).
        lr: η0, the initial learning rate (the same for every group).
        model: the module the parameters belong to (for ``hvp="forward_over_reverse"``,
            which evaluates the closure at named parameters).
        inner: "sgd" (with ``momentum``, ``nesterov``) or "adam" (``betas``, ``eps``).
        momentum: the inner SGD's momentum (0).
        nesterov: Nesterov momentum for the inner SGD (needs momentum > 0).
        betas: the inner Adam's moment decays (0.9, 0.999).
        eps: the inner Adam's ε added to sqrt(v̂) (1e-8).
        weight_decay: L2 coefficient added to the gradient, as in torch.optim.
        mu: the tangent's discount, a float in [0, 1] (fixed) or "adaptive" (μ0 = 0).
        beta: the hyper-learning rate β (fixed), or β0 when ``kappa`` is given.
        kappa: κ, the step size of β's own adaptation; ``None`` keeps β fixed.
        hypergradient_clip: clip δ to [−clip, clip] before the η update (``None``: off).
        validation_every: the validation batch (and the η, μ, β updates) every k steps.
        hvp: "double_backward" or "forward_over_reverse" (:mod:`.hvp`).

    ``step(closure, validation_closure=...)``: ``closure()`` returns the training loss with
    its graph (forward only: no zero_grad, no backward); ``validation_closure()`` the
    validation loss with its graph, required on every ``validation_every``-th step and used
    whenever given. ``step`` returns the training loss and never writes ``.grad``.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 0.0,
        *,
        model: nn.Module | None = None,
        inner: str = "sgd",
        momentum: float = 0.0,
        nesterov: bool = False,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        mu: float | str = "adaptive",
        beta: float = 1e-8,
        kappa: float | None = 1e-8,
        hypergradient_clip: float | None = None,
        validation_every: int = 1,
        hvp: str = "double_backward",
    ) -> None:
        if not lr >= 0.0:
            raise ValueError(f"MARTHE lr (η0) must be >= 0, got {lr!r}")
        if mu != "adaptive" and not (isinstance(mu, float | int) and 0.0 <= mu <= 1.0):
            raise ValueError(f"MARTHE mu must be a float in [0, 1] or 'adaptive', got {mu!r}")
        if not beta >= 0.0:
            raise ValueError(f"MARTHE beta must be >= 0, got {beta!r}")
        if kappa is not None and not kappa >= 0.0:
            raise ValueError(f"MARTHE kappa must be >= 0 or None (fixed beta), got {kappa!r}")
        if hypergradient_clip is not None and not hypergradient_clip > 0.0:
            raise ValueError(f"hypergradient_clip must be > 0 or None, got {hypergradient_clip!r}")
        if isinstance(validation_every, bool) or not (
            isinstance(validation_every, int) and validation_every >= 1
        ):
            raise ValueError(f"validation_every must be an int >= 1, got {validation_every!r}")
        if hvp not in HVP_METHODS:
            raise ValueError(f"hvp must be one of {HVP_METHODS}, got {hvp!r}")
        if hvp == "forward_over_reverse" and model is None:
            raise ValueError("hvp='forward_over_reverse' needs model= (the closure's module)")
        self.inner_kind = inner
        defaults = dict(
            lr=lr, momentum=momentum, nesterov=nesterov, betas=tuple(betas), eps=eps,
            weight_decay=weight_decay,
        )  # fmt: skip
        super().__init__(params, defaults)
        self.mu_rule = "adaptive" if mu == "adaptive" else float(mu)
        self.kappa = None if kappa is None else float(kappa)
        self.hypergradient_clip = hypergradient_clip
        self.validation_every = validation_every
        self.hvp = hvp
        self.model = model
        if model is not None:
            _parameter_names(model, self._params())
        self._scalars = self._fresh_scalars(float(lr), float(beta))

    # -- configuration --------------------------------------------------------------------

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        try:
            self._inner(self.param_groups[-1])
            check_equal_across_groups(self.param_groups, ("lr",), "MARTHE", "η0 is global")
        except ValueError:
            self.param_groups.pop()
            raise

    def _inner(self, group: dict[str, Any]) -> InnerOptimizer:
        return InnerOptimizer(self.inner_kind, **{key: group[key] for key in _GROUP_KEYS})

    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"] if p.requires_grad]

    def _fresh_scalars(self, lr: float, beta: float) -> dict[str, Any]:
        params = self._params()
        dtype = scalar_dtype(params)
        device = params[0].device

        def tensor(value: float) -> Tensor:
            return torch.tensor(value, dtype=dtype, device=device)

        return {
            "step": 0,
            "learning_rate": tensor(lr),
            "mu": tensor(0.0 if self.mu_rule == "adaptive" else self.mu_rule),
            "count": tensor(0.0),
            "beta": tensor(beta),
            "hypergradient": tensor(0.0),
            "previous_hypergradient": tensor(0.0),
            "loss": tensor(float("nan")),
            "validation_loss": tensor(float("nan")),
        }

    @property
    def learning_rate(self) -> Tensor:
        """η, the learning rate the next step starts from (0-dim tensor)."""
        return self._scalars["learning_rate"]

    # -- the step -------------------------------------------------------------------------

    @torch.no_grad()
    def step(  # type: ignore[override]
        self,
        closure: Callable[..., Tensor] | None = None,
        *,
        validation_closure: Callable[..., Tensor] | None = None,
    ) -> Tensor:
        """One step; see the class docstring. Raises ValueError when the validation batch is
        due and missing, FloatingPointError on NaN/inf, both before anything changes."""
        if closure is None:
            raise ValueError(
                "MARTHE needs the training closure in graph form: step(closure) with closure() "
                "returning the loss with its graph (forward only, no backward)"
            )
        step = self._scalars["step"] + 1
        if validation_closure is None and step % self.validation_every == 0:
            raise ValueError(
                f"MARTHE needs a validation batch on step {step} (every "
                f"{self.validation_every} steps): step(closure, validation_closure=...) with "
                "validation_closure() returning the validation loss with its graph; nothing "
                "was changed"
            )
        params = self._params()
        states = self._states()
        propagate = step > 1 and self.mu_rule != 0.0
        tangents = [state["tangent"] for state in states] if propagate else None
        names = None if self.model is None else _parameter_names(self.model, params)
        loss, grads, hvps = gradient_and_hvp(closure, params, tangents, self.hvp, names)
        validation = None
        if validation_closure is not None:
            try:
                validation = validation_gradient(validation_closure, params)
            except (RuntimeError, ValueError, TypeError, IndexError) as error:
                raise ValueError(
                    f"MARTHE could not take the validation gradient ({error}); no parameter "
                    "or optimizer state was changed"
                ) from error
        average_across_ranks_(grads + (hvps or []) + ([] if validation is None else validation[1]))
        updates = self._scalar_updates(states, validation)
        dtype = self._scalars["learning_rate"].dtype
        mean_loss = average_across_ranks(loss).to(dtype)
        rate = updates.get("learning_rate", self._scalars["learning_rate"])
        mu = updates.get("mu", self._scalars["mu"])
        # One host synchronisation: η and μ as numbers for the update, and the finiteness
        # check. A NaN/inf validation gradient makes δ = ∇E·Z non-finite (inf·0 is NaN), so
        # the sums only cover the training gradient and H·Z.
        checked = [rate, mu, mean_loss, *updates.values()]
        checked += [t.sum() for t in grads + (hvps or [])]
        if validation is not None:
            checked.append(average_across_ranks(validation[0]))
        values = torch.stack([c.to(dtype) for c in checked]).tolist()
        if not all(math.isfinite(value) for value in values):
            raise_if_non_finite("MARTHE", mean_loss, grads, hvps, validation, updates)
        self._commit(params, states, grads, hvps, step, values[0], values[1])
        self._scalars.update(updates, step=step, loss=mean_loss)
        if validation is not None:
            self._scalars["validation_loss"] = average_across_ranks(validation[0]).to(dtype)
        return loss

    def _states(self) -> list[dict[str, Tensor]]:
        """Each parameter's state; zeros (not yet stored) before its first step."""
        states = []
        for group in self.param_groups:
            inner = self._inner(group)
            names = ("tangent", *inner.buffers, *(tangent_name(b) for b in inner.buffers))
            for param in group["params"]:
                if param.requires_grad:
                    state = self.state.get(param)
                    states.append(state or {n: torch.zeros_like(param) for n in names})
        return states

    def _scalar_updates(
        self, states: list[dict[str, Tensor]], validation: tuple[Tensor, list[Tensor]] | None
    ) -> dict[str, Tensor]:
        """The new η, μ, c, β and hypergradients (nothing is stored yet)."""
        scalars = self._scalars
        if validation is None:
            return {}
        grads = validation[1]
        dtype = scalars["learning_rate"].dtype
        last, previous = scalars["hypergradient"], scalars["previous_hypergradient"]
        updates: dict[str, Tensor] = {}
        if self.mu_rule == "adaptive" and "direction" in states[0]:
            # ∇E(w_t)·B_{t−1} with B_{t−1} = (−u_{t−1}, 0)
            first_order = -flat_dot(grads, [s["direction"] for s in states], dtype)
            updates["mu"], updates["count"] = adapt_mu(
                scalars["mu"], scalars["count"], last, first_order
            )
        beta = scalars["beta"]
        if self.kappa is not None:
            beta = updates["beta"] = adapt_beta(beta, self.kappa, last, previous)
        delta = flat_dot(grads, [s["tangent"] for s in states], dtype)
        delta = clip_hypergradient(delta, self.hypergradient_clip)
        updates["learning_rate"] = descend_learning_rate(scalars["learning_rate"], delta, beta)
        updates["hypergradient"], updates["previous_hypergradient"] = delta, last
        return updates

    def _commit(
        self,
        params: list[Tensor],
        states: list[dict[str, Tensor]],
        grads: list[Tensor],
        hvps: list[Tensor] | None,
        step: int,
        learning_rate: float,
        mu: float,
    ) -> None:
        keep = self.mu_rule == "adaptive"
        index = 0
        for group in self.param_groups:
            inner = self._inner(group)
            for param in group["params"]:
                if not param.requires_grad:
                    continue
                state = self.state[param] = states[index]
                hvp = None if hvps is None else hvps[index]
                direction = advance_(
                    inner, param, grads[index], hvp, state, step, learning_rate, mu
                )
                if keep:
                    state["direction"] = direction  # u_t, for the next step's adaptive μ
                index += 1

    # -- reporting and state --------------------------------------------------------------

    def diagnostics(self) -> dict[str, float]:
        """η (``effective_lr``), μ, β, the last hypergradient δ, MARTHE's counter c, the
        training and validation losses of the last step and the step count (synchronises)."""
        scalars = self._scalars
        return {
            "effective_lr": float(scalars["learning_rate"]),
            "mu": float(scalars["mu"]),
            "beta": float(scalars["beta"]),
            "hypergradient": float(scalars["hypergradient"]),
            "mu_count": float(scalars["count"]),
            "loss": float(scalars["loss"]),
            "validation_loss": float(scalars["validation_loss"]),
            "step": float(scalars["step"]),
        }

    def state_dict(self) -> dict[str, Any]:
        """torch's state dict (per-parameter buffers and tangents) plus ``"marthe"``: η, μ, c,
        β, the last two hypergradients, the losses and the step count."""
        state_dict = super().state_dict()
        state_dict["marthe"] = {key: _saved(key, value) for key, value in self._scalars.items()}
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Checks all of ``state_dict`` (torch's part, the ``"marthe"`` entry) and loads only
        when every check passed."""
        entry = check_own_entry(
            state_dict,
            "marthe",
            who="MARTHE",
            fields=("step",),
            saved_by={},
            scalars=tuple(key for key in self._scalars if key != "step"),
        )
        check_optimizer_state(self, without(state_dict, "marthe"), who="MARTHE")
        super().load_state_dict(without(state_dict, "marthe"))
        reference = self._scalars["learning_rate"]
        self._scalars = {key: _loaded(value, reference) for key, value in entry.items()}


def _saved(key: str, value: Any) -> Any:
    """A scalar for the state dict; a loss not measured yet (NaN) is saved as None, so that a
    state dict holds only finite numbers."""
    if not isinstance(value, Tensor):
        return value
    if key in _MEASURED and bool(torch.isnan(value)):
        return None
    return value.clone()


def _loaded(value: Any, reference: Tensor) -> Any:
    if value is None:
        return torch.full_like(reference, float("nan"))
    if isinstance(value, Tensor):
        return value.to(device=reference.device).clone()
    return value


_MEASURED = ("loss", "validation_loss")


def _parameter_names(model: nn.Module, params: list[Tensor]) -> list[str]:
    by_id = {id(p): name for name, p in model.named_parameters()}
    missing = [index for index, p in enumerate(params) if id(p) not in by_id]
    if missing:
        raise ValueError(
            f"parameters {missing} of the optimizer are not parameters of the model passed as "
            "model=; build MARTHE over model.parameters()"
        )
    return [by_id[id(p)] for p in params]
