"""Names reserved for the methods of the later issues, so that `lrkit list` shows them and
suites can refer to them; each is replaced by its real entry when implemented."""

from __future__ import annotations

from lrkit.methods.registry import METHODS, MethodSpec, register_method

RESERVED = {
    "hd_sgd": "Hypergradient descent on SGD (Baydin et al.)",
    "hd_adam": "Hypergradient descent on Adam (Baydin et al.)",
    "rtho": "Real-time hyperparameter optimisation, μ = 1 (Donini et al.)",
    "marthe": "MARTHE, adaptive μ and β (Donini et al.)",
    "lrs_opt": "Offline optimal LR schedule by reverse-mode hypergradients (Donini et al. Sec. 5)",
    "mlrsnet": "MLR-SNet meta-learned LR schedule (Shu et al.)",
    "ddlr_instance": "Data-dependent per-instance LRs (Saxena et al.)",
    "ddlr_class": "Data-dependent per-class LRs (Saxena et al.)",
    "l2rw": "Learning to reweight examples (Ren et al. 2018)",
    "mwn": "Meta-Weight-Net (Shu et al. 2019)",
    "data_params": "Data Parameters (Saxena et al. 2019)",
}

for _name, _summary in RESERVED.items():
    if _name not in METHODS:
        register_method(
            MethodSpec(
                name=_name,
                summary=_summary + " — not implemented yet",
                kind="reserved",
                make_optimizer=None,
            )
        )
