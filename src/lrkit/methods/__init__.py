"""Methods: lrkit's own learned-LR optimizers, baselines and learning-rate-free peers.

Importing this package fills :data:`METHODS` (see :mod:`lrkit.methods.registry`).
"""

from lrkit.methods.registry import METHODS, MethodSpec, get_method, implemented_methods, register_method

__all__ = ["METHODS", "MethodSpec", "get_method", "implemented_methods", "register_method"]
