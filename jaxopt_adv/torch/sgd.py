"""SGD with torch's momentum, dampening and Nesterov rules (``torch.optim.SGD``)."""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from jaxopt_adv._common import (
    check,
    check_interval,
    check_nonnegative,
    is_concrete_number,
)
from jaxopt_adv.torch._chain import torch_chain
from jaxopt_adv.torch._twin import torch_twin


class SgdMomentumState(NamedTuple):
    """State of :func:`scale_by_sgd_momentum`."""

    count: chex.Array  # int32 scalar: number of updates taken
    trace: optax.Updates  # torch's ``momentum_buffer``


def scale_by_sgd_momentum(
    momentum: Any = 0.9,
    dampening: Any = 0.0,
    *,
    nesterov: bool = False,
    accumulator_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Heavy-ball / Nesterov momentum exactly as ``torch.optim.SGD`` computes it.

    .. math::
      b_1 = g_1, \qquad b_t = \mu b_{t-1} + (1 - \tau) g_t, \qquad
      u_t = g_t + \mu b_t \ \text{(nesterov)} \ \text{else}\ b_t

    The first step copies the gradient into the buffer *without* dampening. A momentum
    of exactly 0 (also when injected as an array) returns ``g`` unchanged, as torch does.

    Args:
      momentum: momentum factor :math:`\mu`, ``>= 0``.
      dampening: dampening :math:`\tau` applied from the second step on, in ``[0, 1]``.
      nesterov: static; use the Nesterov form (torch requires ``dampening == 0``).
      accumulator_dtype: optional dtype of the buffer (default: the params' dtype).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch import scale_by_sgd_momentum
      >>> tx = scale_by_sgd_momentum(0.9, dampening=0.5)
      >>> state = tx.init(jnp.zeros(2))
      >>> u, state = tx.update(jnp.ones(2), state)
      >>> u, state = tx.update(jnp.ones(2), state)
      >>> u
      Array([1.4, 1.4], dtype=float32)

    References:
      Sutskever et al., "On the importance of initialization and momentum in deep
      learning", ICML 2013; mirrors ``torch.optim.SGD`` (torch 2.13).

    Warning:
      ``optax.trace`` has no dampening and starts from a zero buffer, so with
      ``dampening != 0`` it differs from torch from the second step on.
    """
    check_nonnegative(momentum, "momentum")
    check_interval(dampening, "dampening", 0.0, 1.0)
    accumulator_dtype = None if accumulator_dtype is None else jnp.dtype(accumulator_dtype)
    # torch keeps no buffer at momentum 0 and ignores dampening: unless momentum is known
    # to be non-zero (a concrete number), select g where it is 0.
    may_be_zero = not (is_concrete_number(momentum) and momentum != 0)

    def init_fn(params: optax.Params) -> SgdMomentumState:
        return SgdMomentumState(
            count=jnp.zeros([], jnp.int32),
            trace=optax.tree.zeros_like(params, dtype=accumulator_dtype),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        # The buffer starts at zero, so torch's undamped first step b_1 = g is
        # mu * 0 + 1 * g: a scalar gradient coefficient, no per-element select.
        grad_coef = jnp.where(state.count == 0, 1, 1 - dampening)

        def buffer(g, b):
            return (momentum * b + grad_coef.astype(g.dtype) * g).astype(b.dtype)

        trace = jax.tree.map(buffer, updates, state.trace)

        def direction(g, b):
            out = g + momentum * b if nesterov else b
            if may_be_zero:
                out = jnp.where(momentum == 0, g, out)
            return out.astype(g.dtype)

        updates = jax.tree.map(direction, updates, trace)
        return updates, SgdMomentumState(optax.safe_increment(state.count), trace)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@torch_twin("SGD")
def sgd(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    momentum: Any = None,
    dampening: Any = 0.0,
    weight_decay: Any = 0.0,
    *,
    nesterov: bool = False,
    maximize: bool = False,
    accumulator_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""Stochastic gradient descent that reproduces ``torch.optim.SGD`` step for step.

    .. math::
      g_t \leftarrow \pm g_t + \lambda \theta_{t-1}, \quad
      b_t = \text{torch momentum}(g_t), \quad \theta_t = \theta_{t-1} - \eta_t b_t

    Args:
      learning_rate: scalar or schedule :math:`\eta` (torch ``lr``), default ``1e-3``.
      momentum: momentum factor, ``>= 0``, or ``None`` (default): plain SGD, no buffer.
        A number keeps a momentum buffer, 0 included (its steps are torch's at 0),
        so that the state's structure never depends on the value, as under
        ``optax.inject_hyperparams``; ``None`` is static (as ``optax.sgd``'s).
      dampening: dampening for momentum, in ``[0, 1]`` (ignored while momentum is 0 or
        ``None``, as in torch at 0).
      weight_decay: coupled L2 coefficient :math:`\lambda`, ``>= 0``.
      nesterov: static; Nesterov momentum (needs ``momentum > 0`` and ``dampening == 0``).
      maximize: static; maximise the objective instead of minimising it.
      accumulator_dtype: optional dtype of the momentum buffer.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; it needs ``params`` when
      ``weight_decay`` is not a Python 0.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxopt_adv
      >>> opt = jaxopt_adv.torch.sgd(0.1, momentum=0.9, nesterov=True)
      >>> params = jnp.ones(3)
      >>> state = opt.init(params)
      >>> updates, state = opt.update(jnp.ones(3), state, params)
      >>> updates
      Array([-0.19, -0.19, -0.19], dtype=float32)

    References:
      ``torch.optim.SGD`` (torch 2.13), whose Nesterov form follows Sutskever et al.,
      ICML 2013.

    Warning:
      ``optax.sgd`` has no dampening, no weight decay and no ``maximize``; it matches
      torch only for ``dampening == 0`` (see ``scale_by_sgd_momentum``).
    """
    check_interval(dampening, "dampening", 0.0, 1.0)
    if nesterov:  # torch's rule, checked on whichever of the two is concrete
        check(
            momentum is not None and (not is_concrete_number(momentum) or momentum > 0),
            f"Nesterov momentum requires momentum > 0 (nesterov=True, momentum={momentum})",
        )
        check(
            not is_concrete_number(dampening) or dampening == 0,
            f"Nesterov momentum requires dampening == 0 (nesterov=True, dampening={dampening})",
        )
    core = []
    if momentum is not None:
        core.append(
            scale_by_sgd_momentum(
                momentum, dampening, nesterov=nesterov, accumulator_dtype=accumulator_dtype
            )
        )
    return torch_chain(
        *core, learning_rate=learning_rate, weight_decay=weight_decay, maximize=maximize
    )
