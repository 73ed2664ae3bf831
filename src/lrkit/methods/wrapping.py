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
        """Adds the group to the wrapped optimizer (to the placeholder during ``__init__``),
        then runs the wrapper's own check of it (:meth:`_check_added_group`); a group the
        check refuses is removed again before the error propagates."""
        base = self.__dict__.get("base_optimizer")
        if base is None:
            torch.optim.Optimizer.add_param_group(self, param_group)
            return
        base.add_param_group(param_group)
        try:
            self._check_added_group(base.param_groups[-1], len(base.param_groups) - 1)
        except (ValueError, TypeError):
            base.param_groups.pop()
            raise

    def _check_added_group(self, group: dict[str, Any], index: int) -> None:
        """What the wrapper requires of a group added after construction (nothing here)."""

    def base_class_name(self) -> str:
        """The wrapped optimizer's class, as saved in the wrapper's state dict (a state saved
        over another base is refused on load)."""
        cls = type(self.__dict__["base_optimizer"])
        return f"{cls.__module__}.{cls.__qualname__}"


def base_parameters(base_optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in base_optimizer.param_groups for p in group["params"]]


def is_torch_optimizer(optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``optimizer`` is one of torch.optim's own, whose per-parameter state tensors
    (other than the 0-dim ``step``) all have the parameter's shape."""
    return type(optimizer).__module__.startswith("torch.optim.")
