r"""Optimizers that reproduce ``torch.optim`` step for step, as optax transformations.

Factories are named like the torch classes, lowercase, with torch's argument names and
defaults except ``lr`` -> ``learning_rate`` (first; a scalar or an optax schedule) and
``betas`` -> ``b1, b2``. Each is parity-tested against ``torch.optim`` in float64 and
float32. Where optax already computes torch's rule the factory composes optax blocks;
where it does not, the missing block lives here (``scale_by_*``).

:mod:`jaxopt_adv.torch.functional` and :mod:`jaxopt_adv.torch.losses` hold the losses
of ``torch.nn.functional`` with torch's reductions and gradients; :mod:`jaxopt_adv.torch.clip` gradient clipping and
:mod:`jaxopt_adv.torch.lr_scheduler` the ``torch.optim.lr_scheduler`` schedules;
:mod:`jaxopt_adv.torch.swa_utils` is ``torch.optim.swa_utils`` (SWA / EMA weight averages,
SWALR, ``update_bn``).

torch's scalar dtypes (``torch_default_dtype``). torch computes some step scalars in
Python doubles and holds others in 0-d tensors of its default dtype
(``torch.get_default_dtype()``, float32 unless a script sets it), whatever the
parameters' dtype. Torch-exact means torch's rounding, so by default (``"float32"``,
torch's default) :func:`adam`, :func:`adamw`, :func:`nadam`, :func:`radam`,
:func:`asgd`, :func:`sparse_adam`, :func:`adamax`, :func:`adafactor` and their
``scale_by_*`` blocks reproduce it:

- Adam/AdamW/NAdam/RAdam/SparseAdam/Adamax bias corrections are ``1 - beta ** t`` in
  doubles (float64 runs); RAdam's :math:`\rho_t` is torch's double-precision formula, cancellation
  included (with ``b2 = 1 - 1e-9`` torch rectifies from step 4 where the exact
  :math:`\rho_t` would wait for step 6);
- NAdam's ``mu_product`` is multiplied and held in the default dtype (float32: 1e-9
  relative from the float64 product after 20 steps);
- ASGD's ``eta`` and ``mu`` are rounded to the default dtype (float32: 2e-8);
- the step counter stops at ``2**24`` under float32 (torch's float32
  ``state["step"]``; SparseAdam's is a Python int); Adamax's and Adafactor's other step
  scalars are Python doubles.

``torch_default_dtype="float64"`` reproduces a script that called
``torch.set_default_dtype(torch.float64)``; ``None`` keeps the more accurate forms
(bias corrections as ``-expm1(t log beta)``, the cancellation-free series of
:math:`\rho_t`, unrounded scalars, the exact step count). In float32 runs the scalars are float32 here
(JAX has no double there): bias corrections take the accurate form whatever the option,
the closest float32 can come to torch's doubles. ``jaxopt_adv.fast``'s fused step
computes the same scalars, bit for bit.
"""

from jaxopt_adv.torch import clip, functional, losses, lr_scheduler, swa_utils
from jaxopt_adv.torch.adadelta import adadelta, scale_by_adadelta
from jaxopt_adv.torch.adafactor import ScaleByAdafactorState, adafactor
from jaxopt_adv.torch.adagrad import ScaleByAdagradState, adagrad, scale_by_adagrad
from jaxopt_adv.torch.adam import ScaleByAdamState, adam, adamw, scale_by_adam
from jaxopt_adv.torch.adamax import adamax, scale_by_adamax
from jaxopt_adv.torch.asgd import AsgdState, asgd, asgd_update
from jaxopt_adv.torch.clip import (
    ClipGradNormState,
    clip_grad_norm,
    clip_grad_value,
    clip_grads_with_norm,
    get_total_norm,
)
from jaxopt_adv.torch.lbfgs import LbfgsState, lbfgs
from jaxopt_adv.torch.lr_scheduler import (
    ReduceLROnPlateauState,
    chained_scheduler,
    constant_lr,
    cosine_annealing_lr,
    cosine_annealing_warm_restarts,
    cyclic_lr,
    cyclic_momentum,
    exponential_lr,
    lambda_lr,
    linear_lr,
    multiplicative_lr,
    multistep_lr,
    one_cycle_lr,
    one_cycle_momentum,
    polynomial_lr,
    reduce_lr_on_plateau,
    sequential_lr,
    step_lr,
)
from jaxopt_adv.torch.muon import ScaleByMuonState, muon, scale_by_muon
from jaxopt_adv.torch.nadam import ScaleByNadamState, nadam, scale_by_nadam
from jaxopt_adv.torch.radam import ScaleByRadamState, radam, scale_by_radam
from jaxopt_adv.torch.rmsprop import rmsprop
from jaxopt_adv.torch.rprop import ScaleByRpropState, rprop, scale_by_rprop
from jaxopt_adv.torch.sgd import SgdMomentumState, scale_by_sgd_momentum, sgd
from jaxopt_adv.torch.sparse_adam import (
    ScaleBySparseAdamState,
    scale_by_sparse_adam,
    sparse_adam,
)
from jaxopt_adv.torch.swa_utils import *  # noqa: F403 (as swa_utils.__all__ lists them)

__all__ = [
    "AsgdState",
    "ClipGradNormState",
    "LbfgsState",
    "ReduceLROnPlateauState",
    "ScaleByAdafactorState",
    "ScaleByAdagradState",
    "ScaleByAdamState",
    "ScaleByMuonState",
    "ScaleByNadamState",
    "ScaleByRadamState",
    "ScaleByRpropState",
    "ScaleBySparseAdamState",
    "SgdMomentumState",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "asgd",
    "asgd_update",
    "chained_scheduler",
    "clip",
    "clip_grad_norm",
    "clip_grad_value",
    "clip_grads_with_norm",
    "constant_lr",
    "cosine_annealing_lr",
    "cosine_annealing_warm_restarts",
    "cyclic_lr",
    "cyclic_momentum",
    "exponential_lr",
    "functional",
    "get_total_norm",
    "lambda_lr",
    "lbfgs",
    "linear_lr",
    "losses",
    "lr_scheduler",
    "multiplicative_lr",
    "multistep_lr",
    "muon",
    "nadam",
    "one_cycle_lr",
    "one_cycle_momentum",
    "polynomial_lr",
    "radam",
    "reduce_lr_on_plateau",
    "rmsprop",
    "rprop",
    "scale_by_adadelta",
    "scale_by_adagrad",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_muon",
    "scale_by_nadam",
    "scale_by_radam",
    "scale_by_rprop",
    "scale_by_sgd_momentum",
    "scale_by_sparse_adam",
    "sequential_lr",
    "sgd",
    "sparse_adam",
    "step_lr",
    "swa_utils",
    *swa_utils.__all__,
]
