"""Methods: lrkit's own learned-LR optimizers, baselines and learning-rate-free peers.

Importing this package fills :data:`METHODS` (see :mod:`lrkit.methods.registry`). Names of
methods still to come are reserved (:mod:`lrkit.methods.reserved`); a real entry replaces
its reserved one whatever the import order. The contract every method plugs into — what it
declares, what it is built with, what it receives each step — is
:mod:`lrkit.methods.contract`.
"""

from lrkit.methods import (  # noqa: F401  (registration)
    baselines,
    hypergradient,
    l4,
    levenberg_marquardt,
    lookahead,
    peers,
    reserved,
)
from lrkit.methods.contract import BuildContext, Capabilities, StepInputs
from lrkit.methods.registry import (
    METHODS,
    MethodSpec,
    MissingExtraError,
    get_method,
    implemented_methods,
    optimizer_methods,
    register_method,
)

__all__ = [
    "METHODS",
    "BuildContext",
    "Capabilities",
    "MethodSpec",
    "MissingExtraError",
    "StepInputs",
    "get_method",
    "implemented_methods",
    "optimizer_methods",
    "register_method",
]
