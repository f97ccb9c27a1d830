"""Local learning rules: SigProp and Hebbian localized learning.

* :mod:`jaxopt_adv.local.sigprop`: forward signal propagation (Kohan et al., TNNLS
  2023): :class:`SigPropNet`, :func:`sigprop_local_loss`, :func:`sigprop_optimizer`,
  :func:`create_sigprop_optimizer`.
* :mod:`jaxopt_adv.local.localized`: LoCal+SGD, Hebbian (Oja/Hebb) updates for a
  localized prefix of layers and a base optimizer for the rest (Krithivasan et al.,
  2022): :func:`localized_learning`, :func:`create_localized_optimizer`,
  :class:`LocalizedMLP`, :func:`advance_boundary`, :func:`set_boundary`.
"""

from jaxopt_adv.local import localized, sigprop
from jaxopt_adv.local.localized import *  # noqa: F403 (as localized.__all__ lists them)
from jaxopt_adv.local.sigprop import *  # noqa: F403 (as sigprop.__all__ lists them)

__all__ = [*localized.__all__, *sigprop.__all__]
