"""CAME with its scaling as one C++ kernel per step on CPU (``came.cc``).

:func:`scale_by_came` and :func:`came` take the arguments of
:func:`jaxopt_adv.came.scale_by_came` and :func:`jaxopt_adv.came.came` and keep their
state, so checkpoints, ``optax.inject_hyperparams`` and composition work unchanged. On a
single-device CPU process every float32/float64 leaf with ``ndim >= 2`` (and its
statistics in the same dtype) that the state does not stack with like leaves (see
:func:`jaxopt_adv.came.scale_by_came`: a shape and dtype no other leaf has, or more than
:data:`~jaxopt_adv.grouping.MAX_GROUPED_SIZE` elements) is scaled by an XLA FFI call
that takes four passes over the leaf (XLA compiles the transform into five whole-leaf
loops with three intermediates materialised); the other leaves, and every leaf
elsewhere, take the transform's own JAX code (a stack: vmapped over its members). Sums
are accumulated in float64, so the results agree with the JAX path to rounding, not bit
for bit. The kernel is used once its self-check
(:mod:`.selfcheck`) has passed on this host.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_adv.came.came import came_chain, came_scaling
from jaxopt_adv.fast import ffi, selfcheck
from jaxopt_adv.grouping import GroupTree, on_loose_leaves, with_grouped_leaves

__all__ = ["came", "scale_by_came"]

# the state fields the kernel updates, in its operand order after the gradient
_FIELDS = ("mu", "v_row", "v_col", "r_row", "r_col")
# The self-check's probes: the defaults and two non-default settings on float32 matrices
# and a 3-D leaf, three steps of which the last has an Inf, a -Inf and a NaN gradient
# element; the kernel must agree with the JAX transform to rounding and put the same
# non-finite values in the same places.
_PROBE_SHAPES = {"w": (24, 16), "c": (3, 4, 5)}
_PROBE_KWARGS: tuple[dict[str, Any], ...] = (
    {},
    {"b1": 0.5, "clip_threshold": 0.5},
    {"b2": 0.9, "b3": 0.99, "eps2": 1e-3},
)
_PROBE_STEPS = 3
_PROBE_RTOL = 1e-4


def _probe_mismatches() -> dict[str, str | None]:
    """CAME's self-check (:mod:`.selfcheck`): the first probe configuration whose kernel
    steps differ from the JAX transform's, or ``None``."""
    nonfinite = {("w", (2, 3)): np.inf, ("w", (5, 1)): -np.inf, ("c", (1, 2, 3)): np.nan}
    stream = selfcheck.probe_stream(_PROBE_SHAPES, _PROBE_STEPS, nonfinite)
    for kwargs in _PROBE_KWARGS:
        ours, theirs = scale_by_came(**kwargs), scale_by_came(**kwargs, kernel=False)
        if selfcheck.steps_differ(ours, theirs, stream, _PROBE_RTOL):
            return {selfcheck.CAME: f"scale_by_came {kwargs}"}
    return {selfcheck.CAME: None}


def _unavailable_reason() -> str | None:
    """Why the kernel does not scale leaves in this process (see :mod:`.selfcheck`)."""
    return selfcheck.unavailable(_probe_mismatches, selfcheck.CAME)


def _kernel_leaf(g: Any, state_arrays: list[Any]) -> bool:
    """Whether the kernel takes this leaf: float32/float64, ndim >= 2, not empty, and
    the momentum and statistics in the leaf's dtype."""
    dtype = np.dtype(g.dtype)
    if dtype not in ffi.FLOATS or jnp.ndim(g) < 2 or jnp.size(g) == 0:
        return False
    return all(np.dtype(a.dtype) == dtype for a in state_arrays)


def _call(scalars: list[jax.Array], leaves: list[tuple]) -> list[tuple]:
    """One custom call over ``leaves = [(g, mu, v_row, v_col, r_row, r_col), ...]``;
    returns ``[(out, mu, v_row, v_col, r_row, r_col), ...]`` (the state results alias
    their operands)."""
    call = ffi.Call(scalars)
    for g, *state_arrays in leaves:
        call.read(g)
        call.output(jnp.shape(g), g.dtype)
        call.update(*state_arrays)
    return ffi.chunks(call.run("jaxopt_adv_came"), len(_FIELDS) + 1)


def scale_by_came(
    b1: Any = 0.9,
    b2: Any = 0.999,
    b3: Any = 0.9999,
    eps1: Any = 1e-30,
    eps2: Any = 1e-16,
    clip_threshold: Any = 1.0,
    *,
    mu_dtype: Any = None,
    kernel: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """:func:`jaxopt_adv.came.scale_by_came` with the matrices scaled by the CPU kernel.

    Same arguments, state and results (to rounding); ``kernel=False`` (static) always
    takes the JAX path. Use it under ``jax.jit`` with the state donated, so that the
    kernel updates the momentum and the statistics in place.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv import fast
      >>> from jaxopt_adv.came import scale_by_came
      >>> g = jnp.array([[1.0, -2.0], [3.0, 0.5]])
      >>> tx, reference = fast.scale_by_came(), scale_by_came()
      >>> u, state = tx.update(g, tx.init(g))
      >>> bool(jnp.allclose(u, reference.update(g, reference.init(g))[0], rtol=1e-6))
      True

    References:
      Luo et al., "CAME: Confidence-guided Adaptive Memory Efficient Optimization",
      ACL 2023; parity-tested against ``came_pytorch.CAME`` 0.1.3 and
      ``pytorch_optimizer.CAME`` as :func:`jaxopt_adv.came.scale_by_came` is.
    """
    inner = came_scaling(b1, b2, b3, eps1, eps2, clip_threshold, mu_dtype=mu_dtype)

    def call(dtype: np.dtype, leaves: list[tuple]) -> list[tuple]:
        values = (b1, 1 - b1, b2, 1 - b2, b3, 1 - b3, eps1, eps2, clip_threshold)
        return _call([jnp.asarray(value).astype(dtype) for value in values], leaves)

    def step(updates, state, out, new_state):
        return ffi.step_leaves(updates, state, out, new_state, _FIELDS, _kernel_leaf, call)

    def replace(updates, state, out, new_state, extra_args):
        del extra_args
        if isinstance(updates, GroupTree):
            # the stacks keep the JAX path's results (vmapped over their members)
            return on_loose_leaves(step, _FIELDS, updates, state, out, new_state)
        return step(updates, state, out, new_state)

    return with_grouped_leaves(ffi.with_kernel(inner, kernel, _unavailable_reason, replace))


def came(
    learning_rate: optax.ScalarOrSchedule,
    b1: Any = 0.9,
    b2: Any = 0.999,
    b3: Any = 0.9999,
    eps1: Any = 1e-30,
    eps2: Any = 1e-16,
    clip_threshold: Any = 1.0,
    weight_decay: Any = 0.0,
    weight_decay_mask: Any | Callable[[optax.Params], Any] | None = None,
    *,
    mu_dtype: Any = None,
    kernel: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """:func:`jaxopt_adv.came.came` with the matrices scaled by the CPU kernel.

    Same arguments (documented there), state and steps (to rounding), plus ``kernel``.

    Args:
      mu_dtype: static; as :func:`jaxopt_adv.came.came`'s; a leaf whose momentum is in
        another dtype takes the JAX path.
      kernel: static; ``False`` always takes the JAX path.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; it needs ``params`` when
      ``weight_decay`` is not a Python 0.

    Example:
      >>> import jax
      >>> import jax.numpy as jnp
      >>> import optax
      >>> from jaxopt_adv import fast
      >>> opt = fast.came(1e-3)
      >>> params = {"w": jnp.ones((64, 32)), "b": jnp.zeros(32)}
      >>> state = opt.init(params)
      >>> grads = jax.tree.map(jnp.ones_like, params)
      >>> step = jax.jit(lambda p, s, g: optax.apply_updates(p, opt.update(g, s, p)[0]))
      >>> # a first step moves by lr (1 - b1) / ((1 - b1) sqrt(1 - b3)) = 1e-3 / 0.009
      >>> round(float(step(params, state, grads)["w"][0, 0]), 5)
      0.98889

    References:
      Luo et al., "CAME: Confidence-guided Adaptive Memory Efficient Optimization",
      ACL 2023; parity-tested against ``came_pytorch.CAME`` 0.1.3 and
      ``pytorch_optimizer.CAME``.
    """
    scaling = scale_by_came(
        b1, b2, b3, eps1, eps2, clip_threshold, mu_dtype=mu_dtype, kernel=kernel
    )
    return came_chain(scaling, learning_rate, weight_decay, weight_decay_mask)
