"""muP (maximal update parametrization) and zero-shot hyperparameter transfer (muTransfer).

Tune hyperparameters on a narrow model, reuse them at any width. muP needs **both**
halves; the optimizer alone is not muP:

* model side (:mod:`jaxopt_adv.mup.nn`): a :class:`MuReadout` output layer, the one-time
  :func:`mup_rescale_init`, and :func:`mup_attention_scale` for attention;
* optimizer side (:mod:`jaxopt_adv.mup.optim`): :func:`mu_adam`, :func:`mu_adamw`,
  :func:`mu_sgd` (torch-exact, parity-tested against PyPI ``mup==1.0.0``), built from
  :func:`scale_by_mup` and :func:`add_mup_decayed_weights`, with the per-parameter
  :class:`InfShape`\\ s of :func:`infer_infshapes` (:mod:`jaxopt_adv.mup.infshape`).

:func:`ZeroShotTransferOptimizer` keeps the call shape of the ``advanced_optimizers``
torch package's class; :func:`coord_check` and
:func:`plot_coord_check` are the coordinate check that validates a muP model.

Example:
  >>> import jax
  >>> from flax import nnx
  >>> from jaxopt_adv import mup
  >>> def make(width, width_mult=1.0):
  ...     return mup.MuMLP(8, (width, width), 3, width_mult=width_mult, rngs=nnx.Rngs(0))
  >>> base = jax.eval_shape(lambda: nnx.state(make(16), nnx.Param))
  >>> model = make(64, width_mult=4.0)
  >>> infshapes = mup.infer_infshapes(base, nnx.state(model, nnx.Param))
  >>> nnx.update(model, mup.mup_rescale_init(nnx.state(model, nnx.Param), infshapes))
  >>> optimizer = nnx.Optimizer(model, mup.mu_adamw(1e-3, infshapes=infshapes), wrt=nnx.Param)

References:
  Yang et al., "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot
  Hyperparameter Transfer", NeurIPS 2021 (arXiv 2203.03466).
"""

from jaxopt_adv.mup.coord_check import CoordRecord, coord_check, plot_coord_check
from jaxopt_adv.mup.infshape import InfShape, infer_infshapes, param_path
from jaxopt_adv.mup.nn import (
    MuMLP,
    MuReadout,
    mup_attention_scale,
    mup_dot_product_attention,
    mup_rescale_init,
)
from jaxopt_adv.mup.optim import (
    MupMultipliers,
    add_mup_decayed_weights,
    mu_adam,
    mu_adamw,
    mu_sgd,
    mup_multipliers,
    scale_by_mup,
)
from jaxopt_adv.mup.transfer import ZeroShotTransferOptimizer

__all__ = [
    "CoordRecord",
    "InfShape",
    "MuMLP",
    "MuReadout",
    "MupMultipliers",
    "ZeroShotTransferOptimizer",
    "add_mup_decayed_weights",
    "coord_check",
    "infer_infshapes",
    "mu_adam",
    "mu_adamw",
    "mu_sgd",
    "mup_attention_scale",
    "mup_dot_product_attention",
    "mup_multipliers",
    "mup_rescale_init",
    "param_path",
    "plot_coord_check",
    "scale_by_mup",
]
