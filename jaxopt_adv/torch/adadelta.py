"""Adadelta as ``torch.optim.Adadelta`` computes it, composed from optax blocks."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import optax

from jaxopt_adv._common import check_interval, check_nonnegative, tree_map_multi
from jaxopt_adv.torch._chain import torch_chain
from jaxopt_adv.torch._docs import shared_arg_docs
from jaxopt_adv.torch._twin import torch_twin


def scale_by_adadelta(rho: Any = 0.9, eps: Any = 1e-6) -> optax.GradientTransformation:
    r"""Adadelta's scaling as torch computes it (an ascent direction), in
    ``optax.ScaleByAdaDeltaState``.

    .. math::
      v_t = \rho v_{t-1} + (1-\rho) g_t^2, \quad
      \Delta_t = \sqrt{\frac{u_{t-1} + \epsilon}{v_t + \epsilon}}\, g_t, \quad
      u_t = \rho u_{t-1} + (1-\rho)\Delta_t^2

    torch divides two square roots; one root of the quotient is the same to rounding
    and keeps XLA from rewriting the division into its approximate ``rsqrt`` (what
    ``optax.scale_by_adadelta`` compiles to on CPU: about 20% of its float32 results are
    not correctly rounded), so the step is made of exactly rounded operations only.

    Args:
      rho: decay of both running averages, in ``[0, 1]``.
      eps: added inside the roots, ``>= 0``.

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch import scale_by_adadelta
      >>> tx = scale_by_adadelta(rho=0.0, eps=1.0)
      >>> u, state = tx.update(jnp.array([3.0]), tx.init(jnp.zeros(1)))
      >>> u.round(4)
      Array([0.9487], dtype=float32)

    References:
      Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012; mirrors
      ``torch.optim.Adadelta`` (torch 2.13).
    """

    check_interval(rho, "rho", 0.0, 1.0)
    check_nonnegative(eps, "eps", "epsilon")

    def init_fn(params: optax.Params) -> optax.ScaleByAdaDeltaState:
        return optax.ScaleByAdaDeltaState(
            e_g=optax.tree.zeros_like(params), e_x=optax.tree.zeros_like(params)
        )

    def update_fn(updates, state, params=None):
        del params

        def leaf(g, e_g, e_x):
            e_g = (rho * e_g + (1 - rho) * g * g).astype(e_g.dtype)
            delta = (jnp.sqrt((e_x + eps) / (e_g + eps)) * g).astype(g.dtype)
            e_x = (rho * e_x + (1 - rho) * delta * delta).astype(e_x.dtype)
            return delta, e_g, e_x

        out, e_g, e_x = tree_map_multi(leaf, 3, updates, state.e_g, state.e_x)
        return out, optax.ScaleByAdaDeltaState(e_g=e_g, e_x=e_x)

    return optax.GradientTransformation(init_fn, update_fn)


@torch_twin("Adadelta")
@shared_arg_docs
def adadelta(
    learning_rate: optax.ScalarOrSchedule = 1.0,
    rho: Any = 0.9,
    eps: Any = 1e-6,
    weight_decay: Any = 0.0,
    *,
    maximize: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Adadelta that reproduces ``torch.optim.Adadelta`` step for step.

    .. math::
      v_t = \rho v_{t-1} + (1-\rho) g_t^2, \quad
      \Delta_t = \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}} g_t, \quad
      u_t = \rho u_{t-1} + (1-\rho)\Delta_t^2, \quad
      \theta_t = \theta_{t-1} - \eta_t \Delta_t

    (eps inside both roots; :math:`u` accumulates :math:`\Delta` before the learning rate).

    Args:
      learning_rate: scalar or schedule (torch ``lr``), default ``1.0``.
      rho: decay of both running averages, in ``[0, 1]``.
      eps: added inside the roots, ``>= 0``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxopt_adv
      >>> opt = jaxopt_adv.torch.adadelta(rho=0.0, eps=1.0)
      >>> params = jnp.zeros(1)
      >>> state = opt.init(params)
      >>> updates, state = opt.update(jnp.array([3.0]), state, params)
      >>> updates.round(4)
      Array([-0.9487], dtype=float32)

    References:
      Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012; mirrors
      ``torch.optim.Adadelta`` (torch 2.13).

    Warning:
      ``optax.adadelta()`` defaults to ``learning_rate=None``, which skips the sign flip
      and *ascends*; this one defaults to torch's ``1.0``.
    """
    return torch_chain(
        scale_by_adadelta(rho=rho, eps=eps),
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        maximize=maximize,
    )
