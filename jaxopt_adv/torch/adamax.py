"""Adamax as ``torch.optim.Adamax`` computes it, composed from optax blocks."""

from __future__ import annotations

from typing import Any

import optax

from jaxopt_adv.torch._chain import torch_chain
from jaxopt_adv.torch._twin import torch_twin
from jaxopt_adv.torch.adam import check_adam_args


@torch_twin("Adamax")
def adamax(
    learning_rate: optax.ScalarOrSchedule = 2e-3,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    *,
    maximize: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Adamax that reproduces ``torch.optim.Adamax`` step for step.

    .. math::
      m_t = \beta_1 m_{t-1} + (1-\beta_1) g_t, \quad
      u_t = \max(\beta_2 u_{t-1}, |g_t| + \epsilon), \quad
      \theta_t = \theta_{t-1} - \frac{\eta_t}{1-\beta_1^t}\, \frac{m_t}{u_t}

    with coupled L2 ``weight_decay`` added to the gradient first. It is
    ``chain(optax.scale_by_adamax, scale_by_learning_rate)``: optax places ``eps`` inside
    the max exactly as torch does.

    Args:
      learning_rate: scalar or schedule (torch ``lr``), default ``2e-3``.
      b1: torch ``betas[0]``, in ``[0, 1)``.
      b2: torch ``betas[1]``, in ``[0, 1)``.
      eps: added to ``|g|`` inside the max, ``>= 0``.
      weight_decay: coupled L2 coefficient, ``>= 0``.
      maximize: static; maximise instead of minimise.

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
    check_adam_args(b1, b2, eps)
    return torch_chain(
        optax.scale_by_adamax(b1, b2, eps),
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        maximize=maximize,
    )
