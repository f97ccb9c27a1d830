"""Learning-rate schedules that reproduce ``torch.optim.lr_scheduler`` step for step.

Each schedule is an optax schedule ``count -> lr`` (jit-able, float array out). With
torch's scheduler stepped once per optimizer step, the lr torch uses for its k-th
update (0-based) is the group's lr *before* the k-th ``scheduler.step()``; the schedule
returns exactly that for ``count = k``. To step once per epoch instead, call the
schedule with ``count // steps_per_epoch``.

torch computes most schedules recursively (``lr <- lr * factor``) in Python doubles;
these use closed forms, written to keep their relative accuracy in float32, which agree
with torch's recursions to torch's rounding in float64 (1e-15 relative; for the cosine
over three periods 1e-13 up to ``T_max = 200``, 1e-11 near the minima at
``T_max = 1000``, where torch's ratio of two small cosines drifts). Structural
arguments (step counts, milestones, strategies) must be Python values; rates may be
Python numbers or arrays.

With ``jax_enable_x64`` on, every schedule here returns float64 (torch's Python
doubles). Several optax 0.2.8 schedules return float32 there (``linear_schedule``,
``polynomial_schedule``, ``exponential_decay``, ``warmup_cosine_decay_schedule``,
``warmup_exponential_decay_schedule``, ``warmup_constant_schedule``,
``sgdr_schedule``), so they cannot match torch to float64 precision.

The factor schedules (``lambda_lr``, ``multiplicative_lr``, ``constant_lr``,
``polynomial_lr``) live in :mod:`jaxopt_adv.torch.lr_factor` and the cyclic ones
(``cosine_annealing_warm_restarts``, ``cyclic_lr`` + ``cyclic_momentum``) in :mod:`jaxopt_adv.torch.lr_cyclic`,
``sequential_lr`` and ``chained_scheduler`` in :mod:`jaxopt_adv.torch.lr_compose`; all
are importable from here too.

:func:`reduce_lr_on_plateau` reacts to the loss, so it is a transformation with state
rather than a schedule.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from jaxopt_adv._common import (
    check,
    check_interval,
    check_learning_rate,
    check_nonnegative,
    is_concrete_number,
    scalar_dtype,
)
from jaxopt_adv.torch._schedule import Schedule, TorchRule, scaling, with_rule
from jaxopt_adv.torch._schedule import as_count as _count
from jaxopt_adv.torch._schedule import check_count as _check_count
from jaxopt_adv.torch.lr_compose import chained_scheduler as chained_scheduler
from jaxopt_adv.torch.lr_compose import sequential_lr as sequential_lr
from jaxopt_adv.torch.lr_cyclic import (
    cosine_annealing_warm_restarts as cosine_annealing_warm_restarts,
)
from jaxopt_adv.torch.lr_cyclic import cyclic_lr as cyclic_lr
from jaxopt_adv.torch.lr_cyclic import cyclic_momentum as cyclic_momentum
from jaxopt_adv.torch.lr_factor import constant_lr as constant_lr
from jaxopt_adv.torch.lr_factor import lambda_lr as lambda_lr
from jaxopt_adv.torch.lr_factor import multiplicative_lr as multiplicative_lr
from jaxopt_adv.torch.lr_factor import polynomial_lr as polynomial_lr


def step_lr(learning_rate: Any, step_size: int, gamma: Any = 0.1) -> Schedule:
    r"""Decay by ``gamma`` every ``step_size`` steps (``torch.optim.lr_scheduler.StepLR``).

    .. math::
      \eta_k = \eta_0\, \gamma^{\lfloor k / \text{step\_size} \rfloor}

    Args:
      learning_rate: initial lr :math:`\eta_0` (torch: the optimizer's ``lr``), ``>= 0``.
      step_size: static; period of the decay, an integer ``>= 1``.
      gamma: multiplicative decay, ``>= 0``.

    Returns:
      A schedule ``count -> lr``.

    Example:
      >>> from jaxopt_adv.torch.lr_scheduler import step_lr
      >>> schedule = step_lr(1.0, step_size=2, gamma=0.5)
      >>> [float(schedule(k)) for k in range(5)]
      [1.0, 1.0, 0.5, 0.5, 0.25]

    References:
      mirrors ``torch.optim.lr_scheduler.StepLR`` (torch 2.13); optax's
      ``exponential_decay(lr, step_size, gamma, staircase=True)`` gives the same values.
    """
    check_learning_rate(learning_rate)
    _check_count(step_size, "step_size", 1)
    check_nonnegative(gamma, "gamma")

    def schedule(count):
        k, _ = _count(count)
        power = (k // step_size).astype(scalar_dtype())
        return learning_rate * jnp.power(jnp.asarray(gamma, scalar_dtype()), power)

    def factor(k):
        return jnp.where((k == 0) | (k % step_size != 0), 1.0, gamma)

    return with_rule(schedule, scaling("StepLR", factor))


def multistep_lr(learning_rate: Any, milestones: Iterable[int], gamma: Any = 0.1) -> Schedule:
    r"""Decay by ``gamma`` at each milestone (``torch.optim.lr_scheduler.MultiStepLR``).

    .. math::
      \eta_k = \eta_0\, \gamma^{\#\{m \in \text{milestones} : m \le k\}}

    A milestone listed twice decays twice, and a milestone at 0 already applies to the
    first step, as in torch.

    Args:
      learning_rate: initial lr, ``>= 0``.
      milestones: static; step indices (integers ``>= 0``, any order, repeats allowed).
      gamma: multiplicative decay, ``>= 0``.

    Returns:
      A schedule ``count -> lr``.

    Example:
      >>> from jaxopt_adv.torch.lr_scheduler import multistep_lr
      >>> schedule = multistep_lr(1.0, milestones=[1, 3, 3], gamma=0.5)
      >>> [float(schedule(k)) for k in range(5)]
      [1.0, 0.5, 0.5, 0.125, 0.125]

    References:
      mirrors ``torch.optim.lr_scheduler.MultiStepLR`` (torch 2.13).
    """
    check_learning_rate(learning_rate)
    milestones = sorted(milestones)
    for m in milestones:
        _check_count(m, "milestone", 0)
    check_nonnegative(gamma, "gamma")
    marks = jnp.asarray(milestones, jnp.int32).reshape(-1)

    def schedule(count):
        k, _ = _count(count)
        passed = jnp.sum(k[..., None] >= marks, axis=-1).astype(scalar_dtype())
        return learning_rate * jnp.power(jnp.asarray(gamma, scalar_dtype()), passed)

    def factor(k):
        repeats = jnp.sum(k[..., None] == marks, axis=-1).astype(scalar_dtype())
        return jnp.where(repeats > 0, jnp.power(jnp.asarray(gamma, scalar_dtype()), repeats), 1.0)

    return with_rule(schedule, scaling("MultiStepLR", factor))


def exponential_lr(learning_rate: Any, gamma: Any) -> Schedule:
    r"""Decay by ``gamma`` every step (``torch.optim.lr_scheduler.ExponentialLR``).

    .. math::
      \eta_k = \eta_0\, \gamma^k

    Args:
      learning_rate: initial lr, ``>= 0``.
      gamma: multiplicative decay, ``>= 0``.

    Returns:
      A schedule ``count -> lr``.

    Example:
      >>> from jaxopt_adv.torch.lr_scheduler import exponential_lr
      >>> schedule = exponential_lr(2.0, gamma=0.5)
      >>> [float(schedule(k)) for k in range(4)]
      [2.0, 1.0, 0.5, 0.25]

    References:
      mirrors ``torch.optim.lr_scheduler.ExponentialLR`` (torch 2.13).
    """
    check_learning_rate(learning_rate)
    check_nonnegative(gamma, "gamma")

    def schedule(count):
        _, t = _count(count)
        return learning_rate * jnp.power(jnp.asarray(gamma, t.dtype), t)

    def factor(k):
        return jnp.where(k == 0, 1.0, gamma)

    return with_rule(schedule, scaling("ExponentialLR", factor))


def _half_cosine(k: jax.Array, T_max: int, dtype: Any) -> jax.Array:  # noqa: N803
    """``(1 + cos(pi k / T_max)) / 2`` as ``sin^2(pi d / (2 T_max))``, ``d`` the distance (an
    exact integer) from ``k`` to the nearest odd multiple of ``T_max``: no cancellation near
    the minima, no large float32 argument; in float64 it agrees with torch's form to
    ~1e-15."""
    d = jnp.abs(k % (2 * T_max) - T_max).astype(dtype)
    return jnp.sin(math.pi / (2 * T_max) * d) ** 2


def cosine_annealing_lr(learning_rate: Any, T_max: int, eta_min: Any = 0.0) -> Schedule:  # noqa: N803
    r"""Cosine annealing without restarts (``torch.optim.lr_scheduler.CosineAnnealingLR``).

    .. math::
      \eta_k = \eta_{\min} + \tfrac12(\eta_0 - \eta_{\min})\big(1 + \cos(\pi k / T_{\max})\big)

    for *every* k: past ``T_max`` the lr follows the cosine back up to :math:`\eta_0` at
    ``2 T_max``, down again at ``3 T_max``, and so on. That is what torch's recursive
    update does (it switches to an additive step right after each minimum); over three
    periods the two agree to 1e-13 relative in float64 for ``T_max <= 200`` (1e-11 near
    the minima for ``T_max = 1000``: torch's ratio of two small cosines drifts). This
    form, ``sin^2`` of the exact integer distance to the nearest minimum, stays accurate
    in float32 too.

    Args:
      learning_rate: initial (maximum) lr :math:`\eta_0`, ``>= 0``.
      T_max: static; half period, an integer ``>= 1``.
      eta_min: minimum lr, ``>= 0``.

    Returns:
      A schedule ``count -> lr``.

    Example:
      >>> from jaxopt_adv.torch.lr_scheduler import cosine_annealing_lr
      >>> schedule = cosine_annealing_lr(1.0, T_max=2)
      >>> [float(schedule(k)) for k in range(5)]
      [1.0, 0.5, 0.0, 0.5, 1.0]

    References:
      Loshchilov, Hutter, "SGDR: Stochastic Gradient Descent with Warm Restarts",
      ICLR 2017; mirrors ``torch.optim.lr_scheduler.CosineAnnealingLR`` (torch 2.13).

    Warning:
      ``optax.cosine_decay_schedule(lr, T_max, alpha=eta_min / lr)`` matches only up to
      ``T_max`` and then stays at ``eta_min``.
    """
    check_learning_rate(learning_rate)
    _check_count(T_max, "T_max", 1)
    check_nonnegative(eta_min, "eta_min")

    def schedule(count):
        k, _ = _count(count)
        weight = _half_cosine(k, T_max, scalar_dtype())
        return eta_min + (learning_rate - eta_min) * weight

    def step(k, lr):
        # torch's recursion: a ratio of cosines, applied to lr - eta_min, and an
        # addition on the step after each minimum (where that ratio is 0 / 0)
        t = k.astype(lr.dtype)
        if t.dtype == jnp.float64:  # torch's form, to its rounding
            ratio = (1 + jnp.cos(math.pi * t / T_max)) / (1 + jnp.cos(math.pi * (t - 1) / T_max))
        else:  # 1 + cos(pi k / T) = 2 sin^2(pi d / 2T), d as in the closed form: no cancellation
            ratio = _half_cosine(k, T_max, t.dtype) / _half_cosine(k - 1, T_max, t.dtype)
        after_minimum = (k - 1 - T_max) % (2 * T_max) == 0
        rise = lr + (learning_rate - eta_min) * (1 - math.cos(math.pi / T_max)) / 2
        moved = jnp.where(after_minimum, rise, ratio * (lr - eta_min) + eta_min)
        return jnp.where(k == 0, lr, moved)

    return with_rule(schedule, TorchRule("CosineAnnealingLR", step, product=False))


def linear_lr(
    learning_rate: Any,
    start_factor: Any = 1.0 / 3,
    end_factor: Any = 1.0,
    total_iters: int = 5,
) -> Schedule:
    r"""Linear ramp of the lr factor (``torch.optim.lr_scheduler.LinearLR``).

    .. math::
      \eta_k = \eta_0 \Big(s + (e - s)\frac{\min(k, T)}{T}\Big)

    With ``total_iters = 0`` torch keeps the start factor forever (its recursion never
    moves), and so does this schedule.

    Args:
      learning_rate: base lr :math:`\eta_0`, ``>= 0``.
      start_factor: :math:`s` in ``(0, 1]`` (torch's range).
      end_factor: :math:`e` in ``[0, 1]``.
      total_iters: static; steps :math:`T` of the ramp, an integer ``>= 0``.

    Returns:
      A schedule ``count -> lr``.

    Example:
      >>> from jaxopt_adv.torch.lr_scheduler import linear_lr
      >>> schedule = linear_lr(1.0, start_factor=0.5, end_factor=1.0, total_iters=2)
      >>> [float(schedule(k)) for k in range(4)]
      [0.5, 0.75, 1.0, 1.0]

    References:
      mirrors ``torch.optim.lr_scheduler.LinearLR`` (torch 2.13); optax's
      ``linear_schedule(lr * s, lr * e, T)`` gives the same values for ``T >= 1``.
    """
    check_learning_rate(learning_rate)
    check_interval(start_factor, "start_factor", 0.0, 1.0, low_open=True)
    check_interval(end_factor, "end_factor", 0.0, 1.0)
    _check_count(total_iters, "total_iters", 0)

    def schedule(count):
        k, _ = _count(count)
        if total_iters == 0:
            factor = jnp.broadcast_to(jnp.asarray(start_factor, scalar_dtype()), k.shape)
        else:
            # Anchored at the end (exact there, also for end_factor = 0).
            left = (total_iters - jnp.minimum(k, total_iters)).astype(scalar_dtype())
            factor = end_factor + (start_factor - end_factor) * left / total_iters
        return learning_rate * factor

    def step_factor(k):
        t = k.astype(scalar_dtype())
        slope = end_factor - start_factor
        ramp = 1.0 + slope / (total_iters * start_factor + (t - 1) * slope)
        return jnp.where(k == 0, start_factor, jnp.where(k > total_iters, 1.0, ramp))

    # torch restarts it after a milestone with its closed form, which divides by
    # total_iters
    restart = "LinearLR(total_iters=0) divides by zero" if total_iters == 0 else None
    return with_rule(schedule, scaling("LinearLR", step_factor, restart=restart))


def _one_cycle_phase_ends(total_steps: int, pct_start: float, three_phase: bool) -> list[float]:
    """torch's phase ends (floats, last step of each phase), computed as torch does."""
    if three_phase:
        return [
            float(pct_start * total_steps) - 1,
            float(2 * pct_start * total_steps) - 2,
            float(total_steps - 1),
        ]
    return [float(pct_start * total_steps) - 1, float(total_steps - 1)]


def _check_one_cycle(total_steps: Any, pct_start: Any, anneal_strategy: Any) -> None:
    _check_count(total_steps, "total_steps", 1)
    check(
        is_concrete_number(pct_start) and 0.0 <= pct_start <= 1.0,
        f"Invalid pct_start value: {pct_start} (pct_start must be a number in [0, 1])",
    )
    check(
        anneal_strategy in ("cos", "linear"),
        f"Invalid anneal_strategy: {anneal_strategy!r} (must be 'cos' or 'linear')",
    )
    # torch divides 0 by 0 (ZeroDivisionError) when its first phase has length 0.
    check(
        float(pct_start * total_steps) != 1.0,
        f"pct_start * total_steps must not be 1 (got {pct_start} * {total_steps}): the "
        "first phase would have zero length (torch raises ZeroDivisionError)",
    )


def _offset(k: jax.Array, a: float, dtype: Any) -> jax.Array:
    """``k - a`` for an integer array ``k`` and a Python float ``a``, accurate in float32.

    Split ``a`` into its nearest integer and an exactly representable residue: the
    integer part is subtracted exactly, so a step a hair past a phase end stays a hair
    past it (torch's ends can be ``998.9999999999999``).
    """
    whole = round(a)
    return (k - whole).astype(dtype) - (a - whole)


def _anneal(strategy: str, v0: Any, v1: Any, k: jax.Array, start: float, end: float) -> jax.Array:
    """torch's ``_annealing_cos`` / ``_annealing_linear`` from ``v0`` at ``start`` to ``v1``.

    Computed as ``v0 * w(1 - pct) + v1 * w(pct)`` with ``w(x) = sin^2(pi x / 2)`` (cos:
    the same as torch's ``v1 + (v0 - v1) / 2 * (1 + cos(pi pct))``) or ``w(x) = x``
    (linear), each weight from its own offset: two non-negative terms, no cancellation.
    torch's linear form ``(v1 - v0) * pct + v0`` cancels near a tiny final lr: in float32
    it would be 0.7% off the final lr (default factors); in float64 the cancellation is
    torch's own rounding, up to 1.8e-11 relative (under one ulp of ``max_lr``), where
    this form stays within a few ulps of the exact value.
    """
    dtype = scalar_dtype()
    length = end - start
    length = length if length != 0 else 1.0  # an empty phase is never used (see caller)
    pct = _offset(k, start, dtype) / length
    left = -_offset(k, end, dtype) / length  # 1 - pct
    if strategy == "cos":
        return v0 * jnp.sin(math.pi / 2 * left) ** 2 + v1 * jnp.sin(math.pi / 2 * pct) ** 2
    return v0 * left + v1 * pct


def _one_cycle(
    total_steps: int,
    pct_start: float,
    anneal_strategy: str,
    three_phase: bool,
    values: Sequence[tuple[Any, Any]],
) -> Schedule:
    """Piecewise annealing with torch's phase boundaries; ``values[i]`` = (start, end)."""
    ends = _one_cycle_phase_ends(total_steps, pct_start, three_phase)
    starts = [0.0, *ends[:-1]]
    final = values[-1][1]

    def schedule(count):
        k = jnp.asarray(count)
        pieces = [
            _anneal(anneal_strategy, v0, v1, k, start, end)
            for start, end, (v0, v1) in zip(starts, ends, values, strict=True)
        ]
        # torch takes the first phase with ``step <= end_step`` (a float: floor it for
        # integer steps), else the last one.
        conditions = [k <= math.floor(end) for end in ends[:-1]]
        value = jnp.select(conditions, pieces[:-1], default=pieces[-1])
        # Past total_steps torch raises; at total_steps itself an empty or negative last
        # phase divides by zero or by a rounding residue. Both hold the final value.
        past_end = k > total_steps
        if ends[-1] - starts[-1] <= 0:
            in_last = ~jnp.any(jnp.stack(conditions), axis=0)
            past_end |= (k == total_steps) & in_last
        return jnp.where(past_end, jnp.asarray(final, value.dtype), value)

    return schedule


def one_cycle_lr(
    max_lr: Any,
    total_steps: int,
    pct_start: float = 0.3,
    anneal_strategy: str = "cos",
    div_factor: Any = 25.0,
    final_div_factor: Any = 1e4,
    three_phase: bool = False,
) -> Schedule:
    r"""The 1cycle learning rate (``torch.optim.lr_scheduler.OneCycleLR``).

    The lr anneals from ``max_lr / div_factor`` up to ``max_lr``, then down to
    ``max_lr / div_factor / final_div_factor`` (with ``three_phase``: up, back down to
    the initial lr, then down to the minimum). Phases end at torch's float steps
    ``pct_start * total_steps - 1`` (and ``2 * pct_start * total_steps - 2`` for three
    phases) and ``total_steps - 1``; within a phase running from step :math:`a` to
    :math:`b`, :math:`p = (k - a) / (b - a)` and

    .. math::
      \text{cos: } \eta = e + \tfrac12 (s - e)(1 + \cos \pi p), \qquad
      \text{linear: } \eta = s + (e - s) p

    torch accepts counts ``0 .. total_steps`` (the last one extrapolates the final
    phase slightly) and raises after that; counts beyond ``total_steps`` here return the
    final lr.

    Args:
      max_lr: peak lr, ``>= 0``.
      total_steps: static; number of steps in the cycle, an integer ``>= 1`` (torch's
        ``epochs * steps_per_epoch`` form: pass the product).
      pct_start: static; fraction of the cycle spent increasing the lr, in ``[0, 1]``;
        ``pct_start * total_steps == 1`` is rejected (torch divides by zero).
      anneal_strategy: static; ``'cos'`` or ``'linear'``.
      div_factor: initial lr is ``max_lr / div_factor``, ``> 0``.
      final_div_factor: minimum lr is ``initial_lr / final_div_factor``, ``> 0``.
      three_phase: static; use the paper's three-phase schedule.

    Returns:
      A schedule ``count -> lr``.

    Example:
      >>> from jaxopt_adv.torch.lr_scheduler import one_cycle_lr
      >>> schedule = one_cycle_lr(1.0, total_steps=5, pct_start=0.4, div_factor=10.0,
      ...                         final_div_factor=100.0, anneal_strategy="linear")
      >>> [round(float(schedule(k)), 4) for k in range(5)]
      [0.1, 1.0, 0.667, 0.334, 0.001]

    References:
      Smith, Topin, "Super-Convergence: Very Fast Training of Neural Networks Using
      Large Learning Rates", 2017; mirrors ``torch.optim.lr_scheduler.OneCycleLR``
      (torch 2.13). Cycle the momentum with :func:`one_cycle_momentum`.

    Warning:
      ``optax.cosine_onecycle_schedule`` puts the phase ends at ``int(pct * T)`` and
      ``T`` (1.5e-2 off torch for T = 20); ``optax.linear_onecycle_schedule`` is a
      different three-phase shape.
    """
    check_learning_rate(max_lr)
    _check_one_cycle(total_steps, pct_start, anneal_strategy)
    check_interval(div_factor, "div_factor", 0.0, math.inf, low_open=True)
    check_interval(final_div_factor, "final_div_factor", 0.0, math.inf, low_open=True)
    initial_lr = max_lr / div_factor
    min_lr = initial_lr / final_div_factor
    if three_phase:
        values = [(initial_lr, max_lr), (max_lr, initial_lr), (initial_lr, min_lr)]
    else:
        values = [(initial_lr, max_lr), (max_lr, min_lr)]
    schedule = _one_cycle(total_steps, pct_start, anneal_strategy, three_phase, values)
    return with_rule(schedule, TorchRule("OneCycleLR", None))


def one_cycle_momentum(
    total_steps: int,
    pct_start: float = 0.3,
    base_momentum: Any = 0.85,
    max_momentum: Any = 0.95,
    anneal_strategy: str = "cos",
    three_phase: bool = False,
) -> Schedule:
    r"""The momentum / beta1 that ``OneCycleLR(cycle_momentum=True)`` sets each step.

    Inverse to the lr of :func:`one_cycle_lr` with the same ``total_steps``,
    ``pct_start``, ``anneal_strategy`` and ``three_phase``: ``max_momentum`` ->
    ``base_momentum`` while the lr rises, back to ``max_momentum`` while it falls (and
    held at ``max_momentum`` in the third phase). Feed it to the momentum or ``b1`` of
    a torch-exact optimizer through ``optax.inject_hyperparams``; torch writes it into
    ``momentum`` for SGD-like optimizers and ``betas[0]`` for Adam-like ones.

    Args:
      total_steps: static; as in :func:`one_cycle_lr`.
      pct_start: static; as in :func:`one_cycle_lr`.
      base_momentum: momentum at the lr peak, ``>= 0``.
      max_momentum: momentum at the start (and end), ``>= 0``.
      anneal_strategy: static; ``'cos'`` or ``'linear'``.
      three_phase: static; as in :func:`one_cycle_lr`.

    Returns:
      A schedule ``count -> momentum``.

    Example:
      >>> import optax
      >>> import jaxopt_adv
      >>> from jaxopt_adv.torch.lr_scheduler import one_cycle_lr, one_cycle_momentum
      >>> import jax.numpy as jnp
      >>> [round(float(one_cycle_momentum(100)(k)), 4) for k in (0, 29, 99)]
      [0.95, 0.85, 0.95]
      >>> opt = optax.inject_hyperparams(jaxopt_adv.torch.sgd)(
      ...     learning_rate=one_cycle_lr(0.1, 100), momentum=one_cycle_momentum(100))
      >>> params = jnp.zeros(2)
      >>> state = opt.init(params)
      >>> u, state = opt.update(jnp.ones(2), state, params)
      >>> state.hyperparams["momentum"], u
      (Array(0.95, dtype=float32), Array([-0.004, -0.004], dtype=float32))

    References:
      Smith, "A disciplined approach to neural network hyper-parameters: Part 1", 2018;
      mirrors the momentum cycling of ``torch.optim.lr_scheduler.OneCycleLR``
      (torch 2.13).
    """
    _check_one_cycle(total_steps, pct_start, anneal_strategy)
    check_nonnegative(base_momentum, "base_momentum")
    check_nonnegative(max_momentum, "max_momentum")
    values = [(max_momentum, base_momentum), (base_momentum, max_momentum)]
    if three_phase:
        values.append((max_momentum, max_momentum))
    return _one_cycle(total_steps, pct_start, anneal_strategy, three_phase, values)


class ReduceLROnPlateauState(NamedTuple):
    """State of :func:`reduce_lr_on_plateau` (torch's scheduler attributes)."""

    count: chex.Array  # int32: losses seen (torch ``last_epoch``)
    scale: chex.Array  # float: current lr / base lr, applied to the updates
    best: chex.Array  # float: best loss so far (torch ``best``; +-inf at start)
    num_bad_epochs: chex.Array  # int32
    cooldown_counter: chex.Array  # int32


def reduce_lr_on_plateau(
    mode: str = "min",
    factor: Any = 0.1,
    patience: int = 10,
    threshold: Any = 1e-4,
    threshold_mode: str = "rel",
    cooldown: int = 0,
    min_scale: Any = 0.0,
    eps: Any = 1e-8,
    *,
    base_learning_rate: Any = 1.0,
) -> optax.GradientTransformationExtraArgs:
    r"""Scale the updates down when the loss stops improving (``ReduceLROnPlateau``).

    Put it after the optimizer, ``optax.chain(jaxopt_adv.torch.sgd(lr, ...),
    reduce_lr_on_plateau(...))``, and pass the loss: ``update(grads, state, params,
    value=loss)``. The updates are multiplied by ``state.scale`` (torch's
    ``lr / base_lr``): it scales the whole step, weight decay included, which is what
    torch's lr does for the optimizers whose step is proportional to the lr (SGD, Adam,
    AdamW, Adamax, NAdam, RAdam, RMSprop, Adagrad, Adadelta, SparseAdam).

    **Rprop and ASGD.** Chained after ``rprop`` or ``asgd`` this is *not* torch:
    ``torch.optim.Rprop`` reads the lr only at its first step (to set its step sizes),
    so torch's plateau never changes an Rprop run; ``torch.optim.ASGD`` computes its
    ``eta = lr / (1 + lambd lr t)^alpha`` from the lr at the end of each step, not
    linearly. The exact forms: for Rprop, leave the plateau out; for ASGD, run this
    transformation on its own for ``state.scale`` and write ``base_lr * scale`` into
    ``optax.inject_hyperparams(jaxopt_adv.torch.asgd)``'s ``learning_rate`` one update
    late (update k gets the scale after ``loss_0 .. loss_{k-2}``), both checked against
    torch to 1e-12.

    **Which loss affects which update.** torch's loop is ``loss_k = f(theta_k);
    optimizer.step(); scheduler.step(loss_k)``, so update k uses the lr set by
    ``loss_0 .. loss_{k-1}``. Here update k is first scaled by the current scale, *then*
    ``value = loss_k`` (the loss at the parameters the gradients were taken at) updates
    the plateau state; ``loss_k`` takes effect from update k + 1 on. This reproduces
    torch exactly, step for step. (``optax.contrib.reduce_on_plateau`` uses the loss
    before scaling, one step earlier.) Per update, as torch does per ``step(loss)``:

    .. code-block:: text

      better = loss < best * (1 - threshold)   [min, rel]; loss < best - threshold [min, abs]
               loss > best * (1 + threshold)   [max, rel]; loss > best + threshold [max, abs]
      best, bad = (loss, 0) if better else (best, bad + 1)
      if cooldown_counter > 0: cooldown_counter -= 1; bad = 0
      if bad > patience:
          new = max(scale * factor, min_scale)
          if base_learning_rate * (scale - new) > eps: scale = new
          cooldown_counter = cooldown; bad = 0

    **min_lr and eps.** torch's ``min_lr`` is an absolute lr; here ``min_scale`` is
    relative to the base lr (``min_scale = min_lr / lr``). torch only changes the lr if
    ``old_lr - new_lr > eps`` (absolute): pass ``base_learning_rate=lr`` (the
    optimizer's lr) to apply that rule exactly, with torch's ``eps``; with the default
    ``1.0`` the rule is applied to the scale itself.

    Args:
      mode: static; ``'min'`` (the loss should fall) or ``'max'``.
      factor: lr multiplier on a plateau, in ``[0, 1)``.
      patience: number of bad steps tolerated before reducing, an integer ``>= 0``
        (an array when injected).
      threshold: significance threshold for a new best, ``>= 0``.
      threshold_mode: static; ``'rel'`` or ``'abs'``.
      cooldown: steps to wait after a reduction before counting bad steps, an integer
        ``>= 0`` (an array when injected).
      min_scale: lower bound of the scale (torch ``min_lr / lr``), ``>= 0``.
      eps: minimal change of the lr (in units of ``base_learning_rate``), ``>= 0``.
      base_learning_rate: the optimizer's lr, used only by the ``eps`` rule, ``> 0``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state
      :class:`ReduceLROnPlateauState`; ``update`` requires the extra argument ``value``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch.lr_scheduler import reduce_lr_on_plateau
      >>> tx = reduce_lr_on_plateau(factor=0.5, patience=0)
      >>> state = tx.init(jnp.zeros(2))
      >>> for loss in (1.0, 2.0, 2.0):
      ...     u, state = tx.update(jnp.ones(2), state, value=loss)
      >>> u, state.scale
      (Array([0.5, 0.5], dtype=float32), Array(0.25, dtype=float32))

    References:
      mirrors ``torch.optim.lr_scheduler.ReduceLROnPlateau`` (torch 2.13).
    """
    check(mode in ("min", "max"), f"Invalid mode: {mode!r} (must be 'min' or 'max')")
    check(
        threshold_mode in ("rel", "abs"),
        f"Invalid threshold_mode: {threshold_mode!r} (must be 'rel' or 'abs')",
    )
    check_interval(factor, "factor", 0.0, 1.0, high_open=True)
    _check_count(patience, "patience", 0, traced_ok=True)
    _check_count(cooldown, "cooldown", 0, traced_ok=True)
    check_nonnegative(threshold, "threshold")
    check_nonnegative(min_scale, "min_scale")
    check_nonnegative(eps, "eps")
    check_interval(base_learning_rate, "base_learning_rate", 0.0, math.inf, low_open=True)

    def is_better(value, best):
        if mode == "min" and threshold_mode == "rel":
            return value < best * (1.0 - threshold)
        if mode == "min":
            return value < best - threshold
        if threshold_mode == "rel":
            return value > best * (threshold + 1.0)
        return value > best + threshold

    def init_fn(params: optax.Params) -> ReduceLROnPlateauState:
        del params
        dtype = scalar_dtype()
        return ReduceLROnPlateauState(
            count=jnp.zeros([], jnp.int32),
            scale=jnp.ones([], dtype),
            best=jnp.asarray(math.inf if mode == "min" else -math.inf, dtype),
            num_bad_epochs=jnp.zeros([], jnp.int32),
            cooldown_counter=jnp.zeros([], jnp.int32),
        )

    def update_fn(updates, state, params=None, *, value=None, **extra_args):
        del params, extra_args
        if value is None:
            raise ValueError(
                "reduce_lr_on_plateau needs the loss: call update(updates, state, params, "
                "value=loss)"
            )
        loss = jnp.asarray(value, state.best.dtype)
        check(loss.ndim == 0, f"value must be a scalar loss, got shape {loss.shape}")
        scale = state.scale
        updates = jax.tree.map(lambda u: (u * scale.astype(u.dtype)).astype(u.dtype), updates)

        better = is_better(loss, state.best)
        best = jnp.where(better, loss, state.best)
        bad = jnp.where(better, 0, state.num_bad_epochs + 1)
        in_cooldown = state.cooldown_counter > 0
        cooldown_counter = jnp.where(
            in_cooldown, state.cooldown_counter - 1, state.cooldown_counter
        )
        bad = jnp.where(in_cooldown, 0, bad)
        reduce = bad > patience
        reduced = jnp.maximum(scale * factor, min_scale).astype(scale.dtype)
        scale = jnp.where(reduce & (base_learning_rate * (scale - reduced) > eps), reduced, scale)
        new_state = ReduceLROnPlateauState(
            count=optax.safe_increment(state.count),
            scale=scale,
            best=best,
            num_bad_epochs=jnp.where(reduce, 0, bad).astype(jnp.int32),
            cooldown_counter=jnp.where(reduce, cooldown, cooldown_counter).astype(jnp.int32),
        )
        return updates, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
