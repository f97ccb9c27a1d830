"""Numerics and argument checks shared by every jaxopt_adv transform.

Each helper exists once here and is imported, never re-typed: hyperparameter
validation (of every concrete value: Python and NumPy numbers, NumPy and JAX arrays;
traced values coming through ``optax.inject_hyperparams`` or ``jax.jit`` pass
untouched), the check that params are floating point, the static "is this option
off?" test used to skip an optional block's arithmetic, and the scalar/dtype rules
used by the update functions.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "NO_PARAMS_MSG",
    "check",
    "check_beta",
    "check_count",
    "check_interval",
    "check_learning_rate",
    "check_nonnegative",
    "check_params",
    "check_torch_default_dtype",
    "check_tuple",
    "concrete_scalar",
    "decay_power",
    "derived_sharding",
    "filled_like",
    "fresh_array",
    "is_concrete_number",
    "is_static_zero",
    "log_of",
    "real_value",
    "renamed_keywords",
    "requires_float_params",
    "scalar_dtype",
    "skip_at_static_zero",
    "torch_decay_power",
    "torch_scalar",
    "torch_step",
    "tree_map_multi",
    "unshard_trailing_axes",
    "with_gradient_dtype",
]


_F = TypeVar("_F", bound=Callable[..., Any])

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
    """True when ``value`` is the Python number 0, so an optional block's arithmetic can
    be skipped.

    Arrays (e.g. hyperparameters injected by ``optax.inject_hyperparams``) are never
    static zeros: their value may be unknown (traced), so the arithmetic runs.
    """
    return is_concrete_number(value) and value == 0


def skip_at_static_zero(
    value: Any, block: optax.GradientTransformation
) -> optax.GradientTransformationExtraArgs:
    """``block``, or a pass-through with ``block``'s ``init`` when ``value`` is a static zero.

    For a stateless optional block such as a weight decay: it stays in the chain whatever
    ``value`` is, so the state's tree structure never depends on a hyperparameter's value
    and the plain optimizer's state and its ``optax.inject_hyperparams`` version's inner
    state are interchangeable. A Python 0 returns the updates untouched (no arithmetic,
    no ``params`` needed).
    """
    if not is_static_zero(value):
        return optax.with_extra_args_support(block)

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        return updates, state

    return optax.GradientTransformationExtraArgs(block.init, update_fn)


def check(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` when a concrete hyperparameter is out of range."""
    if not condition:
        raise ValueError(message)


def real_value(value: Any, name: str) -> np.ndarray | None:
    """The concrete value of a numeric hyperparameter as float64, ``None`` when traced.

    Concrete values are Python and NumPy real numbers and NumPy / JAX arrays of an
    integer or floating dtype (``optax.inject_hyperparams`` calls the factory with
    concrete JAX arrays at ``init``); tracers (under ``jax.jit``, ``jax.eval_shape``)
    and arrays spread over other processes cannot be read here and return ``None``, as
    do schedules (callables, which several arguments accept besides the learning rate).

    Raises:
      TypeError: naming ``name``, for a bool, a complex number, a string, ``None`` or
        any other object that is not a real number (a bool or complex array included).
    """
    if (
        isinstance(value, jax.core.Tracer)
        or (isinstance(value, jax.Array) and not value.is_fully_addressable)
        or callable(value)
    ):
        return None
    if isinstance(value, (bool, np.bool_)):
        kind = "a bool"
    elif isinstance(value, numbers.Real):
        return np.float64(value)
    elif isinstance(value, (np.ndarray, jax.Array)):
        dtype = np.dtype(value.dtype)
        if np.issubdtype(dtype, np.integer) or jnp.issubdtype(dtype, jnp.floating):
            return np.asarray(value, np.float64)
        kind = f"an array of dtype {dtype}"
    elif isinstance(value, numbers.Complex):
        kind = "a complex number"
    else:
        kind = f"a {type(value).__name__}"
    raise TypeError(f"Invalid {name} value: {value!r} ({name} must be a real number, not {kind})")


def concrete_scalar(value: Any) -> float | None:
    """A concrete real scalar (number, NumPy scalar, 0-d array) as a float, else ``None``.

    For checks between two hyperparameters (``min_lr < max_lr``), made whenever both
    are known. Unlike :func:`is_concrete_number` it reads 0-d arrays, so it must not
    decide the structure of a transform (``inject_hyperparams`` passes concrete arrays
    at ``init`` and tracers at ``update``).
    """
    if isinstance(value, (bool, np.bool_, jax.core.Tracer)) or np.ndim(value) != 0:
        return None
    try:
        values = real_value(value, "value")
    except TypeError:
        return None  # the argument's own check names it
    return None if values is None else float(values)


def _in_range(
    value: Any, name: str, low: float, high: float, low_open: bool, high_open: bool
) -> bool:
    """True when every concrete value is in the interval (NaN is not); traced values pass."""
    values = real_value(value, name)
    if values is None:
        return True
    above = values > low if low_open else values >= low
    below = values < high if high_open else values <= high
    return bool(np.all(above & below))


def _interval(low: float, high: float, low_open: bool, high_open: bool) -> str:
    """``[0, 1)``-style text of an interval."""
    return f"{'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def check_count(value: Any, name: str, minimum: int = 1) -> None:
    """A count (steps, classes, epochs) must be an integer ``>= minimum``: a Python or
    NumPy int, or a concrete integer array; tracers (e.g. injected through
    ``optax.inject_hyperparams`` under jit) pass unchecked. A bool, complex number or
    string is a ``TypeError``."""
    values = real_value(value, name)
    if values is None:
        return
    integral = isinstance(value, numbers.Integral) or (
        isinstance(value, (np.ndarray, jax.Array)) and np.issubdtype(value.dtype, np.integer)
    )
    check(
        integral and bool(np.all(values >= minimum)),
        f"Invalid {name} value: {value} ({name} must be an int >= {minimum})",
    )


def check_learning_rate(learning_rate: Any, name: str = "learning_rate") -> None:
    """torch's rule, made finite: a concrete learning rate must be one number (an
    array of one element, as torch's tensor ``lr``) in ``[0, inf)``.

    Schedules (callables) are not checked; ``None`` and other non-numbers are a
    ``TypeError`` naming ``name``.
    """
    if callable(learning_rate):
        return
    check(
        np.size(learning_rate) == 1,
        f"Invalid learning rate: {learning_rate} ({name} must be a single number, "
        f"not an array of shape {np.shape(learning_rate)})",
    )
    check(
        _in_range(learning_rate, name, 0.0, math.inf, False, True),
        f"Invalid learning rate: {learning_rate} ({name} must be in [0, inf))",
    )


def check_nonnegative(
    value: Any, name: str, torch_name: str | None = None, *, allow_inf: bool = False
) -> None:
    """``value`` in ``[0, inf)`` (``[0, inf]`` with ``allow_inf``, for thresholds where
    ``inf`` means "off") with torch's wording ``Invalid <name> value: <value>``."""
    check(
        _in_range(value, name, 0.0, math.inf, False, not allow_inf),
        f"Invalid {torch_name or name} value: {value} "
        f"({name} must be in {_interval(0.0, math.inf, False, not allow_inf)})",
    )


def check_positive(value: Any, name: str, torch_name: str | None = None) -> None:
    """``value`` a finite number above 0, ``(0, inf)``, with torch's wording
    ``Invalid <name> value: <value>``."""
    check_interval(value, name, 0.0, math.inf, low_open=True, high_open=True, torch_name=torch_name)


def check_beta(value: Any, index: int, name: str) -> None:
    """``0 <= beta < 1`` with torch's wording ``Invalid beta parameter at index i``."""
    check(
        _in_range(value, name, 0.0, 1.0, False, True),
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
        _in_range(value, name, low, high, low_open, high_open),
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


def check_torch_default_dtype(value: Any) -> np.dtype | None:
    """The ``torch_default_dtype`` option as a NumPy dtype (float32 or float64), or ``None``.

    It names the ``torch.get_default_dtype()`` whose rounding of step scalars a torch-exact
    optimizer reproduces (a name, a NumPy / JAX dtype or the torch dtype itself);
    ``None`` keeps the more accurate forms instead.

    Raises:
      ValueError: for any other value.
    """
    if value is None:
        return None
    name = value
    if type(value).__module__ == "torch":  # torch.float32 -> "float32"
        name = str(value).removeprefix("torch.")
    try:
        dtype = np.dtype(name)
    except TypeError:
        dtype = None
    check(
        dtype is not None and dtype.name in ("float32", "float64"),
        f"Invalid torch_default_dtype value: {value!r} (torch_default_dtype must be "
        '"float32", "float64" or None)',
    )
    return dtype


def torch_scalar(x: jax.Array, torch_default_dtype: np.dtype | None) -> jax.Array:
    """``x`` rounded to ``torch_default_dtype`` and kept in its own dtype: the value of a
    step scalar that torch holds in a 0-d tensor of its default dtype (NAdam's
    ``mu_product``, ASGD's ``eta`` and ``mu``). ``None``: ``x`` unchanged."""
    if torch_default_dtype is None or jnp.dtype(x.dtype).itemsize <= torch_default_dtype.itemsize:
        return x
    return x.astype(torch_default_dtype).astype(x.dtype)


def torch_step(count: jax.Array, torch_default_dtype: np.dtype | None) -> jax.Array:
    """The float step ``t`` that torch holds after ``count`` steps, in :func:`scalar_dtype`.

    torch counts steps in a 0-d tensor of its default dtype (``state["step"]``); a float32
    one stops at ``2**24`` (``2**24 + 1`` rounds back to it), so under torch's default
    float32 the step scalars that depend on ``t`` stop moving after 16,777,216 steps. A
    float64 counter is exact for every int32 ``count``; ``None``: the exact count.
    """
    t = count.astype(scalar_dtype())
    if torch_default_dtype is None or torch_default_dtype.itemsize > 4:
        return t
    return jnp.minimum(t, float(2**24))


def torch_decay_power(
    beta: Any, t: jax.Array, torch_default_dtype: np.dtype | None
) -> tuple[jax.Array, jax.Array]:
    """``(beta**t, 1 - beta**t)`` for a float step ``t``, as torch rounds them.

    torch computes bias corrections as ``1 - beta ** step`` in Python doubles whatever its
    default dtype; for a float64 ``t`` that is what this computes. XLA:CPU's ``pow`` and
    the C library's (which is not correctly rounded either) agree for 0.9, 0.99, 0.999,
    0.9999 and 1 - 1e-9 over 1e5 steps (above the subnormal range); for betas drawn at
    random 0.6% of (beta, t <= 3000) pairs differ by an ulp. A float32 ``t`` cannot hold
    torch's doubles, and
    ``torch_default_dtype=None`` asks for the accurate form: both get
    :func:`decay_power`.
    """
    if torch_default_dtype is None or jnp.dtype(t.dtype) != jnp.float64:
        return decay_power(beta, t)
    power = jnp.power(beta, t)
    return power, 1 - power


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


def fresh_array(value: Any, dtype: Any = None) -> jax.Array:
    """``value`` as a new array of ``dtype``, never the buffer of ``value`` itself.

    A hyperparameter injected by ``optax.inject_hyperparams`` (or a JAX array passed by
    the user) is a concrete array at ``init``; ``jnp.asarray`` would hand that very
    buffer to the state, and a jit that donates the state (or the state and the
    hyperparameters) then fails with "Attempt to donate the same buffer twice", or
    deletes the user's array. Under a trace the copy costs nothing (XLA removes it).
    """
    return jnp.array(value, dtype=dtype, copy=True)


def check_params(params: Any) -> None:
    """Every leaf of ``params`` must have a real floating dtype (abstract leaves too).

    An optimizer step on integer params is a no-op once ``apply_updates`` casts the
    update back (optax does), and complex params would be updated by a rule that is not
    torch's (torch treats a complex tensor as pairs of reals, ``torch.view_as_real``):
    both are refused at ``init``.

    Raises:
      TypeError: naming the first offending leaf's path and dtype.
    """
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        dtype = jnp.result_type(leaf)
        if jnp.issubdtype(dtype, jnp.floating):
            continue
        where = jax.tree_util.keystr(path) or "params"
        if jnp.issubdtype(dtype, jnp.complexfloating):
            hint = (
                "complex params are not supported; optimise the real and imaginary parts "
                "as a real array, e.g. jnp.stack([x.real, x.imag], -1), which is what "
                "torch does with a complex tensor (torch.view_as_real)"
            )
        else:
            hint = "params must have a floating dtype (cast them, e.g. x.astype(jnp.float32))"
        raise TypeError(f"Invalid params: {where} has dtype {dtype}; {hint}")


def requires_float_params(
    inner: optax.GradientTransformation,
) -> optax.GradientTransformationExtraArgs:
    """``inner`` whose ``init`` first runs :func:`check_params` (``update`` unchanged)."""
    inner = optax.with_extra_args_support(inner)

    def init_fn(params: optax.Params) -> optax.OptState:
        check_params(params)
        return inner.init(params)

    return optax.GradientTransformationExtraArgs(init_fn, inner.update)


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
    builds a replicated array (a per-leaf scalar: ``shape=()``). Either way it is a new
    buffer, even where ``value`` is an array of that shape and dtype (see
    :func:`fresh_array`).
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
        filled = jnp.full_like(param, value, dtype=dtype)
    else:
        filled = jnp.full(shape, value, dtype)
    return fresh_array(filled) if filled is value else filled


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


def renamed_keywords(**renamed: str) -> Callable[[_F], _F]:
    """Keep a factory's old keyword names working: ``old="new"`` pairs.

    The decorated factory takes ``old=`` as ``new=`` with a ``DeprecationWarning`` (at
    the caller's line) and raises ``TypeError`` when both are given. Its signature
    (``inspect.signature``, ``optax.inject_hyperparams``) shows the new names only.
    """

    def decorate(factory: _F) -> _F:
        @functools.wraps(factory)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renamed.items():
                if old not in kwargs:
                    continue
                if new in kwargs:
                    raise TypeError(
                        f"{factory.__name__}() got both {new}= and {old}=, its deprecated name"
                    )
                warnings.warn(
                    f"{factory.__name__}({old}=...) is deprecated; use {new}=... instead",
                    DeprecationWarning,
                    stacklevel=2,
                )
                kwargs[new] = kwargs.pop(old)
            return factory(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
