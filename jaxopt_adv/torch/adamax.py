"""Adamax as ``torch.optim.Adamax`` computes it, with torch's bias correction."""

from __future__ import annotations

from typing import Any

import chex
import jax
import jax.numpy as jnp
import optax

from jaxopt_adv._common import check_torch_default_dtype, torch_decay_power, torch_step
from jaxopt_adv.torch._chain import torch_chain
from jaxopt_adv.torch._docs import shared_arg_docs
from jaxopt_adv.torch._twin import torch_twin
from jaxopt_adv.torch.adam import check_adam_args, zero_moments


def adamax_bias_correction(b1: Any, count: chex.Array, torch_default_dtype: Any) -> chex.Array:
    r"""Step ``count``'s :math:`1-\beta_1^t` as torch computes it (shared with the fused
    CPU step, which must compute it with the same ops)."""
    dtype = check_torch_default_dtype(torch_default_dtype)
    return torch_decay_power(b1, torch_step(count, dtype), dtype)[1]


@shared_arg_docs
def scale_by_adamax(
    b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8, *, torch_default_dtype: Any = "float32"
) -> optax.GradientTransformationExtraArgs:
    r"""Adamax's scaling as torch computes it: ``optax.scale_by_adamax`` (same state, same
    moment updates) with torch's bias correction.

    .. math::
      m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
      u_t = \max(\beta_2 u_{t-1}, |g_t| + \epsilon), \quad
      \text{out}_t = \frac{m_t / (1-\beta_1^t)}{u_t}

    torch evaluates :math:`1-\beta_1^t` in Python doubles from its step counter, a 0-d
    tensor of its default dtype: under float32 (torch's default) the counter stops at
    ``2**24``, and so does :math:`t` here; ``torch_default_dtype=None`` takes the exact
    count and ``-expm1(t log beta)`` (the more accurate form where ``b1`` is close to 1).
    In float32 runs the correction is the accurate form whatever the option.

    Args:
      b1: first-moment decay, in ``[0, 1)``.
      b2: decay of the infinity norm, in ``[0, 1)``.
      eps: added to ``|g|`` inside the max, ``>= 0``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with an ``optax.ScaleByAdamState``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch.adamax import scale_by_adamax
      >>> tx = scale_by_adamax(eps=0.0)
      >>> u, state = tx.update(jnp.array([3.0, -1.0]), tx.init(jnp.zeros(2)))
      >>> u
      Array([ 1., -1.], dtype=float32)
    """
    check_adam_args(b1, b2, eps, torch_default_dtype)

    def init_fn(params: optax.Params) -> optax.ScaleByAdamState:
        return optax.ScaleByAdamState(jnp.zeros([], jnp.int32), *zero_moments(params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        count = optax.safe_increment(state.count)
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_infinity_moment(updates, state.nu, b2, eps)
        bc1 = adamax_bias_correction(b1, count, torch_default_dtype)
        out = jax.tree.map(lambda m, u: (m / bc1.astype(m.dtype)) / u, mu, nu)
        return out, optax.ScaleByAdamState(count, mu, nu)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@torch_twin("Adamax")
@shared_arg_docs
def adamax(
    learning_rate: optax.ScalarOrSchedule = 2e-3,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    *,
    maximize: bool = False,
    torch_default_dtype: Any = "float32",
) -> optax.GradientTransformationExtraArgs:
    r"""Adamax that reproduces ``torch.optim.Adamax`` step for step.

    .. math::
      m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
      u_t = \max(\beta_2 u_{t-1}, |g_t| + \epsilon), \quad
      \theta_t = \theta_{t-1} - \frac{\eta_t}{1-\beta_1^t}\, \frac{m_t}{u_t}

    with coupled L2 ``weight_decay`` added to the gradient first. optax places ``eps``
    inside the max exactly as torch does; the bias correction is torch's (see
    :func:`scale_by_adamax`).

    Args:
      learning_rate: scalar or schedule (torch ``lr``), default ``2e-3``.
      eps: added to ``|g|`` inside the max, ``>= 0``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxopt_adv
      >>> opt = jaxopt_adv.torch.adamax(0.1, eps=0.0)
      >>> params = jnp.zeros(2)
      >>> state = opt.init(params)
      >>> updates, state = opt.update(jnp.array([3.0, -1.0]), state, params)
      >>> updates
      Array([-0.1,  0.1], dtype=float32)

    References:
      Kingma, Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, section 7.1;
      mirrors ``torch.optim.Adamax`` (torch 2.13).

    Warning:
      ``optax.adamax`` computes the same rule but has no weight decay and no
      ``maximize``, and its default learning rate is not torch's ``2e-3``.
    """
    return torch_chain(
        scale_by_adamax(b1, b2, eps, torch_default_dtype=torch_default_dtype),
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        maximize=maximize,
    )
