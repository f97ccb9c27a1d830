"""Adam, AdamW and AMSGrad as ``torch.optim.Adam`` / ``torch.optim.AdamW`` compute them."""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax.numpy as jnp
import optax

from jaxopt_adv._common import (
    check_beta,
    check_nonnegative,
    check_torch_default_dtype,
    torch_decay_power,
    torch_step,
    tree_map_multi,
)
from jaxopt_adv.torch._chain import torch_chain
from jaxopt_adv.torch._docs import shared_arg_docs
from jaxopt_adv.torch._twin import torch_twin


class ScaleByAdamState(NamedTuple):
    """State of :func:`scale_by_adam`."""

    count: chex.Array  # int32 scalar
    mu: optax.Updates  # torch ``exp_avg``
    nu: optax.Updates  # torch ``exp_avg_sq``
    nu_max: optax.Updates  # torch ``max_exp_avg_sq`` (amsgrad); ``None`` leaves otherwise


def check_adam_args(b1: Any, b2: Any, eps: Any, torch_default_dtype: Any) -> None:
    """torch's checks for ``betas`` and ``eps``, and the ``torch_default_dtype`` argument,
    shared by the Adam family."""
    check_beta(b1, 0, "b1")
    check_beta(b2, 1, "b2")
    check_nonnegative(eps, "eps", "epsilon")
    check_torch_default_dtype(torch_default_dtype)


def zero_moments(params: optax.Params, mu_dtype: Any = None) -> tuple[optax.Updates, optax.Updates]:
    """Adam's first and second moments before the first step: zeros like ``params``, the
    first in ``mu_dtype`` when one is given."""
    return optax.tree.zeros_like(params, dtype=mu_dtype), optax.tree.zeros_like(params)


def adam_bias_corrections(
    b1: Any, b2: Any, count: chex.Array, torch_default_dtype: Any
) -> tuple[chex.Array, chex.Array]:
    r"""Step ``count``'s :math:`1-\beta_1^t` and :math:`1-\beta_2^t` (shared with the
    fused CPU step, which must compute them with the same ops)."""
    dtype = check_torch_default_dtype(torch_default_dtype)
    t = torch_step(count, dtype)
    return torch_decay_power(b1, t, dtype)[1], torch_decay_power(b2, t, dtype)[1]


def update_moments(g, m, v, b1, b2):
    """Adam's moment updates for one leaf, each kept in its own dtype."""
    m = (b1 * m + (1 - b1) * g).astype(m.dtype)
    v = (b2 * v + (1 - b2) * g * g).astype(v.dtype)
    return m, v


@shared_arg_docs
def scale_by_adam(
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    *,
    amsgrad: bool = False,
    mu_dtype: Any = None,
    torch_default_dtype: Any = "float32",
) -> optax.GradientTransformationExtraArgs:
    r"""Adam's scaling as torch computes it, with torch's AMSGrad as an option.

    .. math::
      m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
      v_t = \beta_2 v_{t-1} + (1-\beta_2) g_t^2, \quad
      \text{out}_t = \frac{m_t / (1-\beta_1^t)}{\sqrt{\hat v_t} / \sqrt{1-\beta_2^t} + \epsilon}

    with :math:`\hat v_t = v_t`, or with ``amsgrad`` the running max
    :math:`\hat v_t = \max(\hat v_{t-1}, v_t)` of the *raw* second moment.

    The bias corrections are torch's ``1 - beta**t`` in float64. In float32 they are
    computed as ``-expm1(t log beta)`` with the logarithm taken in double precision
    (torch evaluates them in Python doubles): this tracks torch to 1.5e-7 over 20 steps
    where ``optax.scale_by_adam`` (``1 - beta**t`` in float32) is 3e-6 away. With
    ``torch_default_dtype=None`` float64 runs take the ``expm1`` form too, which is the
    more accurate one where ``beta`` is close to 1 (1e-9 apart from torch at
    ``b2 = 1 - 1e-9``).

    Args:
      b1: first-moment decay, in ``[0, 1)``.
      b2: second-moment decay, in ``[0, 1)``.
      eps: added to the bias-corrected root, ``>= 0``.
      amsgrad: static; use torch's AMSGrad.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch import scale_by_adam
      >>> tx = scale_by_adam(amsgrad=True)
      >>> state = tx.init(jnp.zeros(2))
      >>> u, state = tx.update(jnp.array([1.0, -2.0]), state)
      >>> u
      Array([ 1., -1.], dtype=float32)

    References:
      Kingma, Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
      Reddi, Kale, Kumar, "On the Convergence of Adam and Beyond", ICLR 2018 (AMSGrad);
      mirrors ``torch.optim.Adam`` (torch 2.13).

    Warning:
      ``optax.scale_by_amsgrad`` takes the max over the bias-corrected moment (or, with
      ``bias_correction_nu=False``, drops the correction); neither equals torch's
      ``sqrt(max_s v_s) / sqrt(1 - b2^t)``.
    """
    check_adam_args(b1, b2, eps, torch_default_dtype)
    mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)

    def init_fn(params: optax.Params) -> ScaleByAdamState:
        mu, nu = zero_moments(params, mu_dtype)
        nu_max = optax.tree.zeros_like(params) if amsgrad else None
        return ScaleByAdamState(jnp.zeros([], jnp.int32), mu, nu, nu_max)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        count = optax.safe_increment(state.count)
        bc1, bc2 = adam_bias_corrections(b1, b2, count, torch_default_dtype)
        sqrt_bc2 = jnp.sqrt(bc2)

        def leaf(g, m, v, v_max):
            m, v = update_moments(g, m, v, b1, b2)
            v_max = jnp.maximum(v_max, v) if amsgrad else v
            denom = jnp.sqrt(v_max) / sqrt_bc2.astype(v.dtype) + eps
            out = (m / bc1.astype(m.dtype)) / denom
            return out.astype(g.dtype), m, v, v_max

        nu_max = state.nu_max if amsgrad else state.nu
        out, mu, nu, nu_max = tree_map_multi(leaf, 4, updates, state.mu, state.nu, nu_max)
        return out, ScaleByAdamState(count, mu, nu, nu_max if amsgrad else None)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@torch_twin("Adam")
@shared_arg_docs
def adam(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    *,
    amsgrad: bool = False,
    maximize: bool = False,
    decoupled_weight_decay: bool = False,
    mu_dtype: Any = None,
    torch_default_dtype: Any = "float32",
) -> optax.GradientTransformationExtraArgs:
    r"""Adam that reproduces ``torch.optim.Adam`` step for step.

    .. math::
      g_t \leftarrow \pm g_t + \lambda\theta, \quad
      \theta_t = \theta_{t-1} - \eta_t \frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}

    (with ``decoupled_weight_decay=True`` the decay is
    :math:`\theta \leftarrow \theta(1 - \eta_t\lambda)` instead, i.e. AdamW.)

    Args:
      learning_rate: scalar or schedule (torch ``lr``), default ``1e-3``.
      weight_decay: L2 coefficient, coupled into the gradient unless
        ``decoupled_weight_decay``; ``>= 0``.
      amsgrad: static; torch's AMSGrad (see :func:`scale_by_adam`).
      decoupled_weight_decay: static; decay the weights as AdamW does.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxopt_adv
      >>> opt = jaxopt_adv.torch.adam(0.1, weight_decay=0.5)
      >>> params = jnp.ones(2)
      >>> state = opt.init(params)
      >>> updates, state = opt.update(jnp.ones(2), state, params)
      >>> updates
      Array([-0.1, -0.1], dtype=float32)

    References:
      Kingma, Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
      mirrors ``torch.optim.Adam`` (torch 2.13).

    Warning:
      ``optax.adam`` computes torch's rule only without weight decay and amsgrad: torch's
      ``weight_decay`` is *coupled* L2 (``optax.adamw`` is the wrong pairing), and
      ``optax.amsgrad`` takes its max over a different quantity. In float32 ``optax.adam``
      is also 20x further from torch than this one (see :func:`scale_by_adam`).
    """
    return torch_chain(
        scale_by_adam(
            b1,
            b2,
            eps,
            amsgrad=amsgrad,
            mu_dtype=mu_dtype,
            torch_default_dtype=torch_default_dtype,
        ),
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        maximize=maximize,
    )


@torch_twin("AdamW")
@shared_arg_docs
def adamw(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    weight_decay: Any = 1e-2,
    *,
    amsgrad: bool = False,
    maximize: bool = False,
    mu_dtype: Any = None,
    torch_default_dtype: Any = "float32",
) -> optax.GradientTransformationExtraArgs:
    r"""AdamW that reproduces ``torch.optim.AdamW``: Adam with decoupled weight decay.

    .. math::
      \theta_t = \theta_{t-1}(1 - \eta_t\lambda)
        - \eta_t \frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}

    Args:
      learning_rate: scalar or schedule (torch ``lr``), default ``1e-3``.
      weight_decay: decoupled decay, default ``1e-2`` as in torch; ``>= 0``.
      amsgrad: static; torch's AMSGrad.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; it needs ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxopt_adv
      >>> opt = jaxopt_adv.torch.adamw(0.1, weight_decay=0.5)
      >>> params = jnp.ones(2)
      >>> state = opt.init(params)
      >>> updates, state = opt.update(jnp.ones(2), state, params)
      >>> updates
      Array([-0.15, -0.15], dtype=float32)

    References:
      Loshchilov, Hutter, "Decoupled Weight Decay Regularization", ICLR 2019;
      mirrors ``torch.optim.AdamW`` (torch 2.13).

    Warning:
      ``optax.adamw`` computes the same rule but defaults to ``weight_decay=1e-4``;
      torch's default is ``1e-2``.
    """
    return adam(
        learning_rate,
        b1,
        b2,
        eps,
        weight_decay,
        amsgrad=amsgrad,
        maximize=maximize,
        decoupled_weight_decay=True,
        mu_dtype=mu_dtype,
        torch_default_dtype=torch_default_dtype,
    )
