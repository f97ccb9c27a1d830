"""Corrections of the training signal: FER (a per-sample memory and its loss) and
gradient correction (GC-W, GC-ODE), with the factories of the ``advanced_optimizers``
torch package.

* :func:`fer` / :func:`create_fer_optimizer`: flipping-error reduction (Deng et al.,
  AAAI 2022), a base optimizer plus the per-sample memory (:func:`fer_memory`) that the
  loss :func:`fer_loss` reads; :func:`get_fer_stats` for diagnostics.
* :func:`gradient_correction` / :func:`create_gradient_correction_optimizer`: a wrapper
  that extrapolates the gradient before any optax optimizer (GC-ODE) and rescales its
  update by a learned per-tensor weight (GC-W); jaxopt_adv's own definition, since the
  paper was withdrawn.
"""

from jaxopt_adv.correction import fer as _fer
from jaxopt_adv.correction import gradient_correction as _gradient_correction
from jaxopt_adv.correction.fer import *  # noqa: F403 (as fer.__all__ lists them)
from jaxopt_adv.correction.gradient_correction import *  # noqa: F403 (as its __all__ lists them)

__all__ = [*_fer.__all__, *_gradient_correction.__all__]
