"""Composed schedules of ``torch.optim.lr_scheduler``: SequentialLR and ChainedScheduler.

Both take schedules ``count -> lr`` (those of :mod:`jaxopt_adv.torch.lr_scheduler` or any
optax schedule) and return one; as there, ``schedule(k)`` is the lr torch uses for its
k-th update (0-based) with the composed scheduler stepped once after every
``optimizer.step()``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp

from jaxopt_adv._common import check, check_interval, scalar_dtype
from jaxopt_adv.torch._schedule import Schedule, as_count, check_count


def _check_schedules(schedules: Any, owner: str) -> list[Schedule]:
    schedules = list(schedules)
    check(
        len(schedules) >= 1,
        f"{owner} expects at least one schedule, but got no schedule (schedules=[])",
    )
    for index, schedule in enumerate(schedules):
        if not callable(schedule):
            raise TypeError(
                f"{owner}: schedules[{index}] should be a schedule (count -> lr), but got "
                f"{type(schedule).__name__}"
            )
    return schedules


def sequential_lr(schedules: Sequence[Schedule], milestones: Sequence[int]) -> Schedule:
    r"""Run schedules one after another (``torch.optim.lr_scheduler.SequentialLR``).

    ``schedules[i]`` takes over at ``milestones[i - 1]`` and restarts from its own
    count 0 there:

    .. math::
      \eta_k = s_i(k - m_{i-1}) \quad \text{for } m_{i-1} \le k < m_i
      \qquad (m_{-1} = 0)

    This is what torch does for every scheduler it restarts with its closed form or a
    closed-form ``get_lr`` (all of them except ``MultiplicativeLR``, which torch does
    not restart: after a milestone it keeps multiplying the previous scheduler's last
    lr; ``multiplicative_lr`` is exact here only as ``schedules[0]``). Two edge cases
    differ after a milestone: torch restarts ``ConstantLR(total_iters=0)`` at the
    base lr (its closed form; ``constant_lr`` keeps ``factor * lr``) and
    ``LinearLR(total_iters=0)`` divides by zero. Build every schedule with the same
    base lr, as torch's schedulers share one optimizer.

    Args:
      schedules: static; one schedule ``count -> lr`` per phase (at least one).
      milestones: static; the counts where the next schedule starts, integers
        ``>= 0`` in non-decreasing order, one fewer than ``schedules``.

    Returns:
      A schedule ``count -> lr``.

    Example:
      >>> from jaxopt_adv.torch.lr_compose import sequential_lr
      >>> from jaxopt_adv.torch.lr_scheduler import cosine_annealing_lr, linear_lr
      >>> schedule = sequential_lr(
      ...     [linear_lr(1.0, 0.25, 1.0, 2), cosine_annealing_lr(1.0, 2)], milestones=[2])
      >>> [float(schedule(k)) for k in range(5)]
      [0.25, 0.625, 1.0, 0.5, 0.0]

    References:
      mirrors ``torch.optim.lr_scheduler.SequentialLR`` (torch 2.13).
    """
    schedules = _check_schedules(schedules, "sequential_lr")
    milestones = list(milestones)
    check(
        len(milestones) == len(schedules) - 1,
        "sequential_lr expects one milestone fewer than schedules, but got "
        f"{len(schedules)} schedules and {len(milestones)} milestones",
    )
    for m in milestones:
        check_count(m, "milestone", 0)
    check(
        milestones == sorted(milestones),
        f"Invalid milestones: {milestones} (must be in non-decreasing order)",
    )
    starts = [0, *milestones]

    def schedule(count):
        k, _ = as_count(count)
        dtype = scalar_dtype()
        pieces = [
            jnp.asarray(s(jnp.maximum(k - start, 0)), dtype)
            for s, start in zip(schedules, starts, strict=True)
        ]
        value = pieces[-1]
        for m, piece in zip(reversed(milestones), reversed(pieces[:-1]), strict=True):
            value = jnp.where(k < m, piece, value)  # the earliest milestone wins
        return value

    return schedule


def chained_scheduler(schedules: Sequence[Schedule], learning_rate: Any) -> Schedule:
    r"""Apply several schedules at once (``torch.optim.lr_scheduler.ChainedScheduler``).

    torch steps every scheduler in turn on the same lr; for its chainable schedulers,
    which multiply the current lr by their own step ratio, the result is the base lr
    times the product of each schedule's factor:

    .. math::
      \eta_k = \eta_0 \prod_i s_i(k) / \eta_0

    with every :math:`s_i` built with the base lr :math:`\eta_0 =` ``learning_rate``.
    That is torch's result for ``step_lr``, ``multistep_lr``, ``exponential_lr``,
    ``linear_lr``, ``constant_lr``, ``polynomial_lr``, ``multiplicative_lr`` and
    ``cosine_annealing_lr`` with ``eta_min = 0`` up to ``T_max`` (to torch's rounding of
    its step-by-step product: 1e-14 relative over 60 steps). torch's ``LambdaLR``,
    ``CyclicLR``, ``OneCycleLR`` and ``CosineAnnealingWarmRestarts`` overwrite the lr
    instead of scaling it, and its cosine restarts additively after each minimum: in
    a chain those are not a product, and this function does not reproduce them.

    Args:
      schedules: static; the chained schedules (at least one), each built with
        ``learning_rate``.
      learning_rate: the base lr the schedules share, ``> 0``.

    Returns:
      A schedule ``count -> lr``.

    Example:
      >>> from jaxopt_adv.torch.lr_compose import chained_scheduler
      >>> from jaxopt_adv.torch.lr_factor import constant_lr
      >>> from jaxopt_adv.torch.lr_scheduler import exponential_lr
      >>> schedule = chained_scheduler(
      ...     [constant_lr(1.0, 0.5, 2), exponential_lr(1.0, 0.5)], learning_rate=1.0)
      >>> [float(schedule(k)) for k in range(4)]
      [0.5, 0.25, 0.25, 0.125]

    References:
      mirrors ``torch.optim.lr_scheduler.ChainedScheduler`` (torch 2.13).
    """
    schedules = _check_schedules(schedules, "chained_scheduler")
    check_interval(learning_rate, "learning_rate", 0.0, math.inf, low_open=True)

    def schedule(count):
        dtype = scalar_dtype()
        value = jnp.asarray(schedules[0](count), dtype)
        for s in schedules[1:]:
            value = value * (jnp.asarray(s(count), dtype) / learning_rate)
        return value

    return schedule
