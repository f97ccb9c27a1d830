"""Adafactor as ``torch.optim.Adafactor`` computes it (not ``optax.adafactor``'s variant)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from jaxopt_adv._common import (
    NO_PARAMS_MSG,
    check_interval,
    check_learning_rate,
    check_nonnegative,
    check_torch_default_dtype,
    check_tuple,
    filled_like,
    torch_step,
    tree_map_multi,
)
from jaxopt_adv.grouping import leaf_slots, tree_map_grouped
from jaxopt_adv.torch._chain import FINAL_UPDATE, torch_chain
from jaxopt_adv.torch._docs import shared_arg_docs
from jaxopt_adv.torch._twin import torch_twin
from jaxopt_adv.torch.muon import lerp


class ScaleByAdafactorState(NamedTuple):
    """State of :func:`adafactor`'s core; a leaf's unused fields are ``None``."""

    count: chex.Array  # int32 scalar
    row_var: optax.Updates  # torch ``row_var`` (shape ``[..., R, 1]``), leaves of >= 2 dims
    col_var: optax.Updates  # torch ``col_var`` (shape ``[..., 1, C]``), leaves of >= 2 dims
    variance: optax.Updates  # torch ``variance``, 0-D and 1-D leaves
    slots: optax.Updates  # int32 scalar per leaf: its place among the leaves of its shape


def _rms(x: jax.Array) -> jax.Array:
    """``norm(x) / sqrt(numel)``, as torch writes it."""
    return jnp.sqrt(jnp.sum(jnp.square(x))) / math.sqrt(max(x.size, 1))


def _init_leaf(p: jax.Array) -> tuple[Any, Any, Any]:
    if p.ndim > 1:  # placed like the param on the axes they keep (explicit sharding)
        batch = tuple(range(p.ndim - 2))
        row = filled_like(p, 0.0, p.dtype, axes=(*batch, p.ndim - 2, None))
        col = filled_like(p, 0.0, p.dtype, axes=(*batch, None, p.ndim - 1))
        return row, col, None
    return None, None, jnp.zeros_like(p)


def scale_by_torch_adafactor(
    learning_rate: optax.ScalarOrSchedule,
    beta2_decay: Any,
    eps: tuple[Any, Any],
    d: Any,
    weight_decay: Any,
    torch_default_dtype: Any = "float32",
) -> optax.GradientTransformationExtraArgs:
    """torch's Adafactor step (learning rate and weight decay included); see :func:`adafactor`."""
    step_dtype = check_torch_default_dtype(torch_default_dtype)

    def init_fn(params: optax.Params) -> ScaleByAdafactorState:
        row, col, variance = tree_map_multi(_init_leaf, 3, params)
        count = jnp.zeros([], jnp.int32)
        return ScaleByAdafactorState(count, row, col, variance, leaf_slots(params))

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(NO_PARAMS_MSG)
        count = optax.safe_increment(state.count)
        t = torch_step(count, step_dtype)
        lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
        lr = jnp.asarray(lr, t.dtype)
        one_minus_beta2 = jnp.power(t, beta2_decay)
        rho = jnp.minimum(lr, 1 / jnp.sqrt(t))

        def leaf(g, p, row, col, variance):
            eps1 = jnp.finfo(p.dtype).eps if eps[0] is None else eps[0]
            alpha = jnp.maximum(eps[1], _rms(p).astype(t.dtype)) * rho
            g = g.astype(p.dtype)
            w = one_minus_beta2.astype(p.dtype)
            if p.ndim > 1:
                row_mean = jnp.square(jnp.linalg.norm(g, axis=-1, keepdims=True)) / g.shape[-1]
                col_mean = jnp.square(jnp.linalg.norm(g, axis=-2, keepdims=True)) / g.shape[-2]
                row, col = lerp(row, row_mean, w), lerp(col, col_mean, w)
                scale = jnp.maximum(jnp.mean(row, axis=-2, keepdims=True), eps1)
                estimate = (row * col) / scale
            else:
                variance = lerp(variance, g * g, w)
                estimate = variance
            direction = jax.lax.rsqrt(jnp.maximum(estimate, eps1 * eps1)) * g
            denom = jnp.maximum(1.0, _rms(direction).astype(t.dtype) / d)
            step = (alpha / denom).astype(p.dtype) * direction
            out = -(lr * weight_decay).astype(p.dtype) * p - step
            return out, row, col, variance

        moments = (state.row_var, state.col_var, state.variance)
        out, row, col, variance = tree_map_grouped(leaf, 4, state.slots, updates, params, *moments)
        return out, ScaleByAdafactorState(count, row, col, variance, state.slots)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@torch_twin("Adafactor")
@shared_arg_docs
def adafactor(
    learning_rate: optax.ScalarOrSchedule = 1e-2,
    beta2_decay: Any = -0.8,
    eps: tuple[Any, Any] = (None, 1e-3),
    d: Any = 1.0,
    weight_decay: Any = 0.0,
    *,
    maximize: bool = False,
    torch_default_dtype: Any = "float32",
) -> optax.GradientTransformationExtraArgs:
    r"""Adafactor that reproduces ``torch.optim.Adafactor`` step for step.

    A leaf of two or more dimensions keeps factored second moments over its last two
    (a row and a column vector per leading index); 0-D and 1-D leaves keep a full one:

    .. math::
      \hat\beta_{2,t} = 1 - t^{c}, \quad
      R_t = \mathrm{lerp}(R_{t-1}, \overline{g_t^2}^{\,\text{cols}}, t^{c}), \quad
      C_t = \mathrm{lerp}(C_{t-1}, \overline{g_t^2}^{\,\text{rows}}, t^{c}), \quad
      \hat V_t = \frac{R_t C_t}{\max(\bar R_t, \epsilon_1)}

    .. math::
      U_t = \frac{g_t}{\sqrt{\max(\hat V_t, \epsilon_1^2)}}, \quad
      \theta_t = \theta_{t-1}(1 - \eta\lambda) - \frac{\max(\epsilon_2, \mathrm{RMS}(\theta_{t-1}))
        \min(\eta, t^{-1/2})}{\max(1, \mathrm{RMS}(U_t) / d)}\, U_t

    with :math:`c` = ``beta2_decay`` and :math:`\epsilon_1` = ``eps[0]`` (default: the
    machine epsilon of the leaf's dtype).

    torch evaluates :math:`t^c` and :math:`\min(\eta, t^{-1/2})` in Python doubles from its
    step counter, a 0-d tensor of its default dtype: under float32 (torch's default) the
    counter stops at ``2**24``, and so does :math:`t` here (after ``1.5 * 2**24`` steps
    torch's relative step is up to 1.22 times the exact count's);
    ``torch_default_dtype=None`` takes the exact count.

    Args:
      learning_rate: scalar or schedule (torch ``lr``), default ``1e-2``; the relative
        step is ``min(learning_rate, 1/sqrt(t))``, so it is a cap, not a factor.
      beta2_decay: exponent ``c <= 0`` of the second-moment weight ``t^c``.
      eps: ``(eps1, eps2)``: ``eps1 >= 0`` (or ``None``) floors the variance estimate,
        ``eps2 >= 0`` the parameter scale.
      d: clipping threshold of the update's RMS, ``>= 1``.
      weight_decay: decoupled decay ``theta (1 - lr wd)``, ``>= 0``.
      torch_default_dtype: ``"float32"`` (default), ``"float64"`` or ``None``: the
        ``torch.get_default_dtype()`` of the torch run whose step counter to reproduce
        (see :mod:`jaxopt_adv.torch`); ``None``: the exact count.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; it needs ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxopt_adv
      >>> opt = jaxopt_adv.torch.adafactor(0.1)
      >>> params = jnp.full((2, 2), 2.0)
      >>> state = opt.init(params)
      >>> updates, state = opt.update(jnp.ones((2, 2)), state, params)
      >>> updates
      Array([[-0.2, -0.2],
             [-0.2, -0.2]], dtype=float32)

    References:
      Shazeer, Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost",
      ICML 2018; mirrors ``torch.optim.Adafactor`` (torch 2.13).

    Warning:
      ``optax.adafactor`` is another variant: it factors only leaves whose two largest
      dimensions are >= 128 (those two, not the last two), adds ``1e-30`` to
      :math:`g^2` instead of clamping the estimate, and multiplies its update by the
      learning rate instead of capping the relative step at ``min(lr, 1/sqrt(t))``.
    """
    check_learning_rate(learning_rate)
    check_interval(beta2_decay, "beta2_decay", -math.inf, 0.0, low_open=True)
    check_tuple(eps, "eps", 2)
    if eps[0] is not None:
        check_nonnegative(eps[0], "eps[0]")
    check_nonnegative(eps[1], "eps[1]")
    check_interval(d, "d", 1.0, math.inf, high_open=True)
    check_nonnegative(weight_decay, "weight_decay")
    return torch_chain(
        scale_by_torch_adafactor(
            learning_rate, beta2_decay, tuple(eps), d, weight_decay, torch_default_dtype
        ),
        learning_rate=FINAL_UPDATE,
        maximize=maximize,
    )
