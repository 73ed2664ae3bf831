"""lrkit: methods that learn the learning rate, as drop-in PyTorch optimizers.

Papers: L4 (Rolinek & Martius 2018), hypergradient schedules HD/RTHO/MARTHE/LRS-OPT
(Donini et al.), MLR-SNet (Shu et al. 2022), data-dependent dynamic LRs (Saxena et al.).
"""

from lrkit.methods.hypergradient import (
    HD,
    HDSGD,
    MARTHE,
    HDAdam,
    choose_kappa,
    lrs_opt,
)
from lrkit.methods.l4 import L4, L4Adam, L4Mom

__version__ = "0.1.0"

__all__ = [
    "HD",
    "HDSGD",
    "L4",
    "MARTHE",
    "HDAdam",
    "L4Adam",
    "L4Mom",
    "__version__",
    "choose_kappa",
    "lrs_opt",
]
