"""What optimizers that compose another optimizer share (Lookahead, ``L4(base)``).

Such a wrapper is a real ``torch.optim.Optimizer`` whose ``param_groups`` *is* the wrapped
optimizer's list: LR schedulers, users and the base itself see one set of groups, also after
the base's ``load_state_dict`` swaps in a new list, and groups added to the wrapper go to
the base. ``torch.optim.Optimizer.__init__`` builds a group of its own before the base is
known; that placeholder lives aside until :meth:`WrapsOptimizer._adopt` installs the base.
"""

from __future__ import annotations

from typing import Any

import torch

_PLACEHOLDER_GROUPS = "_groups_before_wrapping"


class WrapsOptimizer:
    """Mixin placed before ``torch.optim.Optimizer`` (or a subclass of it) in the bases of
    a wrapper. In ``__init__``: call the optimizer's ``__init__`` with
    :func:`base_parameters`, then ``self._adopt(base_optimizer)``."""

    def _adopt(self, base_optimizer: torch.optim.Optimizer) -> None:
        self.__dict__.pop(_PLACEHOLDER_GROUPS)
        self.base_optimizer = base_optimizer
        self.defaults = base_optimizer.defaults

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        base = self.__dict__.get("base_optimizer")
        if base is None:
            return self.__dict__[_PLACEHOLDER_GROUPS]
        return base.param_groups

    @param_groups.setter
    def param_groups(self, groups: list[dict[str, Any]]) -> None:
        base = self.__dict__.get("base_optimizer")
        if base is None:
            self.__dict__[_PLACEHOLDER_GROUPS] = groups
        else:
            base.param_groups = groups

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Adds the group to the wrapped optimizer (to the placeholder during ``__init__``)."""
        base = self.__dict__.get("base_optimizer")
        if base is None:
            torch.optim.Optimizer.add_param_group(self, param_group)
        else:
            base.add_param_group(param_group)


def base_parameters(base_optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in base_optimizer.param_groups for p in group["params"]]


def load_wrapped_state(
    wrapper: torch.optim.Optimizer, state_dict: dict[str, Any], key: str, indexed: str, what: str
) -> dict[str, Any]:
    """Loads the base optimizer's part of a wrapper's ``state_dict`` (everything but
    ``state_dict[key]``) and returns the wrapper's own entry, after checking that its
    per-parameter part ``saved[indexed]`` (keyed by parameter index) fits this optimizer."""
    name = type(wrapper).__name__
    if key not in state_dict:
        raise ValueError(
            f"state dict has no {key!r} entry: it was not saved by {name}.state_dict(); load a "
            f"bare base-optimizer state with {name.lower()}.base_optimizer.load_state_dict()"
        )
    saved = state_dict[key]
    count = len(base_parameters(wrapper.base_optimizer))
    unknown = [index for index in saved[indexed] if not 0 <= index < count]
    if unknown:
        raise ValueError(
            f"state dict has {what} for parameter indices {unknown}, but this optimizer has "
            f"{count} parameters; build it over the same parameters"
        )
    wrapper.base_optimizer.load_state_dict({k: v for k, v in state_dict.items() if k != key})
    return saved
