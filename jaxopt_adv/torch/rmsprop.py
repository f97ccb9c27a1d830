"""RMSprop as ``torch.optim.RMSprop`` computes it, composed from optax blocks."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxopt_adv._common import check_interval, check_nonnegative
from jaxopt_adv.torch._chain import torch_chain
from jaxopt_adv.torch._docs import shared_arg_docs
from jaxopt_adv.torch._twin import torch_twin


def _scale_by_rms(alpha: Any, eps: Any, centered: bool) -> optax.GradientTransformation:
    """``optax.scale_by_rms`` (``scale_by_stddev`` when centered) with eps outside the
    root and a zero initial scale, squaring in torch's order: ``alpha * nu + ((1 - alpha)
    * g) * g`` as ``square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)``, where
    optax's ``(1 - alpha) * g**2`` overflows to ``inf`` first (a float32 gradient of 3e19).
    """

    def init_fn(params):
        nu = optax.tree.zeros_like(params)
        if centered:
            return optax.ScaleByRStdDevState(mu=optax.tree.zeros_like(params), nu=nu)
        return optax.ScaleByRmsState(nu=nu)

    def update_fn(updates, state, params=None):
        del params
        nu = jax.tree.map(lambda g, v: alpha * v + (1 - alpha) * g * g, updates, state.nu)
        if centered:
            mu = optax.tree.update_moment(updates, state.mu, alpha, 1)
            scaling = jax.tree.map(lambda m, v: 1 / (jnp.sqrt(v - m * m) + eps), mu, nu)
            new_state = optax.ScaleByRStdDevState(mu=mu, nu=nu)
        else:
            scaling = jax.tree.map(lambda v: 1 / (jnp.sqrt(v) + eps), nu)
            new_state = optax.ScaleByRmsState(nu=nu)
        return jax.tree.map(lambda s, g: s * g, scaling, updates), new_state

    return optax.GradientTransformation(init_fn, update_fn)


@torch_twin("RMSprop")
@shared_arg_docs
def rmsprop(
    learning_rate: optax.ScalarOrSchedule = 1e-2,
    alpha: Any = 0.99,
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    momentum: Any = None,
    *,
    centered: bool = False,
    maximize: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""RMSprop that reproduces ``torch.optim.RMSprop`` step for step.

    .. math::
      v_t = \alpha v_{t-1} + (1-\alpha) g_t^2, \quad
      d_t = \sqrt{v_t - \bar g_t^2} + \epsilon\ \text{(centered)}\ \text{else}\
      \sqrt{v_t} + \epsilon

      b_t = \mu b_{t-1} + g_t / d_t, \qquad \theta_t = \theta_{t-1} - \eta_t b_t

    with :math:`\bar g_t` the running mean of gradients (``centered=True``) and coupled
    L2 ``weight_decay`` added to the gradient first.

    It is ``chain(scale_by_rms | scale_by_stddev (eps outside the root), trace(momentum),
    scale_by_learning_rate)``: the momentum buffer holds un-scaled steps and the learning
    rate multiplies the whole buffer, as in torch.

    Args:
      learning_rate: scalar or schedule (torch ``lr``), default ``1e-2``.
      alpha: smoothing constant, in ``[0, 1]``.
      eps: added outside the square root, ``>= 0``.
      momentum: momentum factor, ``>= 0``, or ``None`` (default): no momentum buffer. A
        number keeps the buffer, 0 included (its steps are torch's at 0), so that
        the state's structure never depends on the value, as under
        ``optax.inject_hyperparams``; ``None`` is static.
      centered: static; normalise by the estimated variance of the gradient.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxopt_adv
      >>> opt = jaxopt_adv.torch.rmsprop(0.01, alpha=0.75, eps=0.0)
      >>> params = jnp.zeros(2)
      >>> state = opt.init(params)
      >>> updates, state = opt.update(jnp.array([1.0, -1.0]), state, params)
      >>> updates
      Array([-0.02,  0.02], dtype=float32)

    References:
      Tieleman, Hinton, "Lecture 6.5 - RMSProp", COURSERA: Neural Networks for Machine
      Learning, 2012; Graves, "Generating Sequences With Recurrent Neural Networks", 2013
      (centered); mirrors ``torch.optim.RMSprop`` (torch 2.13).

    Warning:
      ``optax.rmsprop`` defaults differ (``decay=0.9``, eps *inside* the root) and it
      applies momentum *after* the learning rate, which differs from torch under a
      learning-rate schedule.
    """
    check_interval(alpha, "alpha", 0.0, 1.0)
    check_nonnegative(eps, "eps", "epsilon")
    core = [_scale_by_rms(alpha, eps, centered)]
    if momentum is not None:
        check_nonnegative(momentum, "momentum")
        core.append(optax.trace(decay=momentum))
    return torch_chain(
        *core, learning_rate=learning_rate, weight_decay=weight_decay, maximize=maximize
    )
