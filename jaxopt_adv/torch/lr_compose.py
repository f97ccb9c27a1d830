"""Composed schedules of ``torch.optim.lr_scheduler``: SequentialLR and ChainedScheduler.

Both take schedules ``count -> lr`` (those of :mod:`jaxopt_adv.torch.lr_scheduler` or any
optax schedule) and return one; as there, ``schedule(k)`` is the lr torch uses for its
k-th update (0-based) with the composed scheduler stepped once after every
``optimizer.step()``. The schedules of this package carry a
``TorchRule`` (``jaxopt_adv.torch._schedule``; how their torch scheduler moves the lr:
it scales it, or overwrites it), which tells these which of torch's rules applies.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxopt_adv._common import check, check_interval, scalar_dtype
from jaxopt_adv.torch._schedule import (
    Schedule,
    StepMap,
    TorchRule,
    as_count,
    check_count,
    rule_of,
    with_rule,
)


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


_COMPOSED = ("SequentialLR", "ChainedScheduler")


def _restart_of(schedule: Schedule, index: int) -> StepMap:
    """``(count since its milestone, lr before it) -> lr`` of ``schedules[index]`` of a
    :func:`sequential_lr` that starts after a milestone >= 1, as torch restarts it."""
    rule = rule_of(schedule)
    restart = None if rule is None else rule.restart
    if isinstance(restart, str):
        raise ValueError(
            f"sequential_lr: schedules[{index}] cannot start after a milestone: torch's "
            f"{restart} there (ZeroDivisionError); start it at milestone 0 or give it "
            "total_iters >= 1"
        )
    if restart is None:
        return lambda k, lr: jnp.asarray(schedule(k), lr.dtype)
    return restart


def sequential_lr(schedules: Sequence[Schedule], milestones: Sequence[int]) -> Schedule:
    r"""Run schedules one after another (``torch.optim.lr_scheduler.SequentialLR``).

    ``schedules[i]`` takes over at ``milestones[i - 1]`` and restarts from its own
    count 0 there:

    .. math::
      \eta_k = s_i(k - m_{i-1}) \quad \text{for } m_{i-1} \le k < m_i
      \qquad (m_{-1} = 0)

    That is what torch does for every scheduler it restarts with its closed form or a
    closed-form ``get_lr``. Three restarts after a milestone ``m >= 1`` differ, and are
    reproduced: ``multiplicative_lr`` keeps multiplying the lr it finds there,
    :math:`\eta_{m+j} = \eta_{m-1} \prod_{i=0}^{j} \lambda(i)`;
    ``constant_lr(total_iters=0)`` gives the base lr (torch's closed form; at count 0 of
    the run it keeps ``factor * lr``); ``linear_lr`` and ``polynomial_lr`` with
    ``total_iters=0`` make torch divide by zero there, so they raise ``ValueError`` here.
    :func:`~jaxopt_adv.torch.swa_utils.swa_lr` after a milestone anneals from the lr it
    finds there, as torch restarts SWALR. Build every schedule with the same base lr, as torch's schedulers share one
    optimizer.

    Args:
      schedules: static; one schedule ``count -> lr`` per phase (at least one).
      milestones: static; the counts where the next schedule starts, integers
        ``>= 0`` in non-decreasing order, one fewer than ``schedules``.

    Returns:
      A schedule ``count -> lr``.

    Raises:
      ValueError: for a ``linear_lr`` or ``polynomial_lr`` with ``total_iters=0`` that
        starts after a milestone ``>= 1``, a nested ``sequential_lr`` or
        ``chained_scheduler`` (torch's SequentialLR cannot restart one), and for bad
        milestones.

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
    for index, s in enumerate(schedules):
        rule = rule_of(s)
        if rule is not None and rule.torch_class in _COMPOSED:
            raise ValueError(
                f"sequential_lr: schedules[{index}] is a {rule.torch_class}, which torch's "
                "SequentialLR cannot restart (NotImplementedError); not reproduced"
            )
    starts = [0, *milestones]
    ends = [*milestones, None]
    # a phase that starts after count 0 is restarted as torch restarts it (an empty
    # phase never runs)
    restarts = [
        None if start == 0 or start == end else _restart_of(s, i)
        for i, (s, start, end) in enumerate(zip(schedules, starts, ends, strict=True))
    ]

    def phases(k: jax.Array, n: int) -> jax.Array:
        """The lr at count ``k`` of the first ``n`` phases run in sequence."""
        dtype = scalar_dtype()
        pieces = []
        for p in range(n):
            local = jnp.maximum(k - starts[p], 0)
            if restarts[p] is None:
                pieces.append(jnp.asarray(schedules[p](local), dtype))
            else:  # the lr before the milestone: a static count of the earlier phases
                before = phases(jnp.full_like(k, starts[p] - 1), p)
                pieces.append(restarts[p](local, before))
        value = pieces[-1]
        for m, piece in zip(reversed(starts[1:n]), reversed(pieces[:-1]), strict=True):
            value = jnp.where(k < m, piece, value)  # the earliest milestone wins
        return value

    def schedule(count):
        k, _ = as_count(count)
        return phases(k, len(schedules))

    def step(k, lr):
        # torch's SequentialLR sets the lr at its construction (k = 0) and restarts the
        # next scheduler at each milestone; in between it steps the current one
        moved = jnp.asarray(schedule(k), lr.dtype)
        for s, start, end, restart in zip(schedules, starts, ends, restarts, strict=True):
            live = True if end is None else k < end  # an empty phase never runs
            if restart is not None:
                restarted = restart(jnp.zeros_like(k), lr)
                moved = jnp.where((k == start) & live, restarted, moved)
            moved = jnp.where((k > start) & live, _step_of(s, k - start, lr), moved)
        return moved

    return with_rule(schedule, TorchRule("SequentialLR", step, product=False))


def _step_of(schedule: Schedule, k: jax.Array, lr: jax.Array, base: Any = None) -> jax.Array:
    """The lr after ``schedule``'s torch scheduler takes its step ``k`` from ``lr``; an
    optax schedule scales it by ``s(k) / s(k - 1)`` (``s(0) / base`` at ``k = 0``)."""
    rule = rule_of(schedule)
    if rule is not None:
        if rule.step is None:
            return jnp.broadcast_to(jnp.asarray(schedule(k), lr.dtype), jnp.shape(lr))
        return rule.step(k, lr)
    now = jnp.asarray(schedule(k), lr.dtype)
    before = jnp.asarray(schedule(jnp.maximum(k - 1, 0)), lr.dtype)
    before = jnp.where(k == 0, jnp.asarray(base if base is not None else now, lr.dtype), before)
    return lr * jnp.where(before == 0, 0.0, now / jnp.where(before == 0, 1.0, before))


def chained_scheduler(schedules: Sequence[Schedule], learning_rate: Any) -> Schedule:
    r"""Apply several schedules at once (``torch.optim.lr_scheduler.ChainedScheduler``).

    torch steps every scheduler in list order on the shared lr (and each one's
    constructor takes step 0 in the same order, with every schedule built with the base
    lr :math:`\eta_0` = ``learning_rate``): a chainable scheduler multiplies the lr by
    its own step factor, ``cosine_annealing_lr`` moves ``lr - eta_min`` by a ratio of
    cosines and adds after each minimum, and ``lambda_lr``, ``cyclic_lr``,
    ``one_cycle_lr`` and ``cosine_annealing_warm_restarts`` overwrite the lr with their
    own value. This reproduces any mix:

    - after the last overwriting schedule in the list, the lr at step :math:`k` is its
      value, moved once by the step :math:`k` of each later schedule (what torch
      computes: the earlier history is overwritten at every step);
    - without one, for chainable schedules (``step_lr``, ``multistep_lr``,
      ``exponential_lr``, ``linear_lr``, ``constant_lr``, ``polynomial_lr``,
      ``multiplicative_lr``, optax schedules) the product
      :math:`\eta_0 \prod_i s_i(k) / \eta_0` (torch's step-by-step product to 1e-14
      relative over 60 steps);
    - otherwise (a ``cosine_annealing_lr``, or a ``sequential_lr`` / ``chained_scheduler``
      inside the chain) torch's recursion itself, step by step: ``schedule(k)`` then
      costs :math:`k` steps of every schedule (a ``while`` loop: 2.4 ms at ``k = 1e5``
      on a loaded 2-core CPU, more on an accelerator); in float32 it accumulates
      float32 rounding (3e-6 relative after 70 steps; torch recurs in doubles).

    An optax schedule :math:`s` counts as a chainable scheduler of factor
    :math:`s(k) / s(k-1)` (:math:`s(0) / \eta_0` at step 0).

    Args:
      schedules: static; the chained schedules (at least one), each built with
        ``learning_rate``, in the order torch's schedulers were built.
      learning_rate: the base lr the schedules share, ``> 0``.

    Returns:
      A schedule ``count -> lr``.

    Example:
      >>> from jaxopt_adv.torch.lr_compose import chained_scheduler
      >>> from jaxopt_adv.torch.lr_factor import constant_lr, lambda_lr
      >>> from jaxopt_adv.torch.lr_scheduler import exponential_lr
      >>> schedule = chained_scheduler(
      ...     [constant_lr(1.0, 0.5, 2), exponential_lr(1.0, 0.5)], learning_rate=1.0)
      >>> [float(schedule(k)) for k in range(4)]
      [0.5, 0.25, 0.25, 0.125]
      >>> overwritten = chained_scheduler(  # one factor 0.5 per step, not 0.5**k
      ...     [lambda_lr(1.0, lambda k: 0.5**k), exponential_lr(1.0, 0.5)], 1.0)
      >>> [float(overwritten(k)) for k in range(4)]
      [1.0, 0.25, 0.125, 0.0625]

    References:
      mirrors ``torch.optim.lr_scheduler.ChainedScheduler`` (torch 2.13).
    """
    schedules = _check_schedules(schedules, "chained_scheduler")
    check_interval(learning_rate, "learning_rate", 0.0, math.inf, low_open=True)
    rules = [rule_of(s) for s in schedules]
    overwriting = [i for i, r in enumerate(rules) if r is not None and r.step is None]

    def step(k, lr):
        for s in schedules:
            lr = _step_of(s, k, lr, learning_rate)
        return lr

    def after_overwrite(count):
        k, _ = as_count(count)
        last = overwriting[-1]
        value = jnp.asarray(schedules[last](k), scalar_dtype())
        for s in schedules[last + 1 :]:
            value = _step_of(s, k, value, learning_rate)
        return value

    def product(count):
        dtype = scalar_dtype()
        value = jnp.asarray(schedules[0](count), dtype)
        for s in schedules[1:]:
            value = value * (jnp.asarray(s(count), dtype) / learning_rate)
        return value

    def recursion(count):
        k, _ = as_count(count)

        def one(k_one):
            start = jnp.asarray(learning_rate, scalar_dtype())
            return jax.lax.fori_loop(jnp.zeros_like(k_one), k_one + 1, step, start)

        return jnp.vectorize(one)(k)  # one loop per count of a batch

    if overwriting:
        schedule = after_overwrite
    elif len(schedules) == 1 or all(r is None or r.product for r in rules):
        schedule = product
    else:
        schedule = recursion
    return with_rule(schedule, TorchRule("ChainedScheduler", step, product=False))
