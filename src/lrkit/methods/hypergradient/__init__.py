"""Hypergradient learning rates (docs/hypergradient.md).

* :class:`HDSGD`, :class:`HDAdam` — Baydin et al.'s hypergradient descent of one global LR on
  the training loss (:mod:`.hd`); :class:`HD` — the same rule over any torch optimizer
  (:mod:`.hd_wrapper`).
* :class:`MARTHE` — online schedules from a validation objective with the exact tangent of
  SGD, momentum or Adam; RTHO is ``mu=1.0`` with a fixed β (:mod:`.marthe`); the κ
  procedure is :func:`choose_kappa` (:mod:`.kappa`).
* :func:`lrs_opt` — the offline optimal schedule by reverse mode through the unrolled
  training (:mod:`.lrs_opt`).

The rules are pure functions (:mod:`.rules`), the inner optimizers with their tangents in
:mod:`.inner`, gradients and Hessian–vector products in :mod:`.hvp`; importing this package
registers the methods (:mod:`.entries`).
"""

from lrkit.methods.hypergradient import entries  # noqa: F401  (registration)
from lrkit.methods.hypergradient.hd import HDSGD, HDAdam
from lrkit.methods.hypergradient.hd_wrapper import HD
from lrkit.methods.hypergradient.inner import InnerOptimizer
from lrkit.methods.hypergradient.kappa import KappaChoice, choose_kappa
from lrkit.methods.hypergradient.lrs_opt import LRSOptResult, lrs_opt, replay
from lrkit.methods.hypergradient.marthe import MARTHE

__all__ = [
    "HD",
    "HDSGD",
    "MARTHE",
    "HDAdam",
    "InnerOptimizer",
    "KappaChoice",
    "LRSOptResult",
    "choose_kappa",
    "lrs_opt",
    "replay",
]
