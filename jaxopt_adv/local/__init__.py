"""Local learning rules: SigProp and Hebbian localized learning.

* :mod:`jaxopt_adv.local.sigprop`: forward signal propagation (Kohan et al., TNNLS
  2023): :class:`SigPropNet`, :func:`sigprop_local_loss`, :func:`sigprop_optimizer`,
  :func:`create_sigprop_optimizer`.
* :mod:`jaxopt_adv.local.localized`: LoCal+SGD, Hebbian (Oja/Hebb) updates for a
  localized prefix of layers and a base optimizer for the rest (Krithivasan et al.,
  2022): :func:`localized_learning`, :func:`create_localized_optimizer`,
  :class:`LocalizedMLP`, :func:`advance_boundary`, :func:`set_boundary`.
"""

from jaxopt_adv.local.localized import (
    LocalizedMLP,
    LocalizedState,
    advance_boundary,
    create_localized_optimizer,
    get_boundary,
    hebbian_delta,
    localized_learning,
    localized_state,
    set_boundary,
)
from jaxopt_adv.local.sigprop import (
    SigPropNet,
    create_sigprop_optimizer,
    sigprop_labels,
    sigprop_local_loss,
    sigprop_optimizer,
)

__all__ = [
    "LocalizedMLP",
    "LocalizedState",
    "SigPropNet",
    "advance_boundary",
    "create_localized_optimizer",
    "get_boundary",
    "hebbian_delta",
    "localized_learning",
    "localized_state",
    "set_boundary",
    "create_sigprop_optimizer",
    "sigprop_labels",
    "sigprop_local_loss",
    "sigprop_optimizer",
]
