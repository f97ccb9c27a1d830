"""NAdam with torch's momentum-decay schedule (``torch.optim.NAdam``)."""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax.numpy as jnp
import optax

from jaxopt_adv._common import (
    check_nonnegative,
    check_torch_default_dtype,
    scalar_dtype,
    torch_decay_power,
    torch_step,
    tree_map_multi,
)
from jaxopt_adv.torch._chain import torch_chain
from jaxopt_adv.torch._docs import shared_arg_docs
from jaxopt_adv.torch._twin import torch_twin
from jaxopt_adv.torch.adam import check_adam_args, update_moments, zero_moments


class ScaleByNadamState(NamedTuple):
    """State of :func:`scale_by_nadam`."""

    count: chex.Array  # int32 scalar
    mu_product: chex.Array  # scalar: prod_{i<=t} mu_i (torch ``mu_product``)
    mu: optax.Updates  # torch ``exp_avg``
    nu: optax.Updates  # torch ``exp_avg_sq``


def nadam_coefficients(
    b1: Any,
    b2: Any,
    momentum_decay: Any,
    count: chex.Array,
    mu_product: chex.Array,
    torch_default_dtype: Any = "float32",
) -> tuple[chex.Array, chex.Array, chex.Array, chex.Array]:
    r"""Step ``count``'s scalars, in ``mu_product``'s dtype: the new momentum product
    :math:`\Pi_t`, the gradient's and the moment's coefficients and :math:`1-\beta_2^t`
    (shared with the fused CPU step, which must compute them with the same ops).

    torch keeps :math:`\Pi_t` in a 0-d tensor of its default dtype and multiplies it by
    :math:`\mu_t` in that dtype; with ``torch_default_dtype`` float32 the product is
    computed and held in float32 (its value, in ``mu_product``'s dtype), as torch's is.
    """
    dtype = check_torch_default_dtype(torch_default_dtype)
    t = torch_step(count, dtype).astype(mu_product.dtype)
    mu_t = b1 * (1 - 0.5 * torch_decay_power(0.96, t * momentum_decay, dtype)[0])
    mu_next = b1 * (1 - 0.5 * torch_decay_power(0.96, (t + 1) * momentum_decay, dtype)[0])
    if dtype is None or dtype.itemsize >= mu_product.dtype.itemsize:
        mu_product = mu_product * mu_t
    else:
        mu_product = (mu_product.astype(dtype) * mu_t.astype(dtype)).astype(mu_product.dtype)
    grad_coef = (1 - mu_t) / (1 - mu_product)
    mom_coef = mu_next / (1 - mu_product * mu_next)
    _, bc2 = torch_decay_power(b2, t, dtype)
    return mu_product, grad_coef, mom_coef, bc2


@shared_arg_docs
def scale_by_nadam(
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    momentum_decay: Any = 4e-3,
    *,
    mu_dtype: Any = None,
    torch_default_dtype: Any = "float32",
) -> optax.GradientTransformationExtraArgs:
    r"""NAdam's scaling with Dozat's momentum schedule, as torch computes it.

    .. math::
      \mu_t = \beta_1\left(1 - \tfrac12\, 0.96^{t\psi}\right), \quad
      \Pi_t = \Pi_{t-1}\mu_t, \quad
      d_t = \sqrt{v_t / (1-\beta_2^t)} + \epsilon

      \text{out}_t = \frac{1-\mu_t}{1-\Pi_t}\frac{g_t}{d_t}
        + \frac{\mu_{t+1}}{1-\Pi_t\mu_{t+1}}\frac{m_t}{d_t}

    with :math:`m_t, v_t` Adam's moments (``m`` decays with :math:`\beta_1`, not
    :math:`\mu_t`).

    Args:
      b1: first-moment decay, in ``[0, 1)``.
      b2: second-moment decay, in ``[0, 1)``.
      momentum_decay: :math:`\psi`, ``>= 0`` (torch default ``4e-3``).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch import scale_by_nadam
      >>> tx = scale_by_nadam()
      >>> state = tx.init(jnp.zeros(2))
      >>> u, state = tx.update(jnp.ones(2), state)
      >>> state.mu_product
      Array(0.45007, dtype=float32)

    References:
      Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop;
      mirrors ``torch.optim.NAdam`` (torch 2.13).

    Warning:
      ``optax.nadam`` uses :math:`\mu_t \equiv \beta_1` (the limit
      :math:`\psi \to \infty`); with torch's default :math:`\psi = 0.004` the momentum is
      about 0.45 early in training, so ``optax.nadam`` is a different optimizer.
    """
    check_adam_args(b1, b2, eps, torch_default_dtype)
    check_nonnegative(momentum_decay, "momentum_decay")
    mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)

    def init_fn(params: optax.Params) -> ScaleByNadamState:
        mu, nu = zero_moments(params, mu_dtype)
        return ScaleByNadamState(jnp.zeros([], jnp.int32), jnp.ones([], scalar_dtype()), mu, nu)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        count = optax.safe_increment(state.count)
        mu_product, grad_coef, mom_coef, bc2 = nadam_coefficients(
            b1, b2, momentum_decay, count, state.mu_product, torch_default_dtype
        )

        def leaf(g, m, v):
            m, v = update_moments(g, m, v, b1, b2)
            denom = jnp.sqrt(v / bc2.astype(v.dtype)) + eps
            out = (grad_coef.astype(g.dtype) * g + mom_coef.astype(m.dtype) * m) / denom
            return out.astype(g.dtype), m, v

        out, mu, nu = tree_map_multi(leaf, 3, updates, state.mu, state.nu)
        return out, ScaleByNadamState(count, mu_product.astype(state.mu_product.dtype), mu, nu)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@torch_twin("NAdam")
@shared_arg_docs
def nadam(
    learning_rate: optax.ScalarOrSchedule = 2e-3,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    momentum_decay: Any = 4e-3,
    *,
    decoupled_weight_decay: bool = False,
    maximize: bool = False,
    mu_dtype: Any = None,
    torch_default_dtype: Any = "float32",
) -> optax.GradientTransformationExtraArgs:
    r"""NAdam that reproduces ``torch.optim.NAdam`` step for step.

    :math:`\theta_t = \theta_{t-1} - \eta_t\,\text{out}_t` with ``out`` from
    :func:`scale_by_nadam`; weight decay is coupled L2, or decoupled
    (:math:`\theta(1-\eta_t\lambda)`, "NAdamW") with ``decoupled_weight_decay=True``.

    Args:
      learning_rate: scalar or schedule (torch ``lr``), default ``2e-3``.
      weight_decay: L2 coefficient, ``>= 0``.
      momentum_decay: :math:`\psi`, ``>= 0``.
      decoupled_weight_decay: static; AdamW-style decay.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxopt_adv
      >>> opt = jaxopt_adv.torch.nadam(0.1)
      >>> params = jnp.zeros(2)
      >>> state = opt.init(params)
      >>> updates, state = opt.update(jnp.ones(2), state, params)
      >>> updates.round(4)
      Array([-0.1056, -0.1056], dtype=float32)

    References:
      Dozat, ICLR 2016 workshop; mirrors ``torch.optim.NAdam`` (torch 2.13).

    Warning:
      ``optax.nadam`` / ``optax.nadamw`` lack the momentum-decay schedule (see
      :func:`scale_by_nadam`).
    """
    return torch_chain(
        scale_by_nadam(
            b1, b2, eps, momentum_decay, mu_dtype=mu_dtype, torch_default_dtype=torch_default_dtype
        ),
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        maximize=maximize,
    )
