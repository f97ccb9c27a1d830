"""Cyclic schedules of ``torch.optim.lr_scheduler``: CosineAnnealingWarmRestarts and
CyclicLR (with its momentum cycling), as optax schedules ``count -> value``.

As in :mod:`jaxopt_adv.torch.lr_scheduler`, ``schedule(k)`` is the value torch uses for
its k-th update (0-based) with the scheduler stepped once after every
``optimizer.step()``; float64 when x64 is on.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxopt_adv._common import (
    check,
    check_learning_rate,
    check_nonnegative,
    is_concrete_number,
    scalar_dtype,
)
from jaxopt_adv.torch._schedule import Schedule, TorchRule, as_count, check_count, with_rule

_INT32_MAX = 2**31 - 1


def _restarts(T_0: int, T_mult: int, k: jax.Array, dtype: Any) -> tuple[jax.Array, jax.Array]:  # noqa: N803
    """torch's ``(T_cur, T_i)`` after ``k`` steps: exact integers, returned as ``dtype``."""
    if T_mult == 1:
        return (k % T_0).astype(dtype), jnp.full(k.shape, T_0, dtype)
    starts, lengths = [0], [T_0]
    while starts[-1] + lengths[-1] <= _INT32_MAX:  # every restart an int32 count reaches
        starts.append(starts[-1] + lengths[-1])
        lengths.append(lengths[-1] * T_mult)
    cycle = jnp.sum(k[..., None] >= jnp.asarray(starts[1:]), axis=-1)
    t_cur = k - jnp.asarray(starts)[cycle].astype(k.dtype)
    return t_cur.astype(dtype), jnp.asarray(lengths, dtype)[cycle]


def cosine_annealing_warm_restarts(
    learning_rate: Any,
    T_0: int,  # noqa: N803
    T_mult: int = 1,  # noqa: N803
    eta_min: Any = 0.0,
) -> Schedule:
    r"""Cosine annealing with warm restarts (``CosineAnnealingWarmRestarts``).

    .. math::
      \eta_k = \eta_{\min} + \tfrac12(\eta_0 - \eta_{\min})\big(1 + \cos(\pi T_{cur} / T_i)\big)

    where :math:`T_{cur}` counts the steps since the last restart and :math:`T_i` is the
    length of the current cycle: ``T_0``, then ``T_0 * T_mult``, ``T_0 * T_mult^2``, ...
    Both are exact integers here; the weight is computed as
    :math:`\sin^2(\pi (T_i - T_{cur}) / (2 T_i))`, which keeps its relative accuracy in
    float32 near the minima and agrees with torch's cosine to 1e-13 relative in
    float64 for cycles up to 100 steps.

    Args:
      learning_rate: initial (maximum) lr :math:`\eta_0`, ``>= 0``.
      T_0: static; length of the first cycle, an integer ``>= 1``.
      T_mult: static; growth of the cycle length at each restart, an integer ``>= 1``.
      eta_min: minimum lr, ``>= 0``.

    Returns:
      A schedule ``count -> lr``.

    Example:
      >>> from jaxopt_adv.torch.lr_cyclic import cosine_annealing_warm_restarts
      >>> schedule = cosine_annealing_warm_restarts(1.0, T_0=2, T_mult=2)
      >>> [round(float(schedule(k)), 4) for k in range(7)]
      [1.0, 0.5, 1.0, 0.8536, 0.5, 0.1464, 1.0]

    References:
      Loshchilov, Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts",
      ICLR 2017; mirrors ``torch.optim.lr_scheduler.CosineAnnealingWarmRestarts``
      (torch 2.13), stepped without an epoch argument.
    """
    check_learning_rate(learning_rate)
    check_count(T_0, "T_0", 1)
    check_count(T_mult, "T_mult", 1)
    check_nonnegative(eta_min, "eta_min")

    def schedule(count):
        k, _ = as_count(count)
        dtype = scalar_dtype()
        t_cur, t_i = _restarts(T_0, T_mult, k, dtype)
        weight = jnp.sin(math.pi / 2 * ((t_i - t_cur) / t_i)) ** 2
        return eta_min + (learning_rate - eta_min) * weight

    return with_rule(schedule, TorchRule("CosineAnnealingWarmRestarts", None))


ScaleFn = Callable[[jax.Array], Any]


def _check_cyclic(
    step_size_up: Any, step_size_down: Any, mode: Any, gamma: Any, scale_fn: Any, scale_mode: Any
) -> float:
    """torch's checks (and the zero divisions it would hit); returns the cycle length."""
    check(
        is_concrete_number(step_size_up) and step_size_up > 0,
        f"Invalid step_size_up value: {step_size_up} (must be a number > 0)",
    )
    check(
        step_size_down is None or (is_concrete_number(step_size_down) and step_size_down >= 0),
        f"Invalid step_size_down value: {step_size_down} (must be None or a number >= 0)",
    )
    if scale_fn is None:
        check(
            mode in ("triangular", "triangular2", "exp_range"),
            f"Invalid mode: {mode!r} (must be 'triangular', 'triangular2' or 'exp_range' "
            "when scale_fn is None)",
        )
    elif not callable(scale_fn):
        raise TypeError(f"scale_fn should be a function, but got {type(scale_fn).__name__}")
    check(
        scale_mode in ("cycle", "iterations"),
        f"Invalid scale_mode: {scale_mode!r} (must be 'cycle' or 'iterations')",
    )
    check_nonnegative(gamma, "gamma")
    up = float(step_size_up)
    return up + (up if step_size_down is None else float(step_size_down))


def _cyclic(
    step_size_up: Any,
    step_size_down: Any,
    mode: str,
    gamma: Any,
    scale_fn: ScaleFn | None,
    scale_mode: str,
    value: Callable[[jax.Array], jax.Array],
) -> Schedule:
    """torch's ``CyclicLR.get_lr`` arithmetic; ``value(height)`` maps the scaled height."""
    total_size = _check_cyclic(step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode)
    if scale_fn is None:  # torch's built-in policies fix the scale mode
        scale_mode = "iterations" if mode == "exp_range" else "cycle"

    def scale(x):
        if scale_fn is not None:
            return jnp.asarray(scale_fn(x), x.dtype)
        if mode == "triangular":
            return jnp.ones_like(x)
        if mode == "triangular2":
            return 1 / (2.0 ** (x - 1))
        if is_concrete_number(gamma) and gamma > 0:
            # log(gamma) in double: float32(gamma) ** 60 would be 2e-6 off torch.
            return jnp.exp(x * math.log(gamma))
        return jnp.power(jnp.asarray(gamma, x.dtype), x)

    up = float(step_size_up)
    down = total_size - up

    def schedule(count):
        _, t = as_count(count)
        cycle = jnp.floor(1 + t / total_size)
        # torch's x = 1 + k / L - cycle, as (k - (cycle - 1) L) / L: the offset into the
        # cycle is exact, so the factor keeps its relative accuracy in float32 too.
        offset = t - (cycle - 1) * total_size
        rising = offset <= up
        factor = jnp.where(rising, offset, total_size - offset) / jnp.where(
            rising, up, down if down > 0 else 1.0
        )
        return value(factor * scale(cycle if scale_mode == "cycle" else t))

    return schedule


def cyclic_lr(
    base_lr: Any,
    max_lr: Any,
    step_size_up: Any = 2000,
    step_size_down: Any = None,
    mode: str = "triangular",
    gamma: Any = 1.0,
    scale_fn: ScaleFn | None = None,
    scale_mode: str = "cycle",
) -> Schedule:
    r"""The cyclical learning rate (``torch.optim.lr_scheduler.CyclicLR``).

    The lr goes from ``base_lr`` up to ``max_lr`` in ``step_size_up`` steps and back in
    ``step_size_down`` steps (default: the same), the height of each cycle scaled by
    the policy: ``'triangular'`` (1), ``'triangular2'`` (halved every cycle),
    ``'exp_range'`` (``gamma ** k``), or a custom ``scale_fn`` of the cycle number
    (``scale_mode='cycle'``, from 1) or of the step count (``'iterations'``). With the
    count :math:`k` and :math:`L` = ``step_size_up + step_size_down``,

    .. code-block:: text

      cycle = floor(1 + k / L);  x = 1 + k / L - cycle
      f = x / r if x <= r else (x - 1) / (r - 1)        (r = step_size_up / L)
      lr = base_lr + (max_lr - base_lr) * f * scale(cycle or k)

    (torch's formula; here ``f`` is computed from the exact offset ``k - (cycle - 1) L``
    into the cycle, which keeps float32 within 1e-6 of torch; float64 agrees to 1e-14).
    Cycle the momentum with :func:`cyclic_momentum`.

    Args:
      base_lr: lower bound of the lr, ``>= 0`` (torch sets the optimizer's lr to it).
      max_lr: upper bound of the first cycle, ``>= 0``.
      step_size_up: static; steps of the rising half, a number ``> 0``.
      step_size_down: static; steps of the falling half, ``>= 0``; ``None``: as up.
      mode: static; ``'triangular'``, ``'triangular2'`` or ``'exp_range'`` (ignored
        with ``scale_fn``).
      gamma: ``exp_range`` base, ``>= 0``.
      scale_fn: optional; ``x -> scale``, called with a float array (write it with
        ``jax.numpy``); replaces ``mode``.
      scale_mode: static; ``'cycle'`` or ``'iterations'``, the argument of
        ``scale_fn``.

    Returns:
      A schedule ``count -> lr``.

    Example:
      >>> from jaxopt_adv.torch.lr_cyclic import cyclic_lr
      >>> schedule = cyclic_lr(0.1, 1.0, step_size_up=2, mode="triangular2")
      >>> [round(float(schedule(k)), 4) for k in range(9)]
      [0.1, 0.55, 1.0, 0.55, 0.1, 0.325, 0.55, 0.325, 0.1]

    References:
      Smith, "Cyclical Learning Rates for Training Neural Networks", WACV 2017;
      mirrors ``torch.optim.lr_scheduler.CyclicLR`` (torch 2.13).
    """
    check_learning_rate(base_lr, "base_lr")
    check_learning_rate(max_lr, "max_lr")

    def value(height):
        return base_lr + (max_lr - base_lr) * height

    schedule = _cyclic(step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode, value)
    return with_rule(schedule, TorchRule("CyclicLR", None))


def cyclic_momentum(
    step_size_up: Any = 2000,
    step_size_down: Any = None,
    mode: str = "triangular",
    gamma: Any = 1.0,
    scale_fn: ScaleFn | None = None,
    scale_mode: str = "cycle",
    base_momentum: Any = 0.8,
    max_momentum: Any = 0.9,
) -> Schedule:
    r"""The momentum / beta1 that ``CyclicLR(cycle_momentum=True)`` sets each step.

    Inverse to the lr of :func:`cyclic_lr` with the same cycle arguments:
    ``max_momentum - (max_momentum - base_momentum) * f * scale`` (torch's order), at
    ``max_momentum`` when the lr is at ``base_lr``. Feed it to the momentum or ``b1``
    of a torch-exact optimizer through ``optax.inject_hyperparams``, as
    :func:`~jaxopt_adv.torch.lr_scheduler.one_cycle_momentum`.

    Args:
      step_size_up: static; as in :func:`cyclic_lr`.
      step_size_down: static; as in :func:`cyclic_lr`.
      mode: static; as in :func:`cyclic_lr`.
      gamma: as in :func:`cyclic_lr`.
      scale_fn: as in :func:`cyclic_lr`.
      scale_mode: static; as in :func:`cyclic_lr`.
      base_momentum: momentum at the lr peak, ``>= 0``.
      max_momentum: momentum at ``base_lr``, ``>= 0``.

    Returns:
      A schedule ``count -> momentum``.

    Example:
      >>> from jaxopt_adv.torch.lr_cyclic import cyclic_momentum
      >>> schedule = cyclic_momentum(step_size_up=2)
      >>> [round(float(schedule(k)), 4) for k in range(5)]
      [0.9, 0.85, 0.8, 0.85, 0.9]

    References:
      mirrors the momentum cycling of ``torch.optim.lr_scheduler.CyclicLR``
      (torch 2.13).
    """
    check_nonnegative(base_momentum, "base_momentum")
    check_nonnegative(max_momentum, "max_momentum")

    def value(height):
        return max_momentum - (max_momentum - base_momentum) * height

    return _cyclic(step_size_up, step_size_down, mode, gamma, scale_fn, scale_mode, value)
