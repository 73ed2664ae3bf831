"""Loading a state dict only after checking all of it, so that a refused load changes nothing.

``torch.optim.Optimizer.load_state_dict`` checks the number of param groups and their sizes,
then replaces the groups wholesale: a state saved by another optimizer (SGD's groups into
AdamW) loads without complaint, and the next step fails with a ``KeyError`` far from its
cause. A wrapper that loads its base's part first and then finds its own entry wrong has
already changed the base. lrkit's optimizers call the checks here first and load only when
every one of them passed:

* :func:`check_optimizer_state` — torch's part: ``state`` and ``param_groups``, the group
  count and sizes, the hyperparameters every group must carry, the per-parameter state's
  ids, keys and tensor shapes;
* :func:`check_own_entry` — an lrkit optimizer's own entry (``"l4"``, ``"lookahead"``): there,
  complete, and saved by the same kind of optimizer (the same L4 direction, the same base
  class);
* :func:`check_indexed` — per-parameter tensors kept by parameter index (a wrapper's
  gradient averages or slow weights): indices in range, shapes equal to the parameters'.

Every refusal is a ``ValueError`` that says what did not match.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from lrkit.methods.guards import NOTHING_CHANGED


def _refuse(who: str, message: str) -> ValueError:
    return ValueError(f"{who}.load_state_dict: {message}; {NOTHING_CHANGED}")


def check_optimizer_state(
    optimizer: torch.optim.Optimizer,
    state_dict: Any,
    *,
    who: str,
    hyperparameters: Collection[str] = (),
    per_parameter: Mapping[str, bool] | None = None,
    tensor_shapes: bool = False,
) -> None:
    """Checks what ``torch.optim.Optimizer.load_state_dict(state_dict)`` relies on.

    Args:
        optimizer: the optimizer that will load it.
        state_dict: what it will load (without any lrkit entry).
        who: the optimizer's name, for the messages.
        hyperparameters: keys every saved param group must have.
        per_parameter: keys every saved per-parameter state must have, each mapped to
            whether it is a tensor of the parameter's shape (else any value).
        tensor_shapes: every per-parameter tensor with dimensions has the parameter's shape
            (true of torch.optim's optimizers, whose only 0-dim state is ``step``).
    """
    if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
        found = sorted(state_dict) if isinstance(state_dict, Mapping) else type(state_dict).__name__
        raise _refuse(
            who, f"needs what state_dict() returns ('state', 'param_groups'), got {found}"
        )
    saved_groups, groups = state_dict["param_groups"], optimizer.param_groups
    if not isinstance(saved_groups, Sequence) or len(saved_groups) != len(groups):
        count = len(saved_groups) if isinstance(saved_groups, Sequence) else saved_groups
        raise _refuse(who, f"the state dict has {count} param groups, this optimizer {len(groups)}")
    parameter_of: dict[Any, Tensor] = {}
    for index, (saved, group) in enumerate(zip(saved_groups, groups, strict=True)):
        if not isinstance(saved, Mapping) or not isinstance(saved.get("params"), Sequence):
            raise _refuse(who, f"param group {index} of the state dict has no 'params' list")
        if len(saved["params"]) != len(group["params"]):
            raise _refuse(
                who,
                f"param group {index} holds {len(saved['params'])} parameters in the state dict "
                f"and {len(group['params'])} here; build the optimizer over the same parameters",
            )
        missing = [key for key in hyperparameters if key not in saved]
        if missing:
            raise _refuse(
                who,
                f"param group {index} of the state dict lacks {missing}: it was saved by another "
                "kind of optimizer",
            )
        parameter_of.update(zip(saved["params"], group["params"], strict=True))
    state = state_dict["state"]
    if not isinstance(state, Mapping):
        raise _refuse(who, f"'state' must be a dict by parameter id, got {type(state).__name__}")
    unknown = [key for key in state if key not in parameter_of]
    if unknown:
        raise _refuse(
            who, f"the state dict has state for parameter ids {unknown} that no group lists"
        )
    for key, entry in state.items():
        _check_parameter_state(who, entry, parameter_of[key], key, per_parameter, tensor_shapes)


def _check_parameter_state(
    who: str,
    entry: Any,
    param: Tensor,
    key: Any,
    per_parameter: Mapping[str, bool] | None,
    tensor_shapes: bool,
) -> None:
    if not isinstance(entry, Mapping):
        raise _refuse(who, f"the state of parameter {key} is a {type(entry).__name__}, not a dict")
    required = per_parameter or {}
    missing = [name for name in required if name not in entry]
    if missing:
        raise _refuse(
            who, f"the state of parameter {key} lacks {missing}: it was saved by another optimizer"
        )
    for name, value in entry.items():
        shaped = required.get(name, False) or (
            tensor_shapes and isinstance(value, Tensor) and value.dim() > 0
        )
        if shaped and (not isinstance(value, Tensor) or value.shape != param.shape):
            found = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise _refuse(
                who,
                f"the state dict's {name!r} of parameter {key} has shape {found}, the parameter "
                f"{tuple(param.shape)}: it was saved for another model",
            )


def check_own_entry(
    state_dict: Any,
    key: str,
    *,
    who: str,
    fields: Collection[str],
    saved_by: Mapping[str, Any],
    scalars: Collection[str] = (),
) -> Mapping[str, Any]:
    """``state_dict[key]``, after checking that it exists, has every one of ``fields`` (and
    ``scalars``, each None or a 0-dim tensor), and equals ``saved_by`` where both name a value
    (e.g. the L4 direction, the base's class)."""
    if not isinstance(state_dict, Mapping) or key not in state_dict:
        raise _refuse(
            who,
            f"the state dict has no {key!r} entry: it was not saved by {who}.state_dict() (a bare "
            f"base-optimizer state loads with .base_optimizer.load_state_dict())",
        )
    entry = state_dict[key]
    if not isinstance(entry, Mapping):
        raise _refuse(
            who, f"the state dict's {key!r} entry is a {type(entry).__name__}, not a dict"
        )
    missing = [name for name in (*fields, *scalars) if name not in entry]
    if missing:
        raise _refuse(
            who, f"the state dict's {key!r} entry lacks {missing}: saved by another lrkit version"
        )
    for name in scalars:
        value = entry[name]
        if value is not None and (not isinstance(value, Tensor) or value.dim() != 0):
            raise _refuse(who, f"the state dict's {key!r} {name} must be None or a 0-dim tensor")
    for name, expected in saved_by.items():
        if entry.get(name) != expected:
            raise _refuse(
                who,
                f"the state dict was saved with {name} {entry.get(name)!r}, this optimizer has "
                f"{expected!r}; load it into the same kind of optimizer it was saved from",
            )
    return entry


def check_indexed(
    entries: Any,
    params: Sequence[Tensor],
    *,
    who: str,
    what: str,
    tensors: Collection[str] = (),
    counts: str | None = None,
) -> None:
    """``entries`` maps parameter indices to a tensor of the parameter's shape (``tensors``
    empty) or to a dict in which each of ``tensors`` that is present is such a tensor and
    ``counts`` (if named) is an int >= 1."""
    if not isinstance(entries, Mapping):
        raise _refuse(who, f"the {what} must be a dict by parameter index")
    for index, entry in entries.items():
        if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(params):
            raise _refuse(
                who,
                f"the state dict has {what} for parameter index {index!r}, but this optimizer has "
                f"{len(params)} parameters; build it over the same parameters",
            )
        if (tensors or counts) and not isinstance(entry, Mapping):
            raise _refuse(who, f"the {what} of parameter {index} is not a dict")
        if counts is not None:
            count = entry.get(counts)
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise _refuse(who, f"the {what} of parameter {index} has {counts} {count!r}")
        values = [entry[name] for name in tensors if name in entry] if tensors else [entry]
        for value in values:
            if not isinstance(value, Tensor) or value.shape != params[index].shape:
                found = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                raise _refuse(
                    who,
                    f"the {what} of parameter {index} has shape {found}, the parameter "
                    f"{tuple(params[index].shape)}: it was saved for another model",
                )


def without(state_dict: Mapping[str, Any], key: str) -> dict[str, Any]:
    """The state dict without an lrkit entry: what the torch part loads."""
    return {name: value for name, value in state_dict.items() if name != key}


def restore_scalars(
    entry: Mapping[str, Any], names: Collection[str], device: torch.device, dtype: torch.dtype
) -> dict[str, Any]:
    """Copies of the saved 0-dim tensors (or None) named ``names``, on ``device``; floating
    ones in ``dtype``, integer ones (counters) as they are."""
    restored = {}
    for name in names:
        value = entry[name]
        if isinstance(value, Tensor):
            target = dtype if value.is_floating_point() else value.dtype
            value = value.to(device=device, dtype=target).clone()
        restored[name] = value
    return restored
