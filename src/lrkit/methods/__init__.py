"""Methods: lrkit's own learned-LR optimizers, baselines and learning-rate-free peers.

Importing this package fills :data:`METHODS` (see :mod:`lrkit.methods.registry`). Names of
methods still to come are reserved (:mod:`lrkit.methods.reserved`); a real entry replaces
its reserved one whatever the import order.
"""

from lrkit.methods import (  # noqa: F401  (registration)
    baselines,
    l4,
    levenberg_marquardt,
    lookahead,
    peers,
    reserved,
)
from lrkit.methods.registry import (
    METHODS,
    MethodSpec,
    get_method,
    implemented_methods,
    optimizer_methods,
    register_method,
)

__all__ = [
    "METHODS",
    "MethodSpec",
    "get_method",
    "implemented_methods",
    "optimizer_methods",
    "register_method",
]
