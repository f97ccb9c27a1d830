"""Numerics and argument checks shared by every jaxopt_adv transform.

Each helper exists once here and is imported, never re-typed: hyperparameter
validation (only for concrete Python numbers, so traced values coming through
``optax.inject_hyperparams`` pass untouched), the static "is this option off?"
test used to leave optional blocks out of a chain, and the scalar/dtype rules
used by the update functions.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

__all__ = [
    "NO_PARAMS_MSG",
    "check",
    "check_beta",
    "check_count",
    "check_interval",
    "check_learning_rate",
    "check_nonnegative",
    "check_tuple",
    "decay_power",
    "derived_sharding",
    "filled_like",
    "is_concrete_number",
    "is_static_zero",
    "log_of",
    "scalar_dtype",
    "tree_map_multi",
    "unshard_trailing_axes",
    "with_gradient_dtype",
]


# optax's wording; optax keeps its own constant private (``optax.NO_PARAMS_MSG`` does not
# exist in optax 0.2.8).
NO_PARAMS_MSG = (
    "You are using a transformation that requires the current value of "
    "parameters, but you are not passing `params` when calling `update`."
)


def is_concrete_number(value: Any) -> bool:
    """True for Python / NumPy real numbers (not bools, arrays, tracers or schedules)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_static_zero(value: Any) -> bool:
    """True when ``value`` is the Python number 0, so an optional block can be left out.

    Arrays (e.g. hyperparameters injected by ``optax.inject_hyperparams``) are never
    static zeros: the block stays in, which keeps ``init`` and ``update`` consistent.
    """
    return is_concrete_number(value) and value == 0


def check(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` when a concrete hyperparameter is out of range."""
    if not condition:
        raise ValueError(message)


def _in_range(value: Any, low: float, high: float, low_open: bool, high_open: bool) -> bool:
    if not is_concrete_number(value):
        return True  # traced or array values are the caller's responsibility
    value = float(value)
    if math.isnan(value):
        return False
    above = value > low if low_open else value >= low
    below = value < high if high_open else value <= high
    return above and below


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    """``[0, 1)``-style text of an interval."""
    return f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def check_count(value: Any, name: str, minimum: int = 1) -> None:
    """A count (steps, classes, epochs) must be a Python int ``>= minimum``; arrays (e.g.
    injected through ``optax.inject_hyperparams``) pass unchecked."""
    if isinstance(value, jax.Array):
        return
    check(
        isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum,
        f"Invalid {name} value: {value} ({name} must be an int >= {minimum})",
    )


def check_learning_rate(learning_rate: Any, name: str = "learning_rate") -> None:
    """torch's rule, made finite: a concrete learning rate must be in ``[0, inf)``
    (schedules are not checked)."""
    check(
        _in_range(learning_rate, 0.0, math.inf, False, True),
        f"Invalid learning rate: {learning_rate} ({name} must be in [0, inf))",
    )


def check_nonnegative(
    value: Any, name: str, torch_name: str | None = None, *, allow_inf: bool = False
) -> None:
    """``value`` in ``[0, inf)`` (``[0, inf]`` with ``allow_inf``, for thresholds where
    ``inf`` means "off") with torch's wording ``Invalid <name> value: <value>``."""
    check(
        _in_range(value, 0.0, math.inf, False, not allow_inf),
        f"Invalid {torch_name or name} value: {value} "
        f"({name} must be in {_interval(0.0, math.inf, False, not allow_inf)})",
    )


def check_beta(value: Any, index: int, name: str) -> None:
    """``0 <= beta < 1`` with torch's wording ``Invalid beta parameter at index i``."""
    check(
        _in_range(value, 0.0, 1.0, False, True),
        f"Invalid beta parameter at index {index}: {value} ({name} must be in [0, 1))",
    )


def check_interval(
    value: Any,
    name: str,
    low: float,
    high: float,
    *,
    low_open: bool = False,
    high_open: bool = False,
    torch_name: str | None = None,
) -> None:
    """``value`` in the interval with torch's wording ``Invalid <name> value: <value>``.

    An infinite bound is a value like any other: pass ``high=math.inf, high_open=True``
    for "any finite number above ``low``".
    """
    check(
        _in_range(value, low, high, low_open, high_open),
        f"Invalid {torch_name or name} value: {value} "
        f"({name} must be in {_interval(low, high, low_open, high_open)})",
    )


def check_tuple(value: Any, name: str, length: int) -> None:
    """``value`` must be a tuple or list of ``length`` entries (e.g. ``etas``, ``betas``)."""
    check(
        isinstance(value, (tuple, list)) and len(value) == length,
        f"Invalid {name} value: {value!r} ({name} must be a tuple of {length} numbers)",
    )


def scalar_dtype(leaf_dtype: Any = None) -> jnp.dtype:
    """dtype for step-dependent scalars (bias corrections, decay powers).

    At least float32, float64 for float64 leaves (or when x64 is on and no leaf dtype is
    given): torch computes these in Python doubles, so float64 runs must too.
    """
    if leaf_dtype is None:
        return jnp.result_type(float)
    return jnp.promote_types(jnp.float32, leaf_dtype)


def log_of(beta: Any) -> Any:
    """``log(beta)``: in Python double for a concrete number (``-inf`` for 0), else traced."""
    if is_concrete_number(beta):
        return math.log(beta) if beta > 0 else -math.inf
    return jnp.log(beta)


def decay_power(beta: Any, t: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``(beta**t, 1 - beta**t)`` for a float step ``t``, accurate to float rounding.

    torch evaluates bias corrections in Python doubles. In float32, ``1 - beta**t`` loses
    digits for small ``t`` (0.999 is not a float32 number, and the subtraction cancels:
    2.5e-5 relative error at t=6); ``exp(t log beta)`` and ``-expm1(t log beta)`` with the
    logarithm taken in double keep both at float32 precision.
    """
    x = t * log_of(beta)
    return jnp.exp(x), -jnp.expm1(x)


def tree_map_multi(fn: Callable[..., tuple], n_out: int, tree: Any, *rest: Any) -> tuple:
    """Map ``fn`` (returning an ``n_out``-tuple) over leaves; return one tree per output.

    The per-leaf functions of the optimizers compute the update and every new moment
    together; this splits the results back into trees shaped like ``tree``.
    """
    leaves, treedef = jax.tree.flatten(tree)
    others = [treedef.flatten_up_to(r) for r in rest]
    if not leaves:
        return tuple(treedef.unflatten([]) for _ in range(n_out))
    outputs = [fn(*args) for args in zip(leaves, *others, strict=True)]
    return tuple(treedef.unflatten(list(col)) for col in zip(*outputs, strict=True))


def unshard_trailing_axes(x: jax.Array, count: int) -> jax.Array:
    """``x`` with its last ``count`` axes gathered if they are explicitly sharded.

    Stencils (shifted slices) over an axis need its neighbours; under explicit sharding
    (``jax.sharding.AxisType.Explicit``) JAX refuses such slices, so the axes are gathered
    first. Auto-sharded and unsharded arrays come back untouched (XLA adds any halo
    exchange itself there).
    """
    sharding = jax.typeof(x).sharding
    spec = tuple(sharding.spec) + (None,) * (x.ndim - len(sharding.spec))
    if x.ndim < count or all(axis is None for axis in spec[x.ndim - count :]):
        return x
    target = jax.sharding.PartitionSpec(*spec[: x.ndim - count], *(None,) * count)
    return jax.sharding.reshard(x, jax.sharding.NamedSharding(sharding.mesh, target))


def derived_sharding(param: Any, axes: tuple[int | None, ...]) -> Any:
    """The sharding of a state array built from ``param``'s axes, or ``None``.

    ``axes`` names, for each state axis, the param axis it follows (``None``: a new axis of
    size 1, as a reduction with ``keepdims`` leaves). The state takes the param's mesh axes
    on those axes and is unsharded elsewhere: the layout JAX gives a reduction of the param
    under explicit sharding, so the state keeps one type from ``init`` to ``update`` (a
    ``lax.scan`` carry must). A concrete param with a ``NamedSharding`` gives a concrete
    sharding; a traced one (under ``jit`` or ``eval_shape``) its abstract sharding when the
    mesh has explicit axes. Anything else (one device, auto axes under ``jit``) gives
    ``None``: XLA places the state itself.
    """
    if isinstance(param, jax.core.Tracer):
        sharding = jax.typeof(param).sharding
        explicit = jax.sharding.AxisType.Explicit in tuple(sharding.mesh.axis_types)
        if not isinstance(sharding, jax.sharding.NamedSharding) or not explicit:
            return None
    else:
        sharding = getattr(param, "sharding", None)
        if not isinstance(sharding, jax.sharding.NamedSharding):
            return None
    ndim = len(jnp.shape(param))
    spec = tuple(sharding.spec) + (None,) * (ndim - len(sharding.spec))
    state_spec = jax.sharding.PartitionSpec(*(None if a is None else spec[a] for a in axes))
    return jax.sharding.NamedSharding(sharding.mesh, state_spec)


def filled_like(
    param: Any,
    value: Any,
    dtype: Any,
    shape: tuple[int, ...] | None = None,
    *,
    axes: tuple[int | None, ...] | None = None,
) -> Any:
    """A state array filled with ``value``: shaped like the param, or by ``shape``/``axes``.

    With neither ``shape`` nor ``axes`` it is built with ``jnp.full_like``, so it carries
    the param's sharding (state follows the params on a mesh). ``axes`` (see
    :func:`derived_sharding`) builds a reduced state, e.g. ``axes=(0, None)`` for one
    value per row of a matrix, placed like the param on the axes it keeps. ``shape`` alone
    builds a replicated array (a per-leaf scalar: ``shape=()``).
    """
    if axes is not None:
        param_shape = tuple(jnp.shape(param))
        shape = tuple(1 if a is None else param_shape[a] for a in axes)
        sharding = derived_sharding(param, axes)
        if sharding is None:
            return jnp.full(shape, value, dtype)
        if isinstance(param, jax.core.Tracer):
            return jnp.full(shape, value, dtype, out_sharding=sharding)
        return jnp.full(shape, value, dtype, device=sharding)
    if shape is None or tuple(shape) == tuple(jnp.shape(param)):
        return jnp.full_like(param, value, dtype=dtype)
    return jnp.full(shape, value, dtype)


def with_gradient_dtype(
    inner: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
    """``inner`` with every update cast back to its incoming gradient's dtype.

    optax's blocks (``add_decayed_weights``, ``scale_by_adamax``, ...) promote: a
    bfloat16 gradient meets float32 params or float32 state and comes out float32. The
    rule of this library is that updates have the gradient's dtype; the math inside
    ``inner`` still runs in the promoted dtype. A no-op when nothing was promoted.
    """
    inner = optax.with_extra_args_support(inner)

    def update_fn(updates, state, params=None, **extra_args):
        new_updates, state = inner.update(updates, state, params, **extra_args)
        cast = jax.tree.map(lambda u, g: u.astype(jnp.result_type(g)), new_updates, updates)
        return cast, state

    return optax.GradientTransformationExtraArgs(inner.init, update_fn)
