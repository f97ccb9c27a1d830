"""``jaxopt_adv.sigprop``: the public name of :mod:`jaxopt_adv.local.sigprop`."""

from jaxopt_adv.local.sigprop import (
    SigPropNet,
    create_sigprop_optimizer,
    sigprop_labels,
    sigprop_local_loss,
    sigprop_optimizer,
)

__all__ = [
    "SigPropNet",
    "create_sigprop_optimizer",
    "sigprop_labels",
    "sigprop_local_loss",
    "sigprop_optimizer",
]
