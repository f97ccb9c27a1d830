"""Optimizers that reproduce ``torch.optim`` step for step, as optax transformations.

Factories are named like the torch classes, lowercase, with torch's argument names and
defaults except ``lr`` -> ``learning_rate`` (first; a scalar or an optax schedule) and
``betas`` -> ``b1, b2``. Each is parity-tested against ``torch.optim`` in float64 and
float32. Where optax already computes torch's rule the factory composes optax blocks;
where it does not, the missing block lives here (``scale_by_*``).

:mod:`jaxopt_adv.torch.functional` holds the losses of ``torch.nn.functional`` with
torch's reductions and gradients.
"""

from jaxopt_adv.torch import functional
from jaxopt_adv.torch.adadelta import adadelta
from jaxopt_adv.torch.adagrad import ScaleByAdagradState, adagrad, scale_by_adagrad
from jaxopt_adv.torch.adam import ScaleByAdamState, adam, adamw, scale_by_adam
from jaxopt_adv.torch.adamax import adamax
from jaxopt_adv.torch.asgd import AsgdState, asgd, asgd_update
from jaxopt_adv.torch.nadam import ScaleByNadamState, nadam, scale_by_nadam
from jaxopt_adv.torch.radam import ScaleByRadamState, radam, scale_by_radam
from jaxopt_adv.torch.rmsprop import rmsprop
from jaxopt_adv.torch.rprop import ScaleByRpropState, rprop, scale_by_rprop
from jaxopt_adv.torch.sgd import SgdMomentumState, scale_by_sgd_momentum, sgd

__all__ = [
    "AsgdState",
    "ScaleByAdagradState",
    "ScaleByAdamState",
    "ScaleByNadamState",
    "ScaleByRadamState",
    "ScaleByRpropState",
    "SgdMomentumState",
    "adadelta",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "asgd",
    "asgd_update",
    "functional",
    "nadam",
    "radam",
    "rmsprop",
    "rprop",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_nadam",
    "scale_by_radam",
    "scale_by_rprop",
    "scale_by_sgd_momentum",
    "sgd",
]
