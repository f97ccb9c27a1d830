"""Averaged SGD as ``torch.optim.ASGD`` computes it."""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax.numpy as jnp
import optax

from jaxopt_adv._common import (
    NO_PARAMS_MSG,
    check_learning_rate,
    check_nonnegative,
    check_torch_default_dtype,
    scalar_dtype,
    torch_scalar,
    torch_step,
    tree_map_multi,
)
from jaxopt_adv.torch._chain import FINAL_UPDATE, torch_chain
from jaxopt_adv.torch._docs import shared_arg_docs
from jaxopt_adv.torch._twin import torch_twin


class AsgdState(NamedTuple):
    """State of :func:`asgd_update`."""

    count: chex.Array  # int32 scalar
    ax: optax.Params  # the running average of the parameters (torch ``ax``)


def _learning_rate_at(learning_rate: optax.ScalarOrSchedule, count: chex.Array):
    return learning_rate(count) if callable(learning_rate) else learning_rate


def asgd_coefficients(
    learning_rate: optax.ScalarOrSchedule,
    lambd: Any,
    alpha: Any,
    t0: Any,
    count: chex.Array,
    torch_default_dtype: Any = "float32",
) -> tuple[chex.Array, chex.Array]:
    r"""ASGD's :math:`(\eta_c, \mu_c)` for the step taken after ``count`` steps.

    The schedule is evaluated at ``max(count - 1, 0)``: torch recomputes its ``eta`` at
    the end of a step, with the learning rate then in force. torch holds ``eta`` and
    ``mu`` in 0-d tensors of its default dtype: both are rounded to
    ``torch_default_dtype`` (``None``: not rounded). The fused CPU step
    (:mod:`jaxopt_adv.fast`) computes its scalars with this function too.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch.asgd import asgd_coefficients
      >>> eta, mu = asgd_coefficients(0.1, 0.0, 0.75, 1e6, jnp.int32(3))
      >>> float(eta), float(mu)
      (0.10000000149011612, 1.0)
    """
    lr = jnp.asarray(_learning_rate_at(learning_rate, jnp.maximum(count - 1, 0)))
    dtype = check_torch_default_dtype(torch_default_dtype)
    c = torch_step(count, dtype).astype(scalar_dtype(lr.dtype))
    eta = lr / (1 + lambd * lr * c) ** alpha
    mu = jnp.where(c == 0, 1, 1 / jnp.maximum(1, c - t0))
    return torch_scalar(eta, dtype), torch_scalar(mu, dtype)


@shared_arg_docs
def asgd_update(
    learning_rate: optax.ScalarOrSchedule = 1e-2,
    lambd: Any = 1e-4,
    alpha: Any = 0.75,
    t0: Any = 1e6,
    *,
    torch_default_dtype: Any = "float32",
) -> optax.GradientTransformationExtraArgs:
    r"""ASGD's step (a descent update, learning rate included) and parameter average.

    With :math:`c` the number of steps taken so far and :math:`\eta` the learning rate
    that was in force at the previous step (torch recomputes its ``eta`` at the end of
    each step):

    .. math::
      \eta_c = \frac{\eta}{(1 + \lambda\,\eta\,c)^{\alpha}}, \quad
      \theta_{c+1} = \theta_c (1 - \lambda\eta_c) - \eta_c g, \quad
      \bar\theta_{c+1} = \bar\theta_c + \mu_c(\theta_{c+1} - \bar\theta_c),\
      \mu_c = 1/\max(1, c - t_0)

    The average :math:`\bar\theta` is kept in the state (``ax``), where torch keeps it.

    Args:
      learning_rate: scalar or schedule (torch ``lr``).
      lambd: decay term :math:`\lambda`, ``>= 0``.
      alpha: power for the eta update, ``>= 0``.
      t0: step at which averaging starts, ``>= 0`` (``inf``: never).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` that needs ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch import asgd_update
      >>> tx = asgd_update(0.1, lambd=0.0)
      >>> params = jnp.ones(2)
      >>> state = tx.init(params)
      >>> u, state = tx.update(jnp.ones(2), state, params)
      >>> u, state.ax
      (Array([-0.1, -0.1], dtype=float32), Array([0.9, 0.9], dtype=float32))

    References:
      Polyak, Juditsky, "Acceleration of Stochastic Approximation by Averaging", SIAM J.
      Control Optim. 1992; mirrors ``torch.optim.ASGD`` (torch 2.13).
    """
    check_learning_rate(learning_rate)
    check_nonnegative(lambd, "lambd")
    check_nonnegative(alpha, "alpha")
    check_nonnegative(t0, "t0", allow_inf=True)  # inf: never average
    check_torch_default_dtype(torch_default_dtype)

    def init_fn(params: optax.Params) -> AsgdState:
        return AsgdState(count=jnp.zeros([], jnp.int32), ax=optax.tree.zeros_like(params))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(NO_PARAMS_MSG)
        eta, mu = asgd_coefficients(
            learning_rate, lambd, alpha, t0, state.count, torch_default_dtype
        )

        def leaf(g, p, ax):
            e = eta.astype(p.dtype)
            new_p = p * (1 - lambd * e) - e * g
            new_ax = jnp.where(mu == 1, new_p, ax + (new_p - ax) * mu.astype(p.dtype))
            return (new_p - p).astype(g.dtype), new_ax.astype(ax.dtype)

        out, ax = tree_map_multi(leaf, 2, updates, params, state.ax)
        return out, AsgdState(optax.safe_increment(state.count), ax)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@torch_twin("ASGD")
@shared_arg_docs
def asgd(
    learning_rate: optax.ScalarOrSchedule = 1e-2,
    lambd: Any = 1e-4,
    alpha: Any = 0.75,
    t0: Any = 1e6,
    weight_decay: Any = 0.0,
    *,
    maximize: bool = False,
    torch_default_dtype: Any = "float32",
) -> optax.GradientTransformationExtraArgs:
    r"""Averaged SGD that reproduces ``torch.optim.ASGD`` step for step.

    The averaged parameters are in the state: ``jaxopt_adv.torch.AsgdState.ax``.

    Args:
      learning_rate: scalar or schedule (torch ``lr``), default ``1e-2``.
      lambd: decay term, ``>= 0``, default ``1e-4``.
      alpha: power for the eta update, ``>= 0``, default ``0.75``.
      t0: point at which averaging starts, ``>= 0``, default ``1e6``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` that needs ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxopt_adv
      >>> opt = jaxopt_adv.torch.asgd(0.1, lambd=0.0)
      >>> params = jnp.ones(2)
      >>> state = opt.init(params)
      >>> updates, state = opt.update(jnp.ones(2), state, params)
      >>> updates
      Array([-0.1, -0.1], dtype=float32)

    References:
      Polyak, Juditsky, SIAM J. Control Optim. 1992; mirrors ``torch.optim.ASGD``.

    Warning:
      Because :math:`(1-\lambda\eta)\theta - \eta g` is computed as one update,
      ``optax.apply_updates`` adds it back to :math:`\theta`; the rounding differs from
      torch's in-place ops by at most an ulp.
    """
    return torch_chain(
        asgd_update(learning_rate, lambd, alpha, t0, torch_default_dtype=torch_default_dtype),
        learning_rate=FINAL_UPDATE,
        weight_decay=weight_decay,
        maximize=maximize,
    )
