"""The kernels' scalar operands, as XLA:CPU computes them in the transforms' programs.

The fused kernels (:mod:`jaxopt_adv.fast.step`) reproduce XLA's arithmetic bit for bit, so their scalar
operands must be the values XLA multiplies by (a hyperparameter cast as ``value * leaf``
casts it, ``-lr`` as ``optax.scale_by_learning_rate`` has it) and their variant flags
must follow XLA's rewrites of the same program (a constant 1 multiplied away, ``x * a +
y * b`` factored when ``a == b`` is a power of two, a loop split into unequal parallel
tasks). The per-family plans (:mod:`.plans`) are written with these helpers.
"""

from __future__ import annotations

import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_adv._common import is_concrete_number
from jaxopt_adv._state import find_state

__all__ = [
    "cast_scalar",
    "is_factored",
    "flag_bits",
    "is_static_one",
    "learning_step",
    "moment_scalars",
    "scalar_list",
    "xla_loop_is_ragged",
]


def cast_scalar(value: Any, dtype: np.dtype) -> jax.Array | None:
    """``value`` as a 0-d ``dtype`` array, exactly as XLA sees it in ``value * leaf``;
    ``None`` when the product would be computed in another dtype (a strongly typed
    hyperparameter of a wider dtype promotes the leaf)."""
    if is_concrete_number(value):
        return jnp.asarray(value, dtype=dtype)
    if jnp.result_type(value, dtype) != dtype:
        return None
    value = jnp.asarray(value)
    if value.shape != ():
        return None
    return value.astype(dtype)


def _power_of_two(value: float) -> bool:
    return value != 0 and math.isfinite(value) and math.frexp(abs(value))[0] == 0.5


def is_factored(a: Any, b: Any, dtype: np.dtype) -> bool:
    """XLA rewrites ``x * a + y * b`` into ``(x + y) * a`` when ``a`` and ``b`` are the
    same constant power of two (e.g. ``beta = 1 - beta = 0.5``)."""
    if not (is_concrete_number(a) and is_concrete_number(b)):
        return False
    a, b = np.asarray(a, dtype), np.asarray(b, dtype)
    return bool(a == b) and _power_of_two(float(a))


def is_static_one(value: Any, dtype: np.dtype) -> bool:
    """Whether ``value`` is a Python number that becomes 1 in ``dtype``: a constant XLA's
    code generation multiplies away (``x * 1 -> x``, ``x * -1 -> -x``), which changes
    which products LLVM contracts into fused multiply-adds."""
    return is_concrete_number(value) and bool(np.asarray(value, dtype) == 1)


def learning_step(learning_rate: Any, old_inner: Any, dtype: np.dtype) -> jax.Array | str:
    """``-lr`` as ``optax.scale_by_learning_rate`` multiplies the update by it, or why it
    cannot be had (see :func:`cast_scalar`)."""
    if callable(learning_rate):  # optax.scale_by_schedule, evaluated at its old count
        schedule_state = find_state(old_inner, optax.ScaleByScheduleState)
        return jnp.array(-1 * learning_rate(schedule_state.count), dtype=dtype)
    step = cast_scalar(-1 * learning_rate, dtype)
    return f"the learning rate would promote the {dtype} arithmetic" if step is None else step


def scalar_list(named: list[tuple[str, Any]], dtype: np.dtype) -> list[jax.Array] | str:
    """The hyperparameters as 0-d ``dtype`` arrays (see :func:`cast_scalar`), or why not."""
    out = []
    for name, value in named:
        cast = cast_scalar(value, dtype)
        if cast is None:
            return f"hyperparameter {name} would promote the {dtype} arithmetic"
        out.append(cast)
    return out


def moment_scalars(wd: Any, b1: Any, b2: Any, eps: Any, dtype: np.dtype) -> list | str:
    """Adam's and NAdam's operands after the step: weight decay, b1, 1 - b1, b2, 1 - b2
    and eps (see :func:`_scalar_list`), or why not."""
    for name, beta in (("b1", b1), ("b2", b2)):
        if is_static_one(beta, dtype):  # e.g. b2 = 1 - 1e-9 in float32
            return f"hyperparameter {name} rounds to 1 in {dtype} (XLA multiplies it away)"
    named = [("weight_decay", wd), ("b1", b1), ("1 - b1", 1 - b1)]
    named += [("b2", b2), ("1 - b2", 1 - b2), ("eps", eps)]
    return scalar_list(named, dtype)


def flag_bits(maximize: bool, *variant: bool) -> int:
    """The kernels' ``flags``: bit 0 maximize, then one bit per variant option."""
    flags = 1 if maximize else 0
    for position, on in enumerate(variant):
        flags |= int(bool(on)) << (position + 1)
    return flags


def xla_loop_is_ragged(shape: tuple, dtype: np.dtype, arrays: int, scalars: int) -> bool:
    """Whether XLA:CPU splits a memory-bound loop fusion over ``shape`` into parallel
    tasks of unequal size.

    XLA's parallel task assignment gives a fusion that moves ``bytes`` (``arrays``
    arrays and ``scalars`` scalars) ``min(ceil(sqrt(cpus)), bytes // 256 KiB)`` tasks,
    in tiles of ``ceil(n / tasks)`` elements; for a loop over one (non-unit) dimension
    whose last tile is short XLA emits the loop differently (measured on this jaxlib;
    loops over several dimensions keep the usual form).
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    size = math.prod(shape)
    bytes_accessed = dtype.itemsize * (size * arrays + scalars)
    tasks = min(cpus, math.ceil(math.sqrt(cpus)), max(1, bytes_accessed // (256 << 10)))
    dims = [d for d in shape if d != 1]  # XLA drops unit dimensions
    if tasks <= 1 or len(dims) > 1:  # loops over several dimensions: the usual order
        return False
    tile = -(-size // tasks)
    return size % tile != 0
