"""RAdam with torch's eps placement (``torch.optim.RAdam``)."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import chex
import jax.numpy as jnp
import optax

from jaxopt_adv._common import (
    check_torch_default_dtype,
    decay_power,
    log_of,
    torch_decay_power,
    torch_step,
    tree_map_multi,
)
from jaxopt_adv.torch._chain import torch_chain
from jaxopt_adv.torch._docs import shared_arg_docs
from jaxopt_adv.torch._twin import torch_twin
from jaxopt_adv.torch.adam import check_adam_args, update_moments, zero_moments


class ScaleByRadamState(NamedTuple):
    """State of :func:`scale_by_radam`."""

    count: chex.Array  # int32 scalar
    mu: optax.Updates  # torch ``exp_avg``
    nu: optax.Updates  # torch ``exp_avg_sq``


# Even Bernoulli numbers B_2 ... B_12, for the series of rho_t below.
_BERNOULLI_EVEN = (1 / 6, -1 / 30, 1 / 42, -1 / 30, 5 / 66, -691 / 2730)


def _rho(b2: Any, t: chex.Array) -> chex.Array:
    """``rho_t = rho_inf - 2 t b2^t / (1 - b2^t)`` without float32 cancellation.

    Near the rectification threshold rho_t ~ 5 is the difference of two numbers ~2/(1-b2)
    (2000 for b2=0.999), which float32 cannot resolve to 1e-5. With ``h = -log b2`` and
    ``z = t h`` the exact series ``rho_t = t + 2 sum_n B_2n (h^2n - z^2n) / (h (2n)!)``
    (convergent for ``z < 2 pi``; six terms are exact to rounding for ``z < 0.5``, where
    it is used) has no cancellation.
    """
    h = -log_of(b2)
    z = t * h
    series = t
    for n, bernoulli in enumerate(_BERNOULLI_EVEN, start=1):
        series = series + 2 * bernoulli * (h ** (2 * n) - z ** (2 * n)) / (
            h * math.factorial(2 * n)
        )
    power, complement = decay_power(b2, t)
    direct = 2 / (1 - b2) - 1 - 2 * t * power / complement
    return jnp.where(z < 0.5, series, direct)


def rectification(b2: Any, t: chex.Array, torch_default_dtype: Any = "float32") -> chex.Array:
    """The rectification factor r_t where the variance is tractable (rho_t > 5), else 0.

    Where rho_t > 5, r_t^2 > 3 / ((rho_inf - 4)(rho_inf - 2)) > 3 (1 - b2)^2 / 4, which
    is far from underflowing for any b2 < 1 of the dtype, so ``r_t > 0`` is the
    tractability test. Keeping that test inside the square root's operand lets XLA
    compute rho_t once, in the scalar computation that ends in the (expensive) root:
    a separate boolean would pull the cheap series of rho_t into every leaf's
    elementwise loop. ``jaxopt_adv.fast``'s fused step relies on this.

    In float64, unless ``torch_default_dtype`` is ``None``, rho_t is torch's
    ``rho_inf - 2 t b2^t / (1 - b2^t)`` in doubles, cancellation included: with
    ``b2 = 1 - 1e-9`` torch's doubles give rho_t = 2t - 1 over the first steps where it
    is t to within 1e-7 in exact arithmetic, so torch (and this) rectifies from step 4, the
    accurate :func:`_rho` (``torch_default_dtype=None``, and float32 runs) from step 6.
    """
    rho_inf = 2 / (1 - b2) - 1
    dtype = check_torch_default_dtype(torch_default_dtype)
    if dtype is None or jnp.dtype(t.dtype) != jnp.float64:
        rho_t = _rho(b2, t)
    else:
        power, complement = torch_decay_power(b2, t, dtype)
        rho_t = rho_inf - 2 * t * power / complement
    ratio = (rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)
    # the discarded branch may be inf or NaN (rho_t near 0); 0 marks it
    return jnp.sqrt(jnp.where(rho_t > 5, ratio, 0))


def radam_scalars(
    b1: Any, b2: Any, count: chex.Array, torch_default_dtype: Any
) -> tuple[chex.Array, chex.Array, chex.Array]:
    r"""Step ``count``'s :math:`1-\beta_1^t`, :math:`r_t` and
    :math:`r_t\sqrt{1-\beta_2^t}` (shared with the fused CPU step, which must compute
    them with the same ops)."""
    dtype = check_torch_default_dtype(torch_default_dtype)
    t = torch_step(count, dtype)
    bc1 = torch_decay_power(b1, t, dtype)[1]
    rect = rectification(b2, t, torch_default_dtype)
    return bc1, rect, rect * jnp.sqrt(torch_decay_power(b2, t, dtype)[1])


@shared_arg_docs
def scale_by_radam(
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    *,
    mu_dtype: Any = None,
    torch_default_dtype: Any = "float32",
) -> optax.GradientTransformationExtraArgs:
    r"""Rectified Adam's scaling, as torch computes it.

    .. math::
      \rho_\infty = \frac{2}{1-\beta_2} - 1, \quad
      \rho_t = \rho_\infty - \frac{2t\beta_2^t}{1-\beta_2^t}

      \text{out}_t = \hat m_t\, r_t \frac{\sqrt{1-\beta_2^t}}{\sqrt{v_t} + \epsilon}
      \ \text{if}\ \rho_t > 5, \ \text{else}\ \hat m_t,
      \quad r_t = \sqrt{\frac{(\rho_t-4)(\rho_t-2)\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\rho_t}}

    Args:
      b1: first-moment decay, in ``[0, 1)``.
      b2: second-moment decay, in ``[0, 1)``.
      eps: added to the *raw* root :math:`\sqrt{v_t}`, ``>= 0``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch import scale_by_radam
      >>> tx = scale_by_radam()
      >>> state = tx.init(jnp.zeros(2))
      >>> u, state = tx.update(jnp.array([2.0, -1.0]), state)
      >>> u  # no rectification yet: the bias-corrected momentum
      Array([ 2., -1.], dtype=float32)

    References:
      Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond", ICLR 2020;
      mirrors ``torch.optim.RAdam`` (torch 2.13).

    Warning:
      ``optax.scale_by_radam`` adds ``eps`` to :math:`\sqrt{\hat v_t}`; torch adds it to
      :math:`\sqrt{v_t}`, an effective eps :math:`1/\sqrt{1-\beta_2^t}` times larger
      (13x at step 6 with :math:`\beta_2=0.999`). optax also rectifies at
      :math:`\rho_t \ge 5`, torch at :math:`\rho_t > 5`.
    """
    check_adam_args(b1, b2, eps, torch_default_dtype)
    mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)

    def init_fn(params: optax.Params) -> ScaleByRadamState:
        return ScaleByRadamState(jnp.zeros([], jnp.int32), *zero_moments(params, mu_dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        count = optax.safe_increment(state.count)
        bc1, rect, rect_scale = radam_scalars(b1, b2, count, torch_default_dtype)

        def leaf(g, m, v):
            m, v = update_moments(g, m, v, b1, b2)
            m_hat = m / bc1.astype(m.dtype)
            adaptive = rect_scale.astype(v.dtype) / (jnp.sqrt(v) + eps)
            out = jnp.where(rect > 0, m_hat * adaptive, m_hat)
            return out.astype(g.dtype), m, v

        out, mu, nu = tree_map_multi(leaf, 3, updates, state.mu, state.nu)
        return out, ScaleByRadamState(count, mu, nu)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@torch_twin("RAdam")
@shared_arg_docs
def radam(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    *,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
    mu_dtype: Any = None,
    torch_default_dtype: Any = "float32",
) -> optax.GradientTransformationExtraArgs:
    r"""RAdam that reproduces ``torch.optim.RAdam`` step for step.

    :math:`\theta_t = \theta_{t-1} - \eta_t\,\text{out}_t` with ``out`` from
    :func:`scale_by_radam`; weight decay is coupled L2, or decoupled with
    ``decoupled_weight_decay=True``.

    Args:
      learning_rate: scalar or schedule (torch ``lr``), default ``1e-3``.
      eps: added to the raw root, ``>= 0``.
      weight_decay: L2 coefficient, ``>= 0``.
      decoupled_weight_decay: static; AdamW-style decay.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxopt_adv
      >>> opt = jaxopt_adv.torch.radam(0.1)
      >>> params = jnp.zeros(2)
      >>> state = opt.init(params)
      >>> updates, state = opt.update(jnp.array([2.0, -1.0]), state, params)
      >>> updates
      Array([-0.2,  0.1], dtype=float32)

    References:
      Liu et al., ICLR 2020; mirrors ``torch.optim.RAdam`` (torch 2.13).

    Warning:
      ``optax.radam`` places ``eps`` differently (see :func:`scale_by_radam`); the gap is
      about 2e-9 after 10 steps at ``eps=1e-8`` but 2e-4 at ``eps=1e-3``.
    """
    return torch_chain(
        scale_by_radam(b1, b2, eps, mu_dtype=mu_dtype, torch_default_dtype=torch_default_dtype),
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        maximize=maximize,
    )
