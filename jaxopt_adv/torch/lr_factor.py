"""Factor schedules of ``torch.optim.lr_scheduler``: LambdaLR, MultiplicativeLR,
ConstantLR and PolynomialLR, as optax schedules ``count -> lr``.

As in :mod:`jaxopt_adv.torch.lr_scheduler`, ``schedule(k)`` is the lr torch uses for
its k-th update (0-based) with the scheduler stepped once after every
``optimizer.step()``; float64 when x64 is on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxopt_adv._common import check, check_interval, check_learning_rate, scalar_dtype
from jaxopt_adv.torch._schedule import (
    Schedule,
    TorchRule,
    as_count,
    check_count,
    scaling,
    with_rule,
)

LrLambda = Callable[[jax.Array], Any]


def _check_lambda(lr_lambda: Any) -> None:
    if not callable(lr_lambda):
        raise TypeError(f"lr_lambda should be a function, but got {type(lr_lambda).__name__}")


def lambda_lr(learning_rate: Any, lr_lambda: LrLambda) -> Schedule:
    r"""The base lr times a function of the step (``torch.optim.lr_scheduler.LambdaLR``).

    .. math::
      \eta_k = \eta_0\, \lambda(k)

    Args:
      learning_rate: base lr :math:`\eta_0`, ``>= 0``.
      lr_lambda: ``k -> factor``, called with the step count as an integer array (so it
        must be written with ``jax.numpy``, e.g. ``lambda k: 0.95 ** k``).

    Returns:
      A schedule ``count -> lr``.

    Example:
      >>> from jaxopt_adv.torch.lr_factor import lambda_lr
      >>> schedule = lambda_lr(2.0, lambda k: 1.0 / (k + 1))
      >>> [float(schedule(k)) for k in range(4)]
      [2.0, 1.0, 0.6666666865348816, 0.5]

    References:
      mirrors ``torch.optim.lr_scheduler.LambdaLR`` (torch 2.13), one parameter group.
    """
    check_learning_rate(learning_rate)
    _check_lambda(lr_lambda)

    def schedule(count):
        k, _ = as_count(count)
        factor = jnp.asarray(lr_lambda(k), scalar_dtype())
        return learning_rate * jnp.broadcast_to(factor, k.shape)  # a constant lambda too

    return with_rule(schedule, TorchRule("LambdaLR", None))


def multiplicative_lr(learning_rate: Any, lr_lambda: LrLambda) -> Schedule:
    r"""Multiply the lr by a function of the step (``MultiplicativeLR``).

    .. math::
      \eta_0 = \text{learning\_rate}, \qquad \eta_k = \eta_{k-1}\, \lambda(k)

    The product is taken step by step in torch's order (so it has torch's rounding):
    evaluating ``schedule(k)`` costs ``k`` calls of ``lr_lambda`` (a ``while`` loop).

    Args:
      learning_rate: initial lr :math:`\eta_0`, ``>= 0``.
      lr_lambda: ``k -> factor`` for ``k >= 1``, called with an integer array (write it
        with ``jax.numpy``).

    Returns:
      A schedule ``count -> lr``.

    Example:
      >>> from jaxopt_adv.torch.lr_factor import multiplicative_lr
      >>> schedule = multiplicative_lr(1.0, lambda k: 0.5)
      >>> [float(schedule(k)) for k in range(4)]
      [1.0, 0.5, 0.25, 0.125]

    References:
      mirrors ``torch.optim.lr_scheduler.MultiplicativeLR`` (torch 2.13), one parameter
      group.
    """
    check_learning_rate(learning_rate)
    _check_lambda(lr_lambda)

    def product(k, lr, first):
        """``lr * lr_lambda(first) * ... * lr_lambda(k)``, multiplied in torch's order."""

        def body(i, value):
            return value * jnp.asarray(lr_lambda(i), value.dtype)

        return jax.lax.fori_loop(jnp.full_like(k, first), k + 1, body, lr)

    def schedule(count):
        k, _ = as_count(count)
        start = jnp.asarray(learning_rate, scalar_dtype())
        return jnp.vectorize(lambda k_one: product(k_one, start, 1))(k)  # one loop per count

    def restart(k, lr):
        # after a milestone torch multiplies the lr it finds by lr_lambda(0) first
        return jnp.vectorize(lambda k_one, lr_one: product(k_one, lr_one, 0))(k, lr)

    def step_factor(k):
        return jnp.where(k == 0, 1.0, lr_lambda(k))

    rule = scaling("MultiplicativeLR", step_factor, restart=restart)
    return with_rule(schedule, rule)


def constant_lr(learning_rate: Any, factor: Any = 1.0 / 3, total_iters: int = 5) -> Schedule:
    r"""A constant factor for the first steps (``torch.optim.lr_scheduler.ConstantLR``).

    .. math::
      \eta_k = \eta_0 \cdot \text{factor} \quad (k < T), \qquad
      \eta_k = (\eta_0 \cdot \text{factor}) \cdot (1 / \text{factor}) \quad (k \ge T)

    computed in torch's order, so the lr after ``total_iters`` has torch's rounding.
    With ``total_iters = 0`` torch keeps the factor forever (its recursion never
    reaches the step that undoes it), and so does this schedule.

    Args:
      learning_rate: base lr :math:`\eta_0`, ``>= 0``.
      factor: in ``[0, 1]`` (torch's range); ``0`` only with ``total_iters = 0`` (torch
        divides by it at step ``total_iters``).
      total_iters: static; number of steps :math:`T` at the reduced lr, an integer
        ``>= 0``.

    Returns:
      A schedule ``count -> lr``.

    Example:
      >>> from jaxopt_adv.torch.lr_factor import constant_lr
      >>> schedule = constant_lr(1.0, factor=0.5, total_iters=2)
      >>> [float(schedule(k)) for k in range(4)]
      [0.5, 0.5, 1.0, 1.0]

    References:
      mirrors ``torch.optim.lr_scheduler.ConstantLR`` (torch 2.13).
    """
    check_learning_rate(learning_rate)
    check_interval(factor, "factor", 0.0, 1.0)
    check_count(total_iters, "total_iters", 0)
    check(
        total_iters == 0 or factor != 0,
        "Invalid factor value: 0 with total_iters > 0 (torch divides by the factor at "
        "step total_iters: ZeroDivisionError)",
    )

    def schedule(count):
        k, _ = as_count(count)
        reduced = learning_rate * jnp.asarray(factor, scalar_dtype())
        if total_iters == 0:
            return jnp.broadcast_to(reduced, k.shape)
        return jnp.where(k < total_iters, reduced, reduced * (1.0 / factor))

    safe_factor = factor if total_iters > 0 else 1.0  # factor 0 only with total_iters 0

    def step_factor(k):
        undo = (k == total_iters) & (total_iters > 0)
        return jnp.where(k == 0, factor, jnp.where(undo, 1.0 / safe_factor, 1.0))

    # after a milestone torch restarts it with its closed form: lr * (factor + (1 -
    # factor)) from then on when total_iters = 0
    restart = None
    if total_iters == 0:
        restart = lambda k, lr: jnp.broadcast_to(  # noqa: E731
            learning_rate * jnp.asarray(factor + (1 - factor), scalar_dtype()), k.shape
        )
    return with_rule(schedule, scaling("ConstantLR", step_factor, restart=restart))


def polynomial_lr(learning_rate: Any, total_iters: int = 5, power: Any = 1.0) -> Schedule:
    r"""Polynomial decay to zero (``torch.optim.lr_scheduler.PolynomialLR``).

    .. math::
      \eta_k = \eta_0 \Big(\frac{T - \min(k, T)}{T}\Big)^{p}

    torch multiplies the lr by the ratio of consecutive factors each step; this closed
    form (an exact integer numerator, no cancellation near the end) agrees with it to
    1e-14 relative in float64 for ``T <= 100``. ``total_iters = 0`` keeps the lr
    constant, as torch's recursion does.

    Args:
      learning_rate: base lr :math:`\eta_0`, ``>= 0``.
      total_iters: static; steps :math:`T` to reach zero, an integer ``>= 0``.
      power: exponent :math:`p`, ``>= 0``.

    Returns:
      A schedule ``count -> lr``.

    Example:
      >>> from jaxopt_adv.torch.lr_factor import polynomial_lr
      >>> schedule = polynomial_lr(1.0, total_iters=4, power=2.0)
      >>> [float(schedule(k)) for k in range(6)]
      [1.0, 0.5625, 0.25, 0.0625, 0.0, 0.0]

    References:
      mirrors ``torch.optim.lr_scheduler.PolynomialLR`` (torch 2.13).
    """
    check_learning_rate(learning_rate)
    check_count(total_iters, "total_iters", 0)
    check_interval(power, "power", 0.0, float("inf"), high_open=True)

    def schedule(count):
        k, _ = as_count(count)
        dtype = scalar_dtype()
        if total_iters == 0:
            return jnp.broadcast_to(jnp.asarray(learning_rate, dtype), k.shape)
        left = (total_iters - jnp.minimum(k, total_iters)).astype(dtype)
        return learning_rate * jnp.power(left / total_iters, jnp.asarray(power, dtype))

    safe_iters = max(total_iters, 1)  # no step of torch's divides by 0 (k > total_iters)

    def step_factor(k):
        t = k.astype(scalar_dtype())
        ratio = (1.0 - t / safe_iters) / (1.0 - (t - 1) / safe_iters)
        return jnp.where((k == 0) | (k > total_iters), 1.0, ratio ** jnp.asarray(power, t.dtype))

    # torch restarts it after a milestone with its closed form, which divides by
    # total_iters
    restart = "PolynomialLR(total_iters=0) divides by zero" if total_iters == 0 else None
    return with_rule(schedule, scaling("PolynomialLR", step_factor, restart=restart))
