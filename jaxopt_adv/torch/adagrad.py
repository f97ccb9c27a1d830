"""Adagrad as ``torch.optim.Adagrad`` computes it (eps outside the root, lr decay)."""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from jaxopt_adv._common import (
    check_nonnegative,
    check_torch_default_dtype,
    filled_like,
    torch_step,
    tree_map_multi,
)
from jaxopt_adv.torch._chain import torch_chain
from jaxopt_adv.torch._docs import shared_arg_docs
from jaxopt_adv.torch._twin import torch_twin


class ScaleByAdagradState(NamedTuple):
    """State of :func:`scale_by_adagrad`."""

    count: chex.Array  # int32 scalar
    sum_of_squares: optax.Updates  # torch ``sum``


def adagrad_lr_scale(lr_decay: Any, count: chex.Array, torch_default_dtype: Any) -> chex.Array:
    r"""Step ``count + 1``'s :math:`1 / (1 + (t-1)\,\delta)` from torch's step counter
    :math:`t` (shared with the fused CPU step, which must compute it with the same ops)."""
    dtype = check_torch_default_dtype(torch_default_dtype)
    t = torch_step(optax.safe_increment(count), dtype)
    return 1 / (1 + (t - 1) * lr_decay)


@shared_arg_docs
def scale_by_adagrad(
    lr_decay: Any = 0.0,
    initial_accumulator_value: Any = 0.0,
    eps: Any = 1e-10,
    *,
    torch_default_dtype: Any = "float32",
) -> optax.GradientTransformationExtraArgs:
    r"""Adagrad's scaling with torch's eps placement and learning-rate decay.

    .. math::
      S_t = S_{t-1} + g_t^2, \quad
      \text{out}_t = \frac{1}{1 + (t-1)\,\delta}\, \frac{g_t}{\sqrt{S_t} + \epsilon}

    torch takes :math:`t` from its step counter, a 0-d tensor of its default dtype: under
    float32 (torch's default) the counter stops at ``2**24``, and so does :math:`t` here.

    Args:
      lr_decay: :math:`\delta`, ``>= 0``.
      initial_accumulator_value: :math:`S_0`, ``>= 0``.
      eps: added outside the square root, ``>= 0``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch import scale_by_adagrad
      >>> tx = scale_by_adagrad(eps=0.0)
      >>> state = tx.init(jnp.zeros(2))
      >>> u, state = tx.update(jnp.array([3.0, -4.0]), state)
      >>> u
      Array([ 1., -1.], dtype=float32)

    References:
      Duchi, Hazan, Singer, "Adaptive Subgradient Methods for Online Learning and
      Stochastic Optimization", JMLR 2011; mirrors ``torch.optim.Adagrad`` (torch 2.13).

    Warning:
      ``optax.adagrad`` puts eps *inside* the root (not configurable), starts the
      accumulator at 0.1 and has no ``lr_decay``.
    """
    check_nonnegative(lr_decay, "lr_decay")
    check_nonnegative(initial_accumulator_value, "initial_accumulator_value")
    check_nonnegative(eps, "eps", "epsilon")
    check_torch_default_dtype(torch_default_dtype)

    def init_fn(params: optax.Params) -> ScaleByAdagradState:
        return ScaleByAdagradState(
            count=jnp.zeros([], jnp.int32),
            sum_of_squares=jax.tree.map(
                lambda p: filled_like(p, initial_accumulator_value, None), params
            ),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        decay = adagrad_lr_scale(lr_decay, state.count, torch_default_dtype)

        def leaf(g, s):
            s = (s + g * g).astype(s.dtype)
            return (decay.astype(g.dtype) * g / (jnp.sqrt(s) + eps)).astype(g.dtype), s

        out, sums = tree_map_multi(leaf, 2, updates, state.sum_of_squares)
        return out, ScaleByAdagradState(optax.safe_increment(state.count), sums)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@torch_twin("Adagrad")
@shared_arg_docs
def adagrad(
    learning_rate: optax.ScalarOrSchedule = 1e-2,
    lr_decay: Any = 0.0,
    weight_decay: Any = 0.0,
    initial_accumulator_value: Any = 0.0,
    eps: Any = 1e-10,
    *,
    maximize: bool = False,
    torch_default_dtype: Any = "float32",
) -> optax.GradientTransformationExtraArgs:
    r"""Adagrad that reproduces ``torch.optim.Adagrad`` step for step.

    :math:`\theta_t = \theta_{t-1} - \eta_t\,\text{out}_t` with ``out`` from
    :func:`scale_by_adagrad` and coupled L2 ``weight_decay`` added to the gradient first.

    Args:
      learning_rate: scalar or schedule (torch ``lr``), default ``1e-2``.
      lr_decay: learning-rate decay, ``>= 0``.
      initial_accumulator_value: start of the sum of squares, ``>= 0``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxopt_adv
      >>> opt = jaxopt_adv.torch.adagrad(0.5, eps=0.0)
      >>> params = jnp.zeros(2)
      >>> state = opt.init(params)
      >>> updates, state = opt.update(jnp.array([3.0, -4.0]), state, params)
      >>> updates
      Array([-0.5,  0.5], dtype=float32)

    References:
      Duchi, Hazan, Singer, JMLR 2011; mirrors ``torch.optim.Adagrad`` (torch 2.13).

    Warning:
      ``optax.adagrad`` differs in eps placement, eps default (1e-7) and initial
      accumulator (0.1); it is about 1.4e-2 away from torch after 5 steps.
    """
    return torch_chain(
        scale_by_adagrad(
            lr_decay, initial_accumulator_value, eps, torch_default_dtype=torch_default_dtype
        ),
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        maximize=maximize,
    )
