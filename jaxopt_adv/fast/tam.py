"""TAM and AdaTAM with each leaf's momentum step as one C++ kernel call on CPU (``tam.cc``).

:func:`scale_by_tam`, :func:`scale_by_adatam`, :func:`tam` and :func:`adatam` take the
arguments of their :mod:`jaxopt_adv.tam.tam` namesakes and keep their state, so
checkpoints, ``optax.inject_hyperparams`` and composition work unchanged. On a
single-device CPU process every non-empty float32/float64 leaf whose state shares its
dtype is stepped by an XLA FFI call that reads the gradient and the momentum twice (once
for the correlation's sums, once for the step; the ``"row_cosine"`` rule reads each row
twice while it is in cache) and the state once, and writes the state once; AdaTAM's
update ``m / (sqrt(v) + eps)`` is left to XLA, which fuses it into the parameters'
update. XLA compiles the whole step into a reduction and several whole-leaf loops with
intermediates materialised. The other leaves, and every leaf elsewhere, take the
transform's own JAX code. Sums are accumulated in float64, so the results agree with the
JAX path to rounding, not bit for bit.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_adv._common import renamed_keywords
from jaxopt_adv.fast import ffi, selfcheck
from jaxopt_adv.tam.tam import CORRELATIONS, tam_chain
from jaxopt_adv.tam.tam import scale_by_adatam as jax_scale_by_adatam
from jaxopt_adv.tam.tam import scale_by_tam as jax_scale_by_tam

__all__ = ["adatam", "scale_by_adatam", "scale_by_tam", "tam"]

# The self-check's probes: every correlation rule ("auto" with one leaf above the
# threshold, two below) on float32 leaves, three steps of which the last has an Inf, a
# -Inf and a NaN gradient element; the kernel must agree with the JAX path to rounding and
# put the same non-finite values in the same places.
_PROBE_SHAPES = {"w": (24, 16), "b": (16,), "c": (3, 2, 2, 2)}
_PROBE_RULES = (("dim0", 1000), ("cosine", 1000), ("row_cosine", 1000), ("auto", 30))
_PROBE_STEPS = 3
_PROBE_RTOL = 1e-4


def _probe_mismatches() -> dict[str, str | None]:
    """TAM's self-check (:mod:`.selfcheck`): the first probe configuration whose kernel
    steps differ from the JAX transform's, or ``None``."""
    nonfinite = {("w", (2, 3)): np.inf, ("w", (5, 1)): -np.inf, ("b", (5,)): np.nan}
    stream = selfcheck.probe_stream(_PROBE_SHAPES, _PROBE_STEPS, nonfinite)
    for factory in (scale_by_tam, scale_by_adatam):
        for rule, threshold in _PROBE_RULES:
            kwargs = {"correlation": rule, "auto_threshold": threshold}
            if _probe_differs(factory(**kwargs), factory(**kwargs, kernel=False), stream):
                return {selfcheck.TAM: f"{factory.__name__} {kwargs}"}
    return {selfcheck.TAM: None}


def _probe_differs(ours: Any, theirs: Any, stream: list[dict[str, np.ndarray]]) -> bool:
    return selfcheck.steps_differ(ours, theirs, stream, _PROBE_RTOL)


def _unavailable_reason() -> str | None:
    """Why the kernel does not step leaves in this process (see :mod:`.selfcheck`)."""
    return selfcheck.unavailable(_probe_mismatches, selfcheck.TAM)


def _kernel_leaf(g: Any, state_arrays: list[Any]) -> bool:
    """Whether the kernel takes this leaf: float32/float64, not empty, and its state in
    the leaf's dtype and shape."""
    dtype = np.dtype(g.dtype)
    if dtype not in ffi.FLOATS or math.prod(jnp.shape(g)) == 0:
        return False
    return all(np.dtype(a.dtype) == dtype and jnp.shape(a) == jnp.shape(g) for a in state_arrays)


def _call(
    scalars: list[jax.Array], small: jax.Array, leaves: list[tuple], rule: int, adaptive: bool
) -> list[tuple]:
    """One custom call over ``leaves = [(g, m, s), ...]`` (AdaTAM: ``(g, m, v, s)``);
    returns the new state ``[(m, s), ...]`` (AdaTAM: ``(m, v, s)``), which aliases its
    operands, so it is updated in place when the state is donated."""
    call = ffi.Call([*scalars, small])
    for g, *state_arrays in leaves:
        call.read(g)
        call.update(*state_arrays)
    outputs = call.run("jaxopt_adv_tam", rule=rule, adaptive=adaptive)
    return ffi.chunks(outputs, 3 if adaptive else 2)


def _with_kernel(
    inner: optax.GradientTransformationExtraArgs,
    fields: tuple[str, ...],
    values: Any,
    direction: Any,
    correlation: str,
    auto_threshold: Any,
    kernel: bool,
) -> optax.GradientTransformationExtraArgs:
    """``inner`` (a TAM or AdaTAM scaling whose per-leaf state is ``fields``) with its
    kernel leaves stepped by the kernel; ``values(state)`` gives the kernel's scalars
    ``(b1, 1 - decay_rate, eps, b2, 1 - b2, first)`` and ``direction(*new_state)`` a
    leaf's update from its new state, as ``inner`` computes it."""
    adaptive = len(fields) == 3
    rule = CORRELATIONS.index(correlation)

    def replace(updates, state, out, new_state, extra_args):
        del extra_args
        scalar_values = values(state)

        def call(dtype: np.dtype, leaves: list[tuple]) -> list[tuple]:
            scalars = [jnp.asarray(value).astype(dtype) for value in scalar_values]
            # auto's choice as auto_correlation makes it (threshold may be traced)
            sizes = [math.prod(jnp.shape(g)) for g, *_ in leaves]
            small = jnp.stack([jnp.asarray(n <= auto_threshold).astype(dtype) for n in sizes])
            results = _call(scalars, small, leaves, rule, adaptive)
            return [
                (direction(*leaf_state).astype(g.dtype), *leaf_state)
                for (g, *_), leaf_state in zip(leaves, results, strict=True)
            ]

        return ffi.step_leaves(updates, state, out, new_state, fields, _kernel_leaf, call)

    return ffi.with_kernel(inner, kernel, _unavailable_reason, replace)


def scale_by_tam(
    b1: Any = 0.9,
    decay_rate: Any = 0.9,
    eps: Any = 1e-8,
    *,
    correlation: str = "dim0",
    auto_threshold: Any = 1000,
    mu_dtype: Any = None,
    kernel: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """:func:`jaxopt_adv.tam.tam.scale_by_tam` with each leaf stepped by the CPU kernel.

    Same arguments, state and results (to rounding); ``kernel=False`` (static) always
    takes the JAX path. Use it under ``jax.jit`` with the state donated, so that the
    kernel updates the momentum and ``s`` in place. Non-finite gradients spread as in
    the JAX path: under ``"dim0"`` a NaN element makes its column NaN and an Inf one
    that element; under the cosine rules, the leaf or the row.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv import fast
      >>> tx = fast.scale_by_tam(eps=0.0)
      >>> state = tx.init(jnp.zeros(2))
      >>> u, state = tx.update(jnp.array([1.0, -1.0]), state)
      >>> u
      Array([ 1.425, -1.425], dtype=float32)

    References:
      Malviya et al., "Torque-Aware Momentum", arXiv 2412.18790, 2024; parity-tested
      against ``pytorch_optimizer.TAM`` (4.1.0) as :func:`jaxopt_adv.tam.tam.tam` is.
    """
    inner = jax_scale_by_tam(
        b1,
        decay_rate,
        eps,
        correlation=correlation,
        auto_threshold=auto_threshold,
        mu_dtype=mu_dtype,
    )

    def values(state):
        return (b1, 1 - decay_rate, eps, 0, 0, state.count == 0)

    def direction(m, s):
        del s
        return m  # TAM's update is its momentum

    return _with_kernel(inner, ("mu", "s"), values, direction, correlation, auto_threshold, kernel)


def scale_by_adatam(
    b1: Any = 0.9,
    b2: Any = 0.999,
    decay_rate: Any = 0.9,
    eps: Any = 1e-8,
    *,
    correlation: str = "dim0",
    auto_threshold: Any = 1000,
    mu_dtype: Any = None,
    kernel: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """:func:`jaxopt_adv.tam.tam.scale_by_adatam` with each leaf stepped by the CPU kernel.

    Same arguments, state and results (to rounding), plus ``kernel`` (static; ``False``
    always takes the JAX path).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv import fast
      >>> tx = fast.scale_by_adatam(b2=0.75, eps=0.0)
      >>> state = tx.init(jnp.zeros(2))
      >>> u, state = tx.update(jnp.array([1.0, -1.0]), state)
      >>> u
      Array([ 1., -1.], dtype=float32)

    References:
      Malviya et al., "Torque-Aware Momentum", arXiv 2412.18790, 2024; parity-tested
      against ``pytorch_optimizer.AdaTAM`` (4.1.0) as :func:`jaxopt_adv.tam.tam.adatam`
      is.
    """
    inner = jax_scale_by_adatam(
        b1,
        b2,
        decay_rate,
        eps,
        correlation=correlation,
        auto_threshold=auto_threshold,
        mu_dtype=mu_dtype,
    )

    def values(state):
        del state
        return (b1, 1 - decay_rate, eps, b2, 1 - b2, 0)

    def direction(m, v, s):
        del s
        return m / (jnp.sqrt(v) + eps)

    return _with_kernel(
        inner, ("mu", "nu", "s"), values, direction, correlation, auto_threshold, kernel
    )


def tam(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: Any = 0.9,
    decay_rate: Any = 0.9,
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    *,
    fixed_decay: bool = False,
    maximize: bool = False,
    correlation: str = "dim0",
    auto_threshold: Any = 1000,
    mu_dtype: Any = None,
    kernel: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """:func:`jaxopt_adv.tam.tam.tam` with the momentum step in the CPU kernel.

    Same arguments (documented there), state and steps (to rounding), plus ``kernel``.

    Args:
      mu_dtype: as :func:`jaxopt_adv.tam.tam.tam`'s; a leaf whose momentum is in another
        dtype takes the JAX path.
      kernel: static; ``False`` always takes the JAX path.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` (it needs ``params`` when
      ``weight_decay`` is not a Python 0).

    Example:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import optax
      >>> from jaxopt_adv import fast
      >>> opt = fast.tam(0.1, eps=0.0)
      >>> params = {"w": jnp.ones((3, 2))}
      >>> grads = {"w": jnp.array([[1.0, -1.0]] * 3)}
      >>> step = jax.jit(lambda p, s, g: optax.apply_updates(p, opt.update(g, s, p)[0]))
      >>> # per column c = g^2 / sum g^2 = 1/3, s = 0.1 c, m = 0.9 g + ((1 + s) / 2) g
      >>> step(params, opt.init(params), grads)["w"][0]
      Array([0.85833335, 1.1416667 ], dtype=float32)

    References:
      Malviya et al., "Torque-Aware Momentum", arXiv 2412.18790, 2024; parity-tested
      against ``pytorch_optimizer.TAM`` (4.1.0).
    """
    core = scale_by_tam(
        b1,
        decay_rate,
        eps,
        correlation=correlation,
        auto_threshold=auto_threshold,
        mu_dtype=mu_dtype,
        kernel=kernel,
    )
    return tam_chain(
        core,
        learning_rate,
        weight_decay,
        decoupled_weight_decay=True,
        fixed_decay=fixed_decay,
        maximize=maximize,
    )


@renamed_keywords(weight_decouple="decoupled_weight_decay")
def adatam(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: Any = 0.9,
    b2: Any = 0.999,
    decay_rate: Any = 0.9,
    eps: Any = 1e-8,
    weight_decay: Any = 0.0,
    *,
    decoupled_weight_decay: bool = True,
    fixed_decay: bool = False,
    maximize: bool = False,
    correlation: str = "dim0",
    auto_threshold: Any = 1000,
    mu_dtype: Any = None,
    kernel: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """:func:`jaxopt_adv.tam.tam.adatam` with the momentum step in the CPU kernel.

    Same arguments (documented there), state and steps (to rounding), plus ``kernel``.

    Args:
      mu_dtype: as :func:`jaxopt_adv.tam.tam.adatam`'s; a leaf whose momentum is in
        another dtype takes the JAX path.
      kernel: static; ``False`` always takes the JAX path.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv import fast
      >>> opt = fast.adatam(0.1, b2=0.75, eps=0.0)
      >>> params = jnp.ones((2, 2))
      >>> updates, _ = opt.update(jnp.array([[1.0, -1.0]] * 2), opt.init(params), params)
      >>> updates[0]
      Array([-0.1,  0.1], dtype=float32)

    References:
      Malviya et al., "Torque-Aware Momentum", arXiv 2412.18790, 2024; parity-tested
      against ``pytorch_optimizer.AdaTAM`` (4.1.0).
    """
    core = scale_by_adatam(
        b1,
        b2,
        decay_rate,
        eps,
        correlation=correlation,
        auto_threshold=auto_threshold,
        mu_dtype=mu_dtype,
        kernel=kernel,
    )
    return tam_chain(
        core,
        learning_rate,
        weight_decay,
        decoupled_weight_decay=decoupled_weight_decay,
        fixed_decay=fixed_decay,
        maximize=maximize,
    )
