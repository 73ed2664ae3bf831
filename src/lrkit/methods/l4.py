"""L4: loss-based step size adaptation (Rolinek & Martius, "L4: Practical loss-based stepsize
adaptation for deep learning", NeurIPS 2018), as torch optimizers.

Per step, with the mini-batch loss L ≥ 0 (paper Sec. 2.2-2.5, Algorithm 1; defaults as in the
paper and the authors' TensorFlow code, martius-lab/l4-optimizer ``L4/L4.py``):

1. L_min ← γ0·L at the first step, afterwards L_min ← min(L_min, L)          (Sec. 2.4)
2. g = m̂, the bias-corrected EMA of the gradient with time scale 10 (β = 0.9)  (Eq. 7)
3. v = the update direction of the base rule                                  (Eq. 7)
     L4Adam: v = m̂ / (sqrt(û) + ε_a), û the bias-corrected EMA of g² (β2 = 0.999), ε_a = 1e-4
     L4Mom:  v = m̂, so g·v = |m̂|²
     L4(base_optimizer): v = the base optimizer's own update at learning rate 1
4. η = α·(L − γ·L_min) / (g·v + ε), one global η from one dot product over all
   parameters of all groups                                                   (Eq. 6)
5. w ← w − η·v
6. L_min ← (1 + 1/τ)·L_min, after the step                                   (Eq. 5)

Defaults: α = 0.15, γ = 0.9, γ0 = 0.75, τ = 1000, ε = 1e-12.

Choices where the paper, its code and this module differ (docs/l4.md has the reasons):

* Order and the first step. η is computed from the L_min of step 1 before the forgetting
  factor is applied, so step 1 uses exactly γ0·L. The authors' graph code ran the forgetting
  assignment without a control dependency, so η could read an already forgotten L_min
  (fixed by martius-lab/l4-optimizer PR #8); here the order is sequential by construction.
* The numerator L − γ·L_min is not clamped: L_min ≤ L holds whenever η is computed (the
  min is taken first, forgetting only acts on the *next* step's comparison) and γ ≤ 1, so
  the numerator is ≥ (1 − γ)·L ≥ 0. γ is validated to lie in [0, 1].
* Safe step. If g·v ≤ 0 (or is NaN) the linearization predicts no decrease: η = 0 for that
  step (the parameters do not move), the moment buffers *are* updated, L_min is updated and
  forgotten as usual, and ``skipped_steps`` counts it. A tiny positive g·v is regularised by
  ε exactly as in the paper (Sec. 3.4 relies on very large η on plateaus), not skipped.
* Safety checks. A negative loss raises ``ValueError``; a NaN/inf loss or gradient raises
  ``FloatingPointError``; both before any parameter or optimizer state changes. This costs
  one host synchronisation per step (one boolean for the loss and all gradients); nothing
  else in ``step`` synchronises: L_min, η and the counters stay tensors in the optimizer.
* Weight decay of L4Adam/L4Mom is an L2 term *inside the loss L4 sees*:
  L ← L + Σ_groups (wd/2)·|w|² (over the parameters with a gradient), g ← g + wd·w, as the
  paper's CIFAR-10 ResNet has its L2 term in the loss (Sec. 3.3). A decoupled decay scaled
  by η would follow η's jumps over orders of magnitude. The wrapper ``L4(base)`` keeps the
  base's own weight decay in v.
* Per-parameter bias correction (each parameter counts the steps in which it had a
  gradient, as torch.optim.Adam does); the authors' code uses the global step, which is the
  same when every parameter gets a gradient every step.
* Param groups. α may differ per group and scales that group's step: η_group = α_group·η/α.
  γ, γ0, τ and ε define the single global L_min and η and must be equal in all groups
  (``ValueError`` otherwise). betas, adam_epsilon, weight_decay and foreach are per group.
* dtypes. Moment buffers have the parameter's dtype (as in torch.optim.Adam); scalar state
  (L_min, η, g·v, loss) is float32, or float64 when any parameter is float64; dot products
  accumulate in that dtype.
* DDP. With ``torch.distributed`` initialised and ``all_reduce_loss=True`` (default) the loss
  is averaged over ranks before use, so every rank computes the same η (DDP already averages
  the gradients); the safety checks use the averaged loss, so all ranks raise together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import Tensor

from lrkit.methods.registry import MethodSpec, register_method
from lrkit.methods.wrapping import WrapsOptimizer, base_parameters, load_wrapped_state

__all__ = [
    "L4",
    "L4Adam",
    "L4Mom",
    "Directions",
    "adam_directions",
    "apply_directions_",
    "forget_l_min",
    "l4_step_size",
    "momentum_directions",
    "update_l_min",
]

LossClosure = Callable[[], Any]
_FOREACH_DEVICE_TYPES = ("cpu", "cuda", "xpu")
_PROBE_LR = 1.0


# --------------------------------------------------------------------------- the L4 rule


def l4_step_size(
    loss: Tensor,
    l_min: Tensor,
    grad_dot_direction: Tensor,
    alpha: float,
    gamma: float,
    epsilon: float,
) -> Tensor:
    """η = α·(L − γ·L_min) / (g·v + ε) (paper Eq. 6), and η = 0 where g·v ≤ 0 or is NaN.

    The zero is the safe step: a direction that the gradient estimate does not call a
    descent direction is not taken (the paper requires g·v ≥ 0, Sec. 2.4).
    """
    step_size = alpha * (loss - gamma * l_min) / (grad_dot_direction + epsilon)
    return torch.where(grad_dot_direction > 0, step_size, 0.0)


def update_l_min(l_min: Tensor | None, loss: Tensor, gamma0: float) -> Tensor:
    """L_min ← γ0·L at the first step (``l_min is None``), else min(L_min, L) (Sec. 2.4)."""
    if l_min is None:
        return gamma0 * loss
    return torch.minimum(l_min, loss)


def forget_l_min(l_min: Tensor, tau: float) -> Tensor:
    """L_min ← (1 + 1/τ)·L_min, applied after the step (paper Eq. 5)."""
    return l_min * (1.0 + 1.0 / tau)


# --------------------------------------------------------------------- direction kernels


class Directions(NamedTuple):
    """An update direction in factored form: v_i = ``scales[i]``·``tensors[i]``.

    ``grad_dot_direction`` is Σ_i ĝ_i·v_i over these tensors (0-dim, ``acc_dtype``, on the
    tensors' device). ``owned``: the tensors are temporaries the update may overwrite (for
    L4Mom they are the moment buffers themselves and must not be changed).
    """

    tensors: list[Tensor]
    scales: list[float]
    grad_dot_direction: Tensor
    owned: bool


def _flat_dot(a: Tensor, b: Tensor, acc_dtype: torch.dtype) -> Tensor:
    if a.dtype != acc_dtype:
        a, b = a.to(acc_dtype), b.to(acc_dtype)
    return torch.dot(a.reshape(-1), b.reshape(-1))


def _weighted_dot(
    xs: list[Tensor],
    ys: list[Tensor],
    weights: list[float],
    acc_dtype: torch.dtype,
    *,
    nonnegative: bool,
    foreach: bool,
) -> Tensor:
    """Σ_i weights[i]·(x_i·y_i) as a 0-dim ``acc_dtype`` tensor on the tensors' device.

    Multi-tensor kernels (product, then L1 norm) where they pay, i.e. off the CPU and when
    every product is ≥ 0; otherwise one ``torch.dot`` per tensor (on the CPU the L1 norm is
    several times slower than a dot product).
    """
    if not xs:
        return torch.zeros((), dtype=acc_dtype)
    if foreach and nonnegative and xs[0].device.type != "cpu":
        dots = torch._foreach_norm(torch._foreach_mul(xs, ys), 1, dtype=acc_dtype)
    else:
        dots = [_flat_dot(x, y, acc_dtype) for x, y in zip(xs, ys, strict=True)]
    if len(set(weights)) == 1:
        return torch.stack(dots).sum() * weights[0]
    torch._foreach_mul_(dots, weights)
    return torch.stack(dots).sum()


def adam_directions(
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[int],
    *,
    beta1: float,
    beta2: float,
    adam_epsilon: float,
    acc_dtype: torch.dtype,
    foreach: bool,
) -> Directions:
    """L4Adam's direction (paper Eq. 7) and its dot product with ĝ = m̂.

    Updates the moments in place, m ← β1·m + (1 − β1)·g and u ← β2·u + (1 − β2)·g², then with
    b1 = 1 − β1^t, b2 = 1 − β2^t (t = ``steps[i]``, already counting this step):
    v = m̂ / (sqrt(û) + ε_a) = s·m / (sqrt(u) + ε_a·sqrt(b2)),  s = sqrt(b2) / b1,
    and returns tensors m / (sqrt(u) + ε_a·sqrt(b2)) with scales s (one pass fewer than
    forming v). ĝ·v = Σ_i (s_i / b1_i)·(m_i·t_i); every term is ≥ 0. With ``foreach`` all
    tensors must share one device and dtype.
    """
    bias1 = [1.0 - beta1**t for t in steps]
    bias2_sqrt = [math.sqrt(1.0 - beta2**t) for t in steps]
    scales = [b2 / b1 for b1, b2 in zip(bias1, bias2_sqrt, strict=True)]
    weights = [s / b1 for s, b1 in zip(scales, bias1, strict=True)]
    if foreach and grads:
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, 1.0 - beta2)
        denoms = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_add_(denoms, [adam_epsilon * b for b in bias2_sqrt])
        if grads[0].device.type == "cpu":
            # The CPU runs foreach ops tensor by tensor anyway: divide into the buffer.
            tensors = [torch.div(m, d, out=d) for m, d in zip(exp_avgs, denoms, strict=True)]
        else:
            tensors = torch._foreach_div(exp_avgs, denoms)
    else:
        tensors = []
        for grad, exp_avg, exp_avg_sq, b2 in zip(
            grads, exp_avgs, exp_avg_sqs, bias2_sqrt, strict=True
        ):
            exp_avg.lerp_(grad, 1.0 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
            denom = exp_avg_sq.sqrt().add_(adam_epsilon * b2)
            tensors.append(torch.div(exp_avg, denom, out=denom))
    dot = _weighted_dot(exp_avgs, tensors, weights, acc_dtype, nonnegative=True, foreach=foreach)
    return Directions(tensors, scales, dot, True)


def momentum_directions(
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    steps: list[int],
    *,
    beta: float,
    acc_dtype: torch.dtype,
    foreach: bool,
) -> Directions:
    """L4Mom's direction (paper Eq. 7): v = ĝ = m̂ = m / (1 − β^t), so ĝ·v = |m̂|².

    Updates m ← β·m + (1 − β)·g in place and returns the buffers themselves as tensors with
    scales 1/(1 − β^t) (not owned: the update must not overwrite them).
    """
    inv_bias = [1.0 / (1.0 - beta**t) for t in steps]
    if not grads:
        return Directions([], [], torch.zeros((), dtype=acc_dtype), False)
    if foreach:
        torch._foreach_lerp_(exp_avgs, grads, 1.0 - beta)
        norms = torch._foreach_norm(exp_avgs, 2, dtype=acc_dtype)
        if len(set(inv_bias)) == 1:
            dot = torch.stack(norms).square().sum() * (inv_bias[0] * inv_bias[0])
        else:
            torch._foreach_mul_(norms, inv_bias)
            dot = torch.stack(norms).square().sum()
        return Directions(list(exp_avgs), inv_bias, dot, False)
    for grad, exp_avg in zip(grads, exp_avgs, strict=True):
        exp_avg.lerp_(grad, 1.0 - beta)
    weights = [inv * inv for inv in inv_bias]
    dot = _weighted_dot(exp_avgs, exp_avgs, weights, acc_dtype, nonnegative=True, foreach=False)
    return Directions(list(exp_avgs), inv_bias, dot, False)


def apply_directions_(
    params: list[Tensor], directions: Directions, step_size: Tensor, *, foreach: bool
) -> None:
    """w_i ← w_i − η·v_i = w_i − η·s_i·t_i, with η a 0-dim tensor (no host synchronisation)."""
    if not params:
        return
    tensors, scales = directions.tensors, directions.scales
    coefficients: dict[float, Tensor] = {}
    for scale in scales:
        if scale not in coefficients:
            coefficients[scale] = step_size * (-scale)
    per_tensor = [coefficients[scale] for scale in scales]
    if foreach and params[0].device.type != "cpu":
        # Multi-tensor kernels need equal shapes; scale the direction, then add it.
        if len(coefficients) == 1 and directions.owned:
            torch._foreach_mul_(tensors, per_tensor[0])
            scaled = tensors
        elif len(coefficients) == 1:
            scaled = torch._foreach_mul(tensors, per_tensor[0])
        else:
            scaled = torch._foreach_mul(tensors, [-s for s in scales])
            torch._foreach_mul_(scaled, step_size)
        torch._foreach_add_(params, scaled)
    elif foreach:
        torch._foreach_addcmul_(params, tensors, per_tensor)
    else:
        for param, tensor, coefficient in zip(params, tensors, per_tensor, strict=True):
            param.addcmul_(tensor, coefficient)


# ------------------------------------------------------------------------------ helpers


def _buckets(tensors: Sequence[Tensor]) -> list[list[int]]:
    """Indices of ``tensors`` grouped by (device, dtype), in first-seen order."""
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for index, tensor in enumerate(tensors):
        groups.setdefault((tensor.device, tensor.dtype), []).append(index)
    return list(groups.values())


def _sum_scalars(values: Iterable[Tensor], dtype: torch.dtype, device: torch.device) -> Tensor:
    parts = [value.to(device=device, dtype=dtype) for value in values]
    if not parts:
        return torch.zeros((), dtype=dtype, device=device)
    if len(parts) == 1:
        return parts[0]
    return torch.stack(parts).sum()


def _use_foreach(foreach: bool | None, params: Sequence[Tensor]) -> bool:
    if foreach is not None:
        return foreach
    return bool(params) and all(p.device.type in _FOREACH_DEVICE_TYPES for p in params)


def _check_unit_interval(name: str, value: float, *, closed_right: bool) -> None:
    ok = 0.0 <= value <= 1.0 if closed_right else 0.0 <= value < 1.0
    if not ok:
        bound = "[0, 1]" if closed_right else "[0, 1)"
        raise ValueError(f"L4 {name} must be in {bound}, got {value!r}")


def _validate_l4_hparams(
    alpha: float, gamma: float, gamma0: float, tau: float, epsilon: float
) -> None:
    if not alpha >= 0.0:
        raise ValueError(
            f"L4 alpha (fraction of the linearised step, paper Eq. 3) must be >= 0, got "
            f"{alpha!r}; the paper's default is 0.15 and its useful range 0.10-0.30"
        )
    _check_unit_interval("gamma (fraction of L_min believed reachable)", gamma, closed_right=True)
    _check_unit_interval("gamma0 (initial L_min as a fraction of L)", gamma0, closed_right=True)
    if not tau > 0.0:
        raise ValueError(f"L4 tau (forgetting time scale of L_min) must be > 0, got {tau!r}")
    if not epsilon >= 0.0:
        raise ValueError(f"L4 epsilon (added to g·v) must be >= 0, got {epsilon!r}")


def _param_label(group_index: int, index: int, group: dict[str, Any], param: Tensor) -> str:
    names = group.get("param_names")
    if names is not None:
        return f"parameter {names[index]!r} (group {group_index}, shape {tuple(param.shape)})"
    return f"parameter {index} of param group {group_index} (shape {tuple(param.shape)})"


class _Batch(NamedTuple):
    """The parameters with a gradient this step, by group, and their index in the group."""

    params: list[list[Tensor]]
    grads: list[list[Tensor]]
    indices: list[list[int]]


# --------------------------------------------------------------------------- the base


class _L4Base(torch.optim.Optimizer):
    """What all L4 optimizers share: the loss, the safety checks, L_min, η, diagnostics and
    the ``"l4"`` entry of the state dict. Subclasses supply the directions."""

    _direction_kind = ""
    _GLOBAL_HPARAMS = ("gamma", "gamma0", "tau", "epsilon")

    def __init__(self, params: Any, defaults: dict[str, Any], all_reduce_loss: bool) -> None:
        super().__init__(params, defaults)
        self.all_reduce_loss = bool(all_reduce_loss)
        self._l4: dict[str, Any] = self._fresh_l4_state()

    @staticmethod
    def _fresh_l4_state() -> dict[str, Any]:
        return {
            "step": 0,
            "l_min": None,
            "l_min_used": None,
            "step_size_per_alpha": None,
            "loss": None,
            "grad_dot_direction": None,
            "skipped_steps": None,
        }

    # -- hyperparameters ------------------------------------------------------------------

    def _hparams(self) -> dict[str, float]:
        """The global hyperparameters (γ, γ0, τ, ε), equal in every group."""
        first = self.param_groups[0]
        for index, group in enumerate(self.param_groups[1:], start=1):
            for name in self._GLOBAL_HPARAMS:
                if group[name] != first[name]:
                    raise ValueError(
                        f"L4 {name} is global (one L_min and one step size for all param "
                        f"groups) but param group {index} has {name}={group[name]!r} and "
                        f"group 0 has {first[name]!r}; set it once in the constructor (only "
                        "alpha, betas/beta, adam_epsilon, weight_decay and foreach may differ "
                        "between groups)"
                    )
        return {name: first[name] for name in self._GLOBAL_HPARAMS}

    def _alphas(self) -> list[float]:
        return [group["alpha"] for group in self.param_groups]

    def _validate_group(self, group: dict[str, Any]) -> None:
        """Checks the hyperparameters that a subclass adds to a param group."""

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            if any(p.is_complex() for p in group["params"]):
                raise ValueError(
                    "L4 does not support complex parameters (g·v must be real); use "
                    "torch.view_as_real parameters"
                )
            _validate_l4_hparams(
                group["alpha"], group["gamma"], group["gamma0"], group["tau"], group["epsilon"]
            )
            self._validate_group(group)
            self._hparams()
        except ValueError:
            self.param_groups.pop()
            raise

    # -- the loss and the checks ----------------------------------------------------------

    def _scalar_spec(self) -> tuple[torch.device, torch.dtype]:
        reference = self._l4["l_min"]
        if reference is not None:
            return reference.device, reference.dtype
        params = [p for group in self.param_groups for p in group["params"]]
        dtype = torch.float64 if any(p.dtype == torch.float64 for p in params) else torch.float32
        return params[0].device, dtype

    def _resolve_loss(self, closure: LossClosure | None, loss: Any) -> tuple[Any, Tensor]:
        """Returns (what the caller gets back, the loss L4 uses: detached, 0-dim, scalar dtype,
        averaged over ranks under torch.distributed). Calls the closure exactly once."""
        if closure is not None and loss is not None:
            raise ValueError(
                "pass the loss either through the closure or as step(loss=...), not both"
            )
        if closure is None and loss is None:
            raise ValueError(
                "L4 needs the current mini-batch loss: call step(closure) with a closure that "
                "zeroes the gradients, computes the loss, calls backward() and returns the "
                "loss, or call loss.backward() yourself and then step(loss=loss)"
            )
        if closure is not None:
            with torch.enable_grad():
                returned = closure()
            if returned is None:
                raise ValueError("the closure returned None; L4 needs it to return the loss")
        else:
            returned = loss
        device, dtype = self._scalar_spec()
        if isinstance(returned, Tensor):
            if returned.numel() != 1:
                raise ValueError(
                    f"L4 needs a scalar loss, got a tensor of shape {tuple(returned.shape)}; "
                    "reduce it first, e.g. loss.mean()"
                )
            value = returned.detach().reshape(()).to(device=device, dtype=dtype)
        elif isinstance(returned, (int, float)) and not isinstance(returned, bool):
            value = torch.tensor(float(returned), device=device, dtype=dtype)
        else:
            raise TypeError(
                f"L4 needs the loss as a scalar tensor or a float, got {type(returned).__name__}"
            )
        if self.all_reduce_loss and dist.is_available() and dist.is_initialized():
            value = value.clone()
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
            value = value / dist.get_world_size()
        return returned, value

    def _gather(self) -> _Batch:
        params: list[list[Tensor]] = []
        grads: list[list[Tensor]] = []
        indices: list[list[int]] = []
        for group in self.param_groups:
            group_params, group_grads, group_indices = [], [], []
            for index, param in enumerate(group["params"]):
                grad = param.grad
                if grad is None:
                    continue
                if grad.is_sparse:
                    raise RuntimeError(
                        "L4 does not support sparse gradients; use dense embeddings (sparse=False)"
                    )
                group_params.append(param)
                group_grads.append(grad)
                group_indices.append(index)
            params.append(group_params)
            grads.append(group_grads)
            indices.append(group_indices)
        return _Batch(params, grads, indices)

    def _check_inputs(self, loss: Tensor, batch: _Batch) -> None:
        """Raises on a negative or non-finite loss or a non-finite gradient, before anything
        changes. One host synchronisation (a single boolean) when everything is fine."""
        grads = [g for group in batch.grads for g in group]
        # A NaN/inf element makes its tensor's sum (CPU) or 2-norm (one multi-tensor
        # kernel elsewhere), and so the total, non-finite: one read of the gradients. A
        # finite total that overflows only sends us to the exact checks below, which pass.
        total = loss
        for bucket in _buckets(grads):
            tensors = [grads[i] for i in bucket]
            if tensors[0].device.type == "cpu":
                reductions = [t.sum() for t in tensors]
            else:
                reductions = torch._foreach_norm(tensors, 2)
            total = total + torch.stack(reductions).sum().to(loss.device)
        if bool((total * 0 == 0) & (loss >= 0)):
            return
        value = float(loss)
        if not math.isfinite(value):
            raise FloatingPointError(
                f"L4 got a non-finite loss ({value}); no parameter or optimizer state was "
                "changed. Check the model's outputs and the loss (e.g. log of 0, an "
                "overflow in float16/bfloat16), or lower alpha if the loss diverged"
            )
        if value < 0:
            raise ValueError(
                f"L4 needs a non-negative loss (its step is a fraction of the way from L "
                f"down to a fraction of the smallest loss seen, paper Sec. 2), got loss = "
                f"{value}; no parameter or optimizer state was changed. Add a constant "
                "lower bound, e.g. step(loss=loss - lower_bound) with lower_bound <= min loss"
            )
        for group_index, group in enumerate(self.param_groups):
            group_grads = batch.grads[group_index]
            for grad, index in zip(group_grads, batch.indices[group_index], strict=True):
                if not bool(torch.isfinite(grad).all()):
                    label = _param_label(group_index, index, group, group["params"][index])
                    raise FloatingPointError(
                        f"L4 got a non-finite gradient for {label}; no parameter or "
                        "optimizer state was changed. Check the model for overflow or "
                        "invalid operations (torch.autograd.set_detect_anomaly helps)"
                    )

    def _state_steps(self, params: list[Tensor], buffers: Sequence[str]) -> list[int]:
        steps = []
        for param in params:
            state = self.state[param]
            if not state:
                state["step"] = 0
                for name in buffers:
                    state[name] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["step"] += 1
            steps.append(state["step"])
        return steps

    # -- L_min, η and the record ----------------------------------------------------------

    def _step_size(
        self, loss: Tensor, grad_dot_direction: Tensor, hparams: dict[str, float]
    ) -> tuple[Tensor, Tensor]:
        """(L_min used at this step, η/α): steps 1 and 4 of the module docstring."""
        l_min_used = update_l_min(self._l4["l_min"], loss, hparams["gamma0"])
        per_alpha = l4_step_size(
            loss, l_min_used, grad_dot_direction, 1.0, hparams["gamma"], hparams["epsilon"]
        )
        return l_min_used, per_alpha

    def _record(
        self,
        loss: Tensor,
        l_min_used: Tensor,
        per_alpha: Tensor,
        grad_dot_direction: Tensor,
        hparams: dict[str, float],
    ) -> None:
        """Step 6 (forgetting, after the parameter update) and the diagnostics."""
        skipped = self._l4["skipped_steps"]
        if skipped is None:
            skipped = torch.zeros((), dtype=torch.int64, device=loss.device)
        self._l4.update(
            step=self._l4["step"] + 1,
            l_min=forget_l_min(l_min_used, hparams["tau"]),
            l_min_used=l_min_used,
            step_size_per_alpha=per_alpha,
            loss=loss,
            grad_dot_direction=grad_dot_direction,
            skipped_steps=torch.where(grad_dot_direction > 0, skipped, skipped + 1),
        )

    def diagnostics(self) -> dict[str, float]:
        """What to log every step (this synchronises with the device).

        ``effective_lr``: η of the last step for param group 0 (``effective_lr/group{i}`` for
        each group when their alphas differ); ``l_min``: the L_min that step used;
        ``l_min_next``: after forgetting; ``loss``: the loss L4 used (rank average, plus
        the L2 term of weight decay); ``grad_dot_direction``: g·v; ``skipped_steps``: steps
        with g·v ≤ 0 so far; ``step``: steps taken. NaN before the first step.
        """
        state = self._l4

        def value(tensor: Tensor | None) -> float:
            return float("nan") if tensor is None else float(tensor)

        per_alpha = state["step_size_per_alpha"]
        alphas = self._alphas()
        out = {
            "effective_lr": value(None if per_alpha is None else per_alpha * alphas[0]),
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
                out[f"effective_lr/group{index}"] = value(
                    None if per_alpha is None else per_alpha * alpha
                )
        return out

    # -- state dict -----------------------------------------------------------------------

    def _l4_state_dict(self) -> dict[str, Any]:
        saved = {
            key: (value.clone() if isinstance(value, Tensor) else value)
            for key, value in self._l4.items()
        }
        saved["direction"] = self._direction_kind
        return saved

    def _load_l4_state(self, saved: dict[str, Any]) -> None:
        if saved.get("direction") != self._direction_kind:
            raise ValueError(
                f"state dict was saved by an L4 optimizer with direction "
                f"{saved.get('direction')!r}, this one uses {self._direction_kind!r}; load it "
                "into the same class (L4Adam, L4Mom or L4) it was saved from"
            )
        device = next(p for group in self.param_groups for p in group["params"]).device
        restored = self._fresh_l4_state()
        for key in restored:
            value = saved[key]
            restored[key] = value.to(device).clone() if isinstance(value, Tensor) else value
        self._l4 = restored

    def state_dict(self) -> dict[str, Any]:
        """torch's state dict (per-parameter buffers, param groups) plus ``"l4"``: the step
        count, L_min, the last η/α, g·v and loss, and the skipped-step counter."""
        state_dict = super().state_dict()
        state_dict["l4"] = self._l4_state_dict()
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "l4" not in state_dict:
            raise ValueError(
                "state dict has no 'l4' entry: it was not saved by an L4 optimizer's state_dict()"
            )
        rest = {key: value for key, value in state_dict.items() if key != "l4"}
        super().load_state_dict(rest)
        self._load_l4_state(state_dict["l4"])


# --------------------------------------------------------------------- L4Adam and L4Mom


class _L4Direct(_L4Base):
    """L4 with its own direction kernels (L4Adam, L4Mom): step = phase 1 (moments, g·v per
    group and bucket), η from the global g·v, phase 2 (apply η·v)."""

    def _group_directions(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        acc_dtype: torch.dtype,
        foreach: bool,
    ) -> Directions:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: LossClosure | None = None, *, loss: Any = None) -> Any:
        """One L4 step. The loss comes from ``closure`` (called once, with gradients enabled;
        it must zero the gradients, compute the loss, call backward() and return the loss)
        or from ``loss`` (gradients already in ``.grad``). Returns that loss."""
        returned, l4_loss = self._resolve_loss(closure, loss)
        batch = self._gather()
        self._check_inputs(l4_loss, batch)
        hparams = self._hparams()
        device, scalar_dtype = l4_loss.device, l4_loss.dtype
        pending: list[tuple[int, list[Tensor], Directions, bool]] = []
        dots: list[Tensor] = []
        l2_terms: list[Tensor] = []
        for group_index, group in enumerate(self.param_groups):
            params, grads = batch.params[group_index], batch.grads[group_index]
            if not params:
                continue
            foreach = _use_foreach(group["foreach"], params)
            weight_decay = group["weight_decay"]
            if weight_decay != 0.0:
                # L2 inside the loss L4 sees: L + (wd/2)·|w|², g + wd·w.
                norms = torch._foreach_norm(params, 2, dtype=scalar_dtype)
                squared = _sum_scalars([n * n for n in norms], scalar_dtype, device)
                l2_terms.append(squared * (0.5 * weight_decay))
                grads = torch._foreach_add(grads, params, alpha=weight_decay)
            for bucket in _buckets(params):
                bucket_params = [params[i] for i in bucket]
                directions = self._group_directions(
                    group, bucket_params, [grads[i] for i in bucket], scalar_dtype, foreach
                )
                dots.append(directions.grad_dot_direction)
                pending.append((group_index, bucket_params, directions, foreach))
        if l2_terms:
            l4_loss = l4_loss + _sum_scalars(l2_terms, scalar_dtype, device)
        grad_dot_direction = _sum_scalars(dots, scalar_dtype, device)
        l_min_used, per_alpha = self._step_size(l4_loss, grad_dot_direction, hparams)
        alphas = self._alphas()
        for group_index, params, directions, foreach in pending:
            alpha = alphas[group_index]
            scaled = directions._replace(scales=[alpha * s for s in directions.scales])
            apply_directions_(params, scaled, per_alpha.to(params[0].device), foreach=foreach)
        self._record(l4_loss, l_min_used, per_alpha, grad_dot_direction, hparams)
        return returned


def _check_weight_decay(weight_decay: float) -> None:
    if not weight_decay >= 0.0:
        raise ValueError(
            f"L4 weight_decay (L2 coefficient inside the loss) must be >= 0, got {weight_decay!r}"
        )


class L4Adam(_L4Direct):
    """L4 step size over Adam directions (paper Sec. 2.5, "L4Adam").

    v = m̂ / (sqrt(û) + ``adam_epsilon``) with m̂, û Adam's bias-corrected moments
    (``betas``, time scales 10 and 1000), g = m̂, and η = α·(L − γ·L_min)/(g·v + ε);
    see the module docstring for the full rule and the choices made. The paper's Adam
    epsilon 1e-4 sits outside the square root, as in torch.optim.Adam, so L4(Adam(eps=1e-4))
    takes the same steps (up to rounding). ``weight_decay`` is an L2 term in the loss L4
    sees (L + wd/2·|w|², g + wd·w). Per group: alpha (scales that group's η), betas,
    adam_epsilon, weight_decay, foreach; γ, γ0, τ, ε are global.
    ``foreach=None`` uses the multi-tensor kernels on CPU, CUDA and XPU.
    """

    _direction_kind = "adam"

    def __init__(
        self,
        params: Any,
        alpha: float = 0.15,
        gamma: float = 0.9,
        gamma0: float = 0.75,
        tau: float = 1000.0,
        epsilon: float = 1e-12,
        betas: tuple[float, float] = (0.9, 0.999),
        adam_epsilon: float = 1e-4,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        *,
        all_reduce_loss: bool = True,
    ) -> None:
        defaults = {
            "alpha": alpha,
            "gamma": gamma,
            "gamma0": gamma0,
            "tau": tau,
            "epsilon": epsilon,
            "betas": tuple(betas),
            "adam_epsilon": adam_epsilon,
            "weight_decay": weight_decay,
            "foreach": foreach,
        }
        super().__init__(params, defaults, all_reduce_loss)

    def _validate_group(self, group: dict[str, Any]) -> None:
        betas = group["betas"]
        if len(betas) != 2:
            raise ValueError(f"L4Adam betas must be a pair (beta1, beta2), got {betas!r}")
        _check_unit_interval(
            "beta1 (gradient EMA, paper time scale 10)", betas[0], closed_right=False
        )
        _check_unit_interval("beta2 (squared-gradient EMA)", betas[1], closed_right=False)
        if not group["adam_epsilon"] > 0.0:
            raise ValueError(
                f"L4Adam adam_epsilon must be > 0 (paper: 1e-4), got {group['adam_epsilon']!r}"
            )
        _check_weight_decay(group["weight_decay"])

    def _group_directions(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        acc_dtype: torch.dtype,
        foreach: bool,
    ) -> Directions:
        steps = self._state_steps(params, ("exp_avg", "exp_avg_sq"))
        beta1, beta2 = group["betas"]
        return adam_directions(
            grads,
            [self.state[p]["exp_avg"] for p in params],
            [self.state[p]["exp_avg_sq"] for p in params],
            steps,
            beta1=beta1,
            beta2=beta2,
            adam_epsilon=group["adam_epsilon"],
            acc_dtype=acc_dtype,
            foreach=foreach,
        )


class L4Mom(_L4Direct):
    """L4 step size over momentum directions (paper Sec. 2.5, "L4Mom").

    v = g = m̂, the bias-corrected EMA of the gradient with decay ``beta`` (time scale 10),
    so g·v = |m̂|² > 0 unless the gradient estimate is zero, and
    η = α·(L − γ·L_min)/(|m̂|² + ε). Per group: alpha, beta, weight_decay (L2 in the
    loss), foreach; γ, γ0, τ, ε are global. See the module docstring.
    """

    _direction_kind = "momentum"

    def __init__(
        self,
        params: Any,
        alpha: float = 0.15,
        gamma: float = 0.9,
        gamma0: float = 0.75,
        tau: float = 1000.0,
        epsilon: float = 1e-12,
        beta: float = 0.9,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        *,
        all_reduce_loss: bool = True,
    ) -> None:
        defaults = {
            "alpha": alpha,
            "gamma": gamma,
            "gamma0": gamma0,
            "tau": tau,
            "epsilon": epsilon,
            "beta": beta,
            "weight_decay": weight_decay,
            "foreach": foreach,
        }
        super().__init__(params, defaults, all_reduce_loss)

    def _validate_group(self, group: dict[str, Any]) -> None:
        _check_unit_interval(
            "beta (gradient EMA, paper time scale 10)", group["beta"], closed_right=False
        )
        _check_weight_decay(group["weight_decay"])

    def _group_directions(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        acc_dtype: torch.dtype,
        foreach: bool,
    ) -> Directions:
        steps = self._state_steps(params, ("exp_avg",))
        return momentum_directions(
            grads,
            [self.state[p]["exp_avg"] for p in params],
            steps,
            beta=group["beta"],
            acc_dtype=acc_dtype,
            foreach=foreach,
        )


# ------------------------------------------------------------------------------ wrapper

_UNSUPPORTED_BASES: dict[type[torch.optim.Optimizer], str] = {
    torch.optim.LBFGS: "it needs a closure and runs its own line search",
    torch.optim.Rprop: "its step sizes are state initialised from lr, not proportional to it",
    torch.optim.ASGD: "its state (eta, mu) depends on lr non-linearly",
    torch.optim.SparseAdam: "it needs sparse gradients, which L4 does not support",
}


def _check_base_optimizer(base_optimizer: Any) -> None:
    if not isinstance(base_optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"L4 wraps a torch.optim.Optimizer instance, got {type(base_optimizer).__name__}; "
            "build the base first, e.g. L4(torch.optim.Adam(model.parameters()))"
        )
    name = type(base_optimizer).__name__
    if isinstance(base_optimizer, _L4Base):
        raise ValueError(
            f"L4 needs a base optimizer that proposes a direction; {name} already sets its own "
            "step size with L4"
        )
    for unsupported, reason in _UNSUPPORTED_BASES.items():
        if isinstance(base_optimizer, unsupported):
            raise ValueError(
                f"L4 cannot wrap {name}: {reason}. L4 reads the base's direction as its update "
                "at lr 1, which needs an update proportional to lr (SGD, momentum, Adam, "
                "AdamW, Adamax, NAdam, RAdam, RMSprop, Adagrad without lr_decay)"
            )
    for index, group in enumerate(base_optimizer.param_groups):
        if "lr" not in group:
            raise ValueError(
                f"param group {index} of {name} has no 'lr'; L4 sets it to 1 to read the "
                "base's direction"
            )
        if group.get("maximize", False):
            raise ValueError(
                f"param group {index} of {name} has maximize=True; L4 minimises a "
                "non-negative loss (maximise -loss shifted to be >= 0 instead)"
            )
        if isinstance(base_optimizer, torch.optim.Adagrad) and group.get("lr_decay", 0) != 0:
            raise ValueError(
                f"param group {index} of Adagrad has lr_decay={group['lr_decay']!r}: its "
                "update lr/(1 + (t-1)·lr_decay) is not proportional to lr; use lr_decay=0"
            )


def _set_learning_rates(groups: list[dict[str, Any]], value: float) -> list[Any]:
    saved = []
    for group in groups:
        lr = group["lr"]
        if isinstance(lr, Tensor):
            saved.append(lr.clone())
            lr.fill_(value)
        else:
            saved.append(lr)
            group["lr"] = value
    return saved


def _restore_learning_rates(groups: list[dict[str, Any]], saved: list[Any]) -> None:
    for group, lr in zip(groups, saved, strict=True):
        if isinstance(lr, Tensor):
            group["lr"].copy_(lr)
        else:
            group["lr"] = lr


class L4(WrapsOptimizer, _L4Base):
    """L4 over the update direction of any torch optimizer (composition, paper Sec. 2.2).

    ``L4(torch.optim.SGD(params, lr=1.0, momentum=0.9, weight_decay=5e-4))`` uses the base
    optimizer's own update at learning rate 1 as v, including its momentum and weight decay:
    each step snapshots w, runs ``base_optimizer.step()`` with every group's lr temporarily
    set to 1 (restored afterwards, also on error), reads v = w_before − w_after and sets
    w = w_before − η·v. The closure is called once, by L4, never by the base. g is L4's own
    bias-corrected EMA of the raw gradient (decay ``grad_beta``, paper time scale 10), so
    for a base with weight decay g·v includes −(decay)·(g·w) and may be ≤ 0: then the step
    is the documented safe step (η = 0, the base's state has advanced).

    Assumption: the base's update is proportional to its lr and its state does not depend
    on lr (SGD with momentum/nesterov/weight decay; Adam and AdamW, whose decoupled decay
    is lr·wd·w; Adamax, NAdam, RAdam, RMSprop, Adagrad with lr_decay=0). LBFGS, Rprop,
    ASGD, SparseAdam, maximize=True and Adagrad(lr_decay≠0) are rejected. The base's lr
    values are not used (η replaces them), so an LR scheduler on the base has no effect.
    v is a difference of parameters, so components of the base update below the
    parameter's rounding unit (≈ 6e-8·|w| in float32, 4e-3·|w| in bfloat16) are lost;
    L4Adam and L4Mom compute their directions exactly.

    ``param_groups`` *is* the base's list; the L4 hyperparameters are global (one alpha).
    ``state_dict()`` is the base's state dict plus ``"l4"`` (L4's scalars, hyperparameters
    and gradient EMAs by parameter index); ``load_state_dict`` restores both.
    """

    _direction_kind = "wrapper"

    def __init__(
        self,
        base_optimizer: torch.optim.Optimizer,
        alpha: float = 0.15,
        gamma: float = 0.9,
        gamma0: float = 0.75,
        tau: float = 1000.0,
        epsilon: float = 1e-12,
        grad_beta: float = 0.9,
        *,
        all_reduce_loss: bool = True,
    ) -> None:
        _check_base_optimizer(base_optimizer)
        _validate_l4_hparams(alpha, gamma, gamma0, tau, epsilon)
        _check_unit_interval(
            "grad_beta (gradient EMA, paper time scale 10)", grad_beta, closed_right=False
        )
        super().__init__(base_parameters(base_optimizer), {}, all_reduce_loss)
        self._adopt(base_optimizer)
        self.l4_hparams = {
            "alpha": float(alpha),
            "gamma": float(gamma),
            "gamma0": float(gamma0),
            "tau": float(tau),
            "epsilon": float(epsilon),
            "grad_beta": float(grad_beta),
        }

    def _hparams(self) -> dict[str, float]:
        return dict(self.l4_hparams)

    def _alphas(self) -> list[float]:
        return [self.l4_hparams["alpha"]] * len(self.param_groups)

    def _parameters(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    @torch.no_grad()
    def step(self, closure: LossClosure | None = None, *, loss: Any = None) -> Any:
        """One L4 step over the base's direction; the loss comes from ``closure`` (called
        once, with gradients enabled) or ``loss`` (gradients already in ``.grad``)."""
        returned, l4_loss = self._resolve_loss(closure, loss)
        batch = self._gather()
        self._check_inputs(l4_loss, batch)
        hparams = self._hparams()
        params = self._parameters()
        before = [p.detach().clone() for p in params]
        learning_rates = _set_learning_rates(self.param_groups, _PROBE_LR)
        try:
            self.base_optimizer.step()
        except BaseException:
            for param, saved in zip(params, before, strict=True):
                param.copy_(saved)
            raise
        finally:
            _restore_learning_rates(self.param_groups, learning_rates)
        directions = torch._foreach_sub(before, params)
        position = {id(p): index for index, p in enumerate(params)}
        with_grad = [p for group in batch.params for p in group]
        grads = [g for group in batch.grads for g in group]
        steps = self._state_steps(with_grad, ("grad_avg",))
        beta = hparams["grad_beta"]
        dtype = l4_loss.dtype
        dots = []
        for param, grad, count in zip(with_grad, grads, steps, strict=True):
            grad_avg = self.state[param]["grad_avg"]
            grad_avg.lerp_(grad, 1.0 - beta)
            direction = directions[position[id(param)]]
            dots.append(_flat_dot(grad_avg, direction, dtype) / (1.0 - beta**count))
        grad_dot_direction = _sum_scalars(dots, dtype, l4_loss.device)
        l_min_used, per_alpha = self._step_size(l4_loss, grad_dot_direction, hparams)
        negative_steps: dict[torch.device, Tensor] = {}
        for param, saved, direction in zip(params, before, directions, strict=True):
            if param.device not in negative_steps:
                negative_steps[param.device] = (per_alpha * -hparams["alpha"]).to(param.device)
            saved.addcmul_(direction, negative_steps[param.device])
            param.copy_(saved)
        self._record(l4_loss, l_min_used, per_alpha, grad_dot_direction, hparams)
        return returned

    def state_dict(self) -> dict[str, Any]:
        """The base's state dict plus ``"l4"``: L4's scalars (step, L_min, last η/α, g·v,
        loss, skipped steps), its hyperparameters and the gradient EMAs by parameter index."""
        state_dict = dict(self.base_optimizer.state_dict())
        saved = self._l4_state_dict()
        saved["hparams"] = dict(self.l4_hparams)
        saved["grad_avgs"] = {
            index: dict(self.state[p])
            for index, p in enumerate(self._parameters())
            if p in self.state
        }
        state_dict["l4"] = saved
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = load_wrapped_state(self, state_dict, "l4", "grad_avgs", "gradient averages")
        params = self._parameters()
        self._load_l4_state(saved)
        self.l4_hparams = {key: float(value) for key, value in saved["hparams"].items()}
        self.state.clear()
        for index, entry in saved["grad_avgs"].items():
            param = params[index]
            self.state[param] = {
                "step": int(entry["step"]),
                "grad_avg": entry["grad_avg"].to(device=param.device, dtype=param.dtype).clone(),
            }


# ---------------------------------------------------------------------------- registry

_L4_DEFAULTS: dict[str, Any] = {
    "alpha": 0.15,
    "gamma": 0.9,
    "gamma0": 0.75,
    "tau": 1000.0,
    "epsilon": 1e-12,
}
_PAPER = "Rolinek & Martius 2018, Sec. 2"

register_method(
    MethodSpec(
        name="l4adam",
        summary=(
            "L4 over Adam directions: η = α(L − γ·L_min)/(g·v + ε) recomputed every step "
            "from the loss; paper defaults, no LR to tune"
        ),
        kind="lrkit",
        make_optimizer=L4Adam,
        defaults={
            **_L4_DEFAULTS,
            "betas": (0.9, 0.999),
            "adam_epsilon": 1e-4,
            "weight_decay": 0.0,
        },
        tunable=("alpha",),
        base="adam",
        paper=_PAPER,
    )
)
register_method(
    MethodSpec(
        name="l4mom",
        summary=(
            "L4 over momentum directions (v = g = bias-corrected gradient EMA): "
            "η = α(L − γ·L_min)/(|g|² + ε); paper defaults, no LR to tune"
        ),
        kind="lrkit",
        make_optimizer=L4Mom,
        defaults={**_L4_DEFAULTS, "beta": 0.9, "weight_decay": 0.0},
        tunable=("alpha",),
        base="momentum",
        paper=_PAPER,
    )
)
