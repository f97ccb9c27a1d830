"""Rprop as ``torch.optim.Rprop`` computes it (the Rprop- variant)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from jaxopt_adv._common import (
    check_interval,
    check_learning_rate,
    check_nonnegative,
    check_tuple,
    filled_like,
    is_concrete_number,
    tree_map_multi,
)
from jaxopt_adv.torch._chain import FINAL_UPDATE, torch_chain
from jaxopt_adv.torch._docs import shared_arg_docs
from jaxopt_adv.torch._twin import torch_twin


class ScaleByRpropState(NamedTuple):
    """State of :func:`scale_by_rprop`."""

    prev: optax.Updates  # previous gradient, zeroed where its sign flipped (torch ``prev``)
    step_size: optax.Updates  # per-element step sizes (torch ``step_size``)


def _check_rprop_args(etas: tuple[Any, Any], step_sizes: tuple[Any, Any]) -> None:
    check_tuple(etas, "etas", 2)
    check_interval(etas[0], "etas[0]", 0.0, 1.0, low_open=True, high_open=True)
    check_interval(etas[1], "etas[1]", 1.0, math.inf, low_open=True, high_open=True)
    check_tuple(step_sizes, "step_sizes", 2)
    low, high = step_sizes
    check_nonnegative(low, "step_sizes[0]")
    # the maximum may be inf (no upper clamp) but not below the minimum
    check_interval(high, "step_sizes[1]", low if is_concrete_number(low) else 0.0, math.inf)


def scale_by_rprop(
    learning_rate: optax.ScalarOrSchedule = 1e-2,
    etas: tuple[Any, Any] = (0.5, 1.2),
    step_sizes: tuple[Any, Any] = (1e-6, 50.0),
) -> optax.GradientTransformationExtraArgs:
    r"""Rprop's sign-based steps, as torch computes them (an ascent direction).

    .. math::
      s = \operatorname{sign}(g_t\, p_{t-1}), \quad
      \Delta_t = \operatorname{clip}(\Delta_{t-1}\cdot
        \{\eta_+ \text{ if } s>0;\ \eta_- \text{ if } s<0;\ 1\}, \Delta_{\min}, \Delta_{\max})

      p_t = 0 \text{ where } s<0 \text{ else } g_t, \qquad
      \text{out}_t = \operatorname{sign}(p_t)\,\Delta_t

    Args:
      learning_rate: the initial step size :math:`\Delta_0`; a schedule is read once, at
        step 0 (torch also reads ``lr`` only when it creates the state).
      etas: :math:`(\eta_-, \eta_+)` with :math:`0 < \eta_- < 1 < \eta_+`.
      step_sizes: :math:`(\Delta_{\min}, \Delta_{\max})`.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch import scale_by_rprop
      >>> tx = scale_by_rprop(0.1)
      >>> state = tx.init(jnp.zeros(2))
      >>> u, state = tx.update(jnp.array([1.0, -3.0]), state)
      >>> u, state = tx.update(jnp.array([2.0, 3.0]), state)
      >>> u, state.step_size
      (Array([0.12, 0.  ], dtype=float32), Array([0.12, 0.05], dtype=float32))

    References:
      Riedmiller, Braun, "A direct adaptive method for faster backpropagation learning:
      the RPROP algorithm", ICNN 1993; mirrors ``torch.optim.Rprop`` (torch 2.13).

    Warning:
      ``optax.scale_by_rprop`` leaves the step size unclamped where the sign product is
      0 and returns a lagged update; it does not match torch.
    """
    check_learning_rate(learning_rate)
    _check_rprop_args(etas, step_sizes)
    eta_minus, eta_plus = etas
    step_min, step_max = step_sizes

    def init_fn(params: optax.Params) -> ScaleByRpropState:
        initial = learning_rate(0) if callable(learning_rate) else learning_rate
        return ScaleByRpropState(
            prev=optax.tree.zeros_like(params),
            step_size=jax.tree.map(lambda p: filled_like(p, initial, None), params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args

        def leaf(g, prev, step):
            s = jnp.sign(g * prev)
            factor = jnp.where(s > 0, eta_plus, jnp.where(s < 0, eta_minus, 1))
            step = jnp.clip(step * factor, step_min, step_max).astype(step.dtype)
            g = jnp.where(s < 0, 0, g).astype(g.dtype)
            return (jnp.sign(g) * step).astype(g.dtype), g.astype(prev.dtype), step

        out, prev, step = tree_map_multi(leaf, 3, updates, state.prev, state.step_size)
        return out, ScaleByRpropState(prev, step)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@torch_twin("Rprop")
@shared_arg_docs
def rprop(
    learning_rate: optax.ScalarOrSchedule = 1e-2,
    etas: tuple[Any, Any] = (0.5, 1.2),
    step_sizes: tuple[Any, Any] = (1e-6, 50.0),
    *,
    maximize: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Rprop that reproduces ``torch.optim.Rprop`` step for step.

    :math:`\theta_t = \theta_{t-1} - \text{out}_t` with ``out`` from
    :func:`scale_by_rprop` (the step sizes carry the learning rate).

    Args:
      learning_rate: initial step size (torch ``lr``), default ``1e-2``; a schedule is
        read once, at step 0.
      etas: multiplicative decrease and increase factors, default ``(0.5, 1.2)``.
      step_sizes: minimal and maximal step size, default ``(1e-6, 50)``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxopt_adv
      >>> opt = jaxopt_adv.torch.rprop(0.1)
      >>> params = jnp.zeros(2)
      >>> state = opt.init(params)
      >>> updates, state = opt.update(jnp.array([1.0, -3.0]), state, params)
      >>> updates
      Array([-0.1,  0.1], dtype=float32)

    References:
      Riedmiller, Braun, ICNN 1993; mirrors ``torch.optim.Rprop`` (torch 2.13).

    Warning:
      ``optax.rprop`` is a different variant (see :func:`scale_by_rprop`).
    """
    return torch_chain(
        scale_by_rprop(learning_rate, etas, step_sizes),
        optax.scale(-1.0),
        learning_rate=FINAL_UPDATE,
        maximize=maximize,
    )
