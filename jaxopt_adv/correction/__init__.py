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

from jaxopt_adv.correction.fer import (
    FERState,
    create_fer_optimizer,
    distillation_loss,
    fer,
    fer_loss,
    fer_memory,
    fer_state,
    fer_weight_at,
    get_fer_stats,
    write_memory,
)
from jaxopt_adv.correction.gradient_correction import (
    GradientCorrectionState,
    correction_weight_step,
    create_gradient_correction_optimizer,
    extrapolate_gradient,
    gradient_correction,
    tensor_cosine,
)

__all__ = [
    "FERState",
    "GradientCorrectionState",
    "correction_weight_step",
    "create_fer_optimizer",
    "create_gradient_correction_optimizer",
    "distillation_loss",
    "extrapolate_gradient",
    "fer",
    "fer_loss",
    "fer_memory",
    "fer_state",
    "fer_weight_at",
    "get_fer_stats",
    "gradient_correction",
    "tensor_cosine",
    "write_memory",
]
