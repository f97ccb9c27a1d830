"""Gradient clipping as ``torch.nn.utils.clip_grad_norm_`` / ``clip_grad_value_`` compute it."""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_adv._common import check, check_nonnegative, is_concrete_number, scalar_dtype

# torch adds this to the total norm before dividing (a Python float literal in torch).
_NORM_EPS = 1e-6


class ClipGradNormState(NamedTuple):
    """State of :func:`clip_grad_norm`."""

    total_norm: chex.Array  # float scalar: pre-clip total norm of the last update (0 at init)


def _leaf_norm(x: jax.Array, norm_type: Any) -> jax.Array:
    """torch's ``linalg.vector_norm(x, norm_type)`` of one array, flattened."""
    x = jnp.abs(x)
    if is_concrete_number(norm_type):
        if math.isinf(norm_type):
            return jnp.max(x, initial=0.0)
        if norm_type == 1:
            return jnp.sum(x)
        if norm_type == 2:
            return jnp.sqrt(jnp.sum(x * x))
        return jnp.sum(x**norm_type) ** (1.0 / norm_type)
    # A traced norm type (e.g. through ``optax.inject_hyperparams``): both branches.
    p = jnp.asarray(norm_type, x.dtype)
    safe_p = jnp.where(jnp.isinf(p), 1, p)
    finite = jnp.sum(x**safe_p) ** (1 / safe_p)
    return jnp.where(jnp.isinf(p), jnp.max(x, initial=0.0), finite)


def _nonfinite_message(norm_type: Any, total: Any) -> str:
    return (
        f"clip_grad_norm: the total norm of order {norm_type} of the gradients is {total}, "
        "not finite, so they cannot be clipped (torch raises here too). Pass "
        "error_if_nonfinite=False to scale them by the non-finite norm instead."
    )


def _raise_if_nonfinite(total: Any, norm_type: Any) -> None:
    """Host-side check (also under ``vmap``, where ``total`` is batched)."""
    total = np.asarray(total)
    if not np.all(np.isfinite(total)):
        raise RuntimeError(_nonfinite_message(norm_type, total))


def global_norm(updates: optax.Updates, norm_type: Any = 2.0) -> jax.Array:
    r"""torch's total gradient norm: the p-norm of the per-leaf p-norms.

    .. math::
      \|g\| = \big\|(\|g_1\|_p, \dots, \|g_k\|_p)\big\|_p, \qquad
      \|x\|_\infty = \max_i |x_i|

    Computed in at least float32 (the leaves' promoted dtype); 0 for an empty tree, as
    torch returns for no gradients.

    Args:
      updates: a tree of gradients.
      norm_type: ``p > 0`` or ``inf``.

    Returns:
      A float scalar.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch.clip import global_norm
      >>> global_norm({"a": jnp.array([3.0, 0.0]), "b": jnp.array([-4.0])})
      Array(5., dtype=float32)
    """
    leaves = jax.tree.leaves(updates)
    dtype = scalar_dtype(jnp.result_type(*leaves) if leaves else None)
    if not leaves:
        return jnp.zeros([], dtype)
    norms = jnp.stack([_leaf_norm(g.astype(dtype), norm_type) for g in leaves])
    return _leaf_norm(norms, norm_type)


def _check_norm_type(norm_type: Any) -> None:
    if is_concrete_number(norm_type):
        check(
            not math.isnan(norm_type) and norm_type > 0,
            f"Invalid norm_type value: {norm_type} (norm_type must be > 0 or inf)",
        )


def _check_finite(total: jax.Array, norm_type: Any) -> None:
    """torch's ``error_if_nonfinite``: raise eagerly, or from the host under a trace."""
    if isinstance(total, jax.core.Tracer):
        jax.debug.callback(_raise_if_nonfinite, total, norm_type)
    else:
        _raise_if_nonfinite(total, norm_type)


def get_total_norm(
    tensors: optax.Updates, norm_type: Any = 2.0, error_if_nonfinite: bool = False
) -> jax.Array:
    r"""The total p-norm of a tree of arrays, as ``torch.nn.utils.get_total_norm``.

    :func:`global_norm` with torch's argument checks and ``error_if_nonfinite`` (which
    raises ``RuntimeError`` as in :func:`clip_grad_norm`).

    Args:
      tensors: a tree of arrays (torch takes a list of tensors).
      norm_type: ``p > 0`` or ``inf``.
      error_if_nonfinite: static; raise when the norm is NaN or infinite.

    Returns:
      A float scalar.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch.clip import get_total_norm
      >>> get_total_norm([jnp.array([3.0]), jnp.array([4.0])])
      Array(5., dtype=float32)
    """
    _check_norm_type(norm_type)
    total = global_norm(tensors, norm_type)
    if error_if_nonfinite:
        _check_finite(total, norm_type)
    return total


def clip_grads_with_norm(grads: optax.Updates, max_norm: Any, total_norm: Any) -> optax.Updates:
    r"""Scale ``grads`` by :math:`\min(\text{max\_norm} / (\text{total\_norm} + 10^{-6}), 1)`.

    ``torch.nn.utils.clip_grads_with_norm_`` without the trailing underscore: JAX arrays
    are immutable, so the scaled gradients are returned (torch scales ``.grad`` in
    place). With :func:`get_total_norm` it splits :func:`clip_grad_norm` in two, e.g. to
    reduce the norm across devices in between.

    Args:
      grads: a tree of gradients.
      max_norm: largest allowed total norm, ``>= 0`` (may be traced).
      total_norm: the total norm of ``grads`` (from :func:`get_total_norm`).

    Returns:
      The scaled gradients, each in its own dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch.clip import clip_grads_with_norm
      >>> print(clip_grads_with_norm(jnp.array([3.0, 4.0]), 1.0, 5.0))
      [0.6 0.8]
    """
    check_nonnegative(max_norm, "max_norm", allow_inf=True)
    total = jnp.asarray(total_norm)
    coef = jnp.minimum(max_norm / (total + _NORM_EPS), 1.0).astype(total.dtype)
    return jax.tree.map(lambda g: (g * coef.astype(g.dtype)).astype(g.dtype), grads)


def clip_grad_norm(
    max_norm: Any,
    norm_type: Any = 2.0,
    error_if_nonfinite: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Rescale the gradients so their total p-norm is at most ``max_norm``, as torch does.

    .. math::
      n = \big\|(\|g_1\|_p, \dots, \|g_k\|_p)\big\|_p, \qquad
      g_i \leftarrow g_i \cdot \min\Big(\frac{\text{max\_norm}}{n + 10^{-6}}, 1\Big)

    The gradients are always multiplied (no branch): a norm just *below* ``max_norm``
    is still scaled by ``max_norm / (n + 1e-6) < 1``. Non-finite gradients behave as in
    torch: NaN anywhere makes every output NaN; an infinite entry makes ``n = inf``, so
    finite entries become 0 and the infinite one NaN. The pre-clip norm ``n`` of the
    last update is kept in ``state.total_norm`` for logging (torch returns it).

    ``error_if_nonfinite=True`` mirrors torch's ``RuntimeError`` for a NaN/inf norm:

    * eagerly (outside ``jit``, values concrete) ``update`` raises ``RuntimeError``;
    * under ``jit`` / ``scan`` / ``vmap`` a ``jax.debug.callback`` raises it on the host,
      which aborts the computation: the jitted call raises
      ``jax.errors.JaxRuntimeError`` (a ``RuntimeError`` subclass) whose text contains
      this module's message, and no result is returned. On an asynchronous backend the
      error may surface when the result is first used (``block_until_ready``). JAX also
      logs the callback's traceback. ``jax.eval_shape`` never runs the check.

    ``checkify.check`` cannot be used instead: it refuses to be staged under plain
    ``jit`` unless the caller wraps the step in ``checkify.checkify``.

    Args:
      max_norm: largest allowed total norm, ``>= 0`` (may be traced).
      norm_type: ``p > 0`` of the p-norm, or ``float('inf')`` for the max norm.
      error_if_nonfinite: static; raise when the total norm is NaN or infinite.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state :class:`ClipGradNormState`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch.clip import clip_grad_norm
      >>> tx = clip_grad_norm(1.0)
      >>> state = tx.init(jnp.zeros(2))
      >>> u, state = tx.update(jnp.array([3.0, 4.0]), state)
      >>> print(u, state.total_norm)  # 1 / (5 + 1e-6) * [3, 4]
      [0.6 0.8] 5.0

    References:
      Pascanu, Mikolov, Bengio, "On the difficulty of training recurrent neural
      networks", ICML 2013; mirrors ``torch.nn.utils.clip_grad_norm_`` (torch 2.13).

    Warning:
      ``optax.clip_by_global_norm`` has no ``+1e-6``, a strict ``norm < max_norm``
      branch and only the L2 norm: it differs from torch by up to ~1e-6 relative, and
      leaves a norm within 1e-6 below ``max_norm`` unscaled where torch scales it.
      Clip *before* the optimizer (``optax.chain(clip_grad_norm(...), optimizer)``):
      torch clips ``.grad`` before ``optimizer.step()`` adds weight decay.
    """
    check_nonnegative(max_norm, "max_norm", allow_inf=True)  # inf: report the norm only
    _check_norm_type(norm_type)

    def init_fn(params: optax.Params) -> ClipGradNormState:
        leaves = jax.tree.leaves(params)
        dtype = scalar_dtype(jnp.result_type(*leaves) if leaves else None)
        return ClipGradNormState(total_norm=jnp.zeros([], dtype))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        total = get_total_norm(updates, norm_type, error_if_nonfinite)
        updates = clip_grads_with_norm(updates, max_norm, total)
        return updates, ClipGradNormState(total.astype(state.total_norm.dtype))

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def clip_grad_value(clip_value: Any) -> optax.GradientTransformationExtraArgs:
    r"""Clamp every gradient entry to ``[-clip_value, clip_value]``, as torch does.

    .. math::
      g \leftarrow \min(\max(g, -v), v)

    NaN entries stay NaN (torch's clamp propagates them too).

    Args:
      clip_value: the bound :math:`v`, ``>= 0`` (may be traced).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` (stateless).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch.clip import clip_grad_value
      >>> tx = clip_grad_value(0.5)
      >>> state = tx.init(jnp.zeros(3))
      >>> u, state = tx.update(jnp.array([-2.0, 0.25, 3.0]), state)
      >>> u
      Array([-0.5 ,  0.25,  0.5 ], dtype=float32)

    References:
      mirrors ``torch.nn.utils.clip_grad_value_`` (torch 2.13); ``optax.clip`` computes
      the same values.
    """
    check_nonnegative(clip_value, "clip_value", allow_inf=True)

    def init_fn(params: optax.Params) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args

        def clamp(g):
            v = jnp.asarray(clip_value).astype(g.dtype)
            return jnp.minimum(jnp.maximum(g, -v), v)

        return jax.tree.map(clamp, updates), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
