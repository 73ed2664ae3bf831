"""Checks an lrkit optimizer runs before it changes anything, so that a refused step leaves
the parameters and the optimizer's state exactly as they were.

* :func:`resolve_loss` — the loss of this step, from the closure (called exactly once, with
  gradients enabled) or from ``step(loss=...)``; detached, 0-dim, in the scalar dtype, and
  averaged over ranks under ``torch.distributed`` (DDP averages the gradients of the
  backward closure, not the loss a method reads).
* :func:`gradients_by_group` — the parameters that have a gradient, dense and real;
* :func:`check_loss_and_gradients` — the loss is finite (and ≥ 0 where the rule needs it),
  every gradient is finite; one host synchronisation for all of it, which also brings back the
  largest gradient element (what :class:`lrkit.methods.scaling.MomentScale` needs).
* :class:`Interval`, :class:`Pair`, :class:`Flag` and :func:`check_hyperparameters` — the
  valid values of each hyperparameter, checked at construction *and at every step*, so that a
  value set later through ``param_groups`` (by hand or by a scheduler) raises a clear
  ``ValueError`` instead of silently changing the rule.

Errors are ``FloatingPointError`` for NaN/inf (what the training loop records as a
divergence), ``ValueError`` for a value out of range and ``TypeError`` for a value of the
wrong kind; each says what was wrong, what was expected, and that nothing was changed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

from lrkit.methods.distributed import average_across_ranks
from lrkit.methods.foreach import device_dtype_buckets

NOTHING_CHANGED = "no parameter or optimizer state was changed"

LossClosure = Callable[[], Any]


# ---------------------------------------------------------------------------------- the loss


class StepLoss(NamedTuple):
    """``returned``: what ``step`` gives back (the closure's value, or the ``loss`` passed in);
    ``value``: the loss the rule uses (detached, 0-dim, scalar dtype, rank average)."""

    returned: Any
    value: Tensor


def resolve_loss(
    closure: LossClosure | None,
    loss: Any,
    *,
    who: str,
    device: torch.device,
    dtype: torch.dtype,
    average_over_ranks: bool,
) -> StepLoss:
    """The loss from ``closure`` (called once, gradients enabled) or ``loss`` — exactly one of
    them. Raises ValueError (neither, both, a closure returning None, a non-scalar tensor) or
    TypeError (neither a tensor nor a real number) before anything changes."""
    if closure is not None and loss is not None:
        raise ValueError("pass the loss either through the closure or as step(loss=...), not both")
    if closure is None and loss is None:
        raise ValueError(
            f"{who} needs the current mini-batch loss: call step(closure) with a closure that "
            "zeroes the gradients, computes the loss, calls backward() and returns the loss, "
            "or call loss.backward() yourself and then step(loss=loss)"
        )
    if closure is not None:
        with torch.enable_grad():
            returned = closure()
        if returned is None:
            raise ValueError(f"the closure returned None; {who} needs it to return the loss")
    else:
        returned = loss
    if isinstance(returned, Tensor):
        if returned.numel() != 1:
            raise ValueError(
                f"{who} needs a scalar loss, got a tensor of shape {tuple(returned.shape)}; "
                "reduce it first, e.g. loss.mean()"
            )
        if returned.is_complex():
            raise TypeError(f"{who} needs a real loss, got dtype {returned.dtype}")
        value = returned.detach().reshape(()).to(device=device, dtype=dtype)
    elif isinstance(returned, numbers.Real) and not isinstance(returned, bool):
        value = torch.tensor(float(returned), device=device, dtype=dtype)
    else:
        raise TypeError(
            f"{who} needs the loss as a scalar tensor or a real number, got "
            f"{type(returned).__name__}"
        )
    if average_over_ranks:
        value = average_across_ranks(value)
    return StepLoss(returned, value)


# --------------------------------------------------------------------- loss and gradients


def _largest_elements(grads: Sequence[Tensor], device: torch.device) -> Tensor:
    """max |g| over all gradients, as a 0-dim float64 tensor on ``device``: NaN if any element
    is NaN (max propagates NaN), inf if any is ±inf, 0 without gradients. One pass over the
    gradients and no arithmetic on them (nothing overflows): ``aminmax`` per tensor on the
    CPU, one ``_foreach_norm(inf)`` kernel per bucket elsewhere."""
    parts = [torch.zeros((), dtype=torch.float64, device=device)]
    for bucket in device_dtype_buckets(grads):
        tensors = [grads[i] for i in bucket if grads[i].numel() > 0]
        if not tensors:
            continue
        if tensors[0].device.type == "cpu":
            extremes = [extreme for t in tensors for extreme in torch.aminmax(t)]
            largest = torch.stack(extremes).abs().amax()
        else:
            largest = torch.stack(torch._foreach_norm(tensors, math.inf)).amax()
        parts.append(largest.to(device=device, dtype=torch.float64))
    return parts[0] if len(parts) == 1 else torch.stack(parts).amax()


def check_loss_and_gradients(
    loss: Tensor,
    grads: Sequence[Tensor],
    *,
    who: str,
    describe: Callable[[int], str],
    nonnegative: bool,
) -> float:
    """Raises FloatingPointError for a NaN/inf loss or gradient (naming the parameter:
    ``describe(i)`` for ``grads[i]``) and, when ``nonnegative``, ValueError for a negative
    loss; returns the largest |gradient element| (0.0 without gradients). One host
    synchronisation; the exact per-tensor search runs only when something is wrong."""
    loss_value, largest = torch.stack(
        [loss.to(torch.float64), _largest_elements(grads, loss.device)]
    ).tolist()
    if not math.isfinite(loss_value):
        raise FloatingPointError(
            f"{who} got a non-finite loss ({loss_value}); {NOTHING_CHANGED}. Check the model's "
            "outputs and the loss (e.g. log of 0, an overflow in float16/bfloat16), or lower "
            "the step size if the loss diverged"
        )
    if nonnegative and loss_value < 0:
        raise ValueError(
            f"{who} needs a non-negative loss (its step is a fraction of the way from L down to "
            f"a fraction of the smallest loss seen), got loss = {loss_value}; {NOTHING_CHANGED}. "
            "Add a constant lower bound, e.g. step(loss=loss - lower_bound) with lower_bound <= "
            "the smallest loss"
        )
    if not math.isfinite(largest):
        for index, grad in enumerate(grads):
            if not bool(torch.isfinite(grad).all()):
                raise FloatingPointError(
                    f"{who} got a non-finite gradient for {describe(index)}; {NOTHING_CHANGED}. "
                    "Check the model for overflow or invalid operations "
                    "(torch.autograd.set_detect_anomaly helps)"
                )
    return largest


def check_dense_real(param: Tensor, grad: Tensor | None, *, who: str, label: str) -> None:
    """ValueError for a complex parameter or a sparse gradient (the rules take real dot
    products of dense tensors)."""
    if param.is_complex():
        raise ValueError(
            f"{who} does not support complex parameters ({label}): its dot products must be "
            "real; use torch.view_as_real parameters"
        )
    if grad is not None and grad.is_sparse:
        raise ValueError(
            f"{who} does not support sparse gradients ({label}); use dense embeddings "
            f"(sparse=False); {NOTHING_CHANGED}"
        )


def parameter_label(group_index: int, index: int, group: Mapping[str, Any], param: Tensor) -> str:
    """'parameter NAME (group G, shape S)' when the group carries ``param_names``, else
    'parameter I of param group G (shape S)'."""
    names = group.get("param_names")
    if names is not None:
        return f"parameter {names[index]!r} (group {group_index}, shape {tuple(param.shape)})"
    return f"parameter {index} of param group {group_index} (shape {tuple(param.shape)})"


class GradientBatch(NamedTuple):
    """The parameters that have a gradient this step, by param group, with their gradients
    and their index in the group."""

    params: list[list[Tensor]]
    grads: list[list[Tensor]]
    indices: list[list[int]]

    def flat_grads(self) -> list[Tensor]:
        return [grad for group in self.grads for grad in group]

    def describe(self, groups: Sequence[Mapping[str, Any]]) -> Callable[[int], str]:
        """Index into :meth:`flat_grads` → the parameter's label."""
        places = [(g, i) for g, indices in enumerate(self.indices) for i in indices]

        def label(flat: int) -> str:
            group, index = places[flat]
            return parameter_label(group, index, groups[group], groups[group]["params"][index])

        return label


def gradients_by_group(groups: Sequence[Mapping[str, Any]], *, who: str) -> GradientBatch:
    """The parameters with a gradient, by group; ValueError for a complex parameter or a sparse
    gradient (:func:`check_dense_real`)."""
    batch = GradientBatch([], [], [])
    for group_index, group in enumerate(groups):
        params, grads, indices = [], [], []
        for index, param in enumerate(group["params"]):
            if param.is_complex() or (param.grad is not None and param.grad.is_sparse):
                label = parameter_label(group_index, index, group, param)
                check_dense_real(param, param.grad, who=who, label=label)
            if param.grad is not None:
                params.append(param)
                grads.append(param.grad)
                indices.append(index)
        batch.params.append(params)
        batch.grads.append(grads)
        batch.indices.append(indices)
    return batch


# --------------------------------------------------------------------------- hyperparameters


class Rule(Protocol):
    def check(self, name: str, value: Any, where: str) -> None: ...


def _real(name: str, value: Any, meaning: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{where} {name} ({meaning}) must be a real number, got {type(value).__name__} "
            f"{value!r}"
        )
    return float(value)


@dataclass(frozen=True)
class Interval:
    """A real number in [low, high], an end excluded where ``low_open``/``high_open``, or
    None where ``optional``; ``meaning`` and ``hint`` go into the error message."""

    meaning: str
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    hint: str = ""
    optional: bool = False

    def check(self, name: str, value: Any, where: str) -> None:
        if value is None and self.optional:
            return
        number = _real(name, value, self.meaning, where)
        above = number > self.low if self.low_open else number >= self.low
        below = number < self.high if self.high_open else number <= self.high
        if not (above and below):
            raise ValueError(
                f"{where} {name} ({self.meaning}) must be in {self.describe()}, got {value!r}"
                + (f"; {self.hint}" if self.hint else "")
            )

    def describe(self) -> str:
        left = "(" if self.low_open else "["
        right = ")" if self.high_open else "]"
        return f"{left}{self.low:g}, {self.high:g}{right}"


@dataclass(frozen=True)
class Pair:
    """A pair (first, second), each with its own interval (Adam's ``betas``)."""

    first: Interval
    second: Interval

    def check(self, name: str, value: Any, where: str) -> None:
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
            raise TypeError(f"{where} {name} must be a pair (first, second), got {value!r}")
        self.first.check(f"{name}[0]", value[0], where)
        self.second.check(f"{name}[1]", value[1], where)


@dataclass(frozen=True)
class Flag:
    """None (the method decides) or a bool, e.g. ``foreach``."""

    meaning: str

    def check(self, name: str, value: Any, where: str) -> None:
        if value is not None and not isinstance(value, bool):
            raise TypeError(
                f"{where} {name} ({self.meaning}) must be None or a bool, got {value!r}"
            )


def check_hyperparameters(
    values: Mapping[str, Any], rules: Mapping[str, Rule], *, where: str
) -> None:
    """Checks ``values[name]`` against ``rules[name]`` for every rule (a missing value is a
    ValueError: a param group must carry all of its method's hyperparameters)."""
    for name, rule in rules.items():
        if name not in values:
            raise ValueError(f"{where} has no {name!r}; it needs every one of {sorted(rules)}")
        rule.check(name, values[name], where)


def check_param_groups(
    groups: Sequence[Mapping[str, Any]],
    rules: Mapping[str, Rule],
    *,
    shared: Sequence[str],
    who: str,
) -> dict[str, Any]:
    """Checks every group against ``rules`` and that the ``shared`` hyperparameters (those that
    define one global quantity) are equal in all groups; returns the shared values."""
    for index, group in enumerate(groups):
        check_hyperparameters(group, rules, where=f"{who} param group {index}:")
        for name in shared:
            if group[name] != groups[0][name]:
                raise ValueError(
                    f"{who} {name} is global (one value for all param groups) but param group "
                    f"{index} has {name}={group[name]!r} and group 0 has {groups[0][name]!r}; "
                    f"set it once in the constructor"
                )
    return {name: groups[0][name] for name in shared}
