"""CAME: Adafactor's factored second moment plus a factored confidence on the momentum.

The maths of official CAME (``came_pytorch.CAME`` 0.1.3, yangluo7/CAME) per leaf:
factored row/column statistics over the *last two* axes for leaves with ``ndim >= 2``,
an unfactored second moment (and no confidence) otherwise. The per-leaf steps are small
pure functions (:func:`update_factored_moment`, :func:`factored_rsqrt`, :func:`rms_clip`,
:func:`came_precondition`, :func:`came_confidence`) so a composite optimizer can put its
own momentum rule between CAME's scaling and its confidence step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax.numpy as jnp
import optax
from jax import lax

from jaxopt_adv._common import (
    check_beta,
    check_learning_rate,
    check_nonnegative,
    check_positive,
    filled_like,
    requires_float_params,
    skip_at_static_zero,
    tree_map_multi,
    with_gradient_dtype,
)
from jaxopt_adv.grouping import tree_map_grouped, with_grouped_leaves

__all__ = [
    "ScaleByCameState",
    "came",
    "came_chain",
    "came_confidence",
    "came_scaling",
    "came_precondition",
    "factored_rsqrt",
    "init_second_moments",
    "is_factored",
    "momentum_residual",
    "rms",
    "rms_clip",
    "scale_by_came",
    "update_factored_moment",
]


class ScaleByCameState(NamedTuple):
    """State of :func:`came_scaling`; torch names in comments.

    Every leaf of the factored fields is a zero-size placeholder for params with
    ``ndim < 2``, and ``v`` is one for params with ``ndim >= 2`` (optax's factorized
    Adafactor does the same), so the state is a fixed pytree. In :func:`scale_by_came`'s
    state (``GroupedState.inner``) the per-parameter fields are
    :class:`~jaxopt_adv.grouping.GroupTree` s: the statistics of like leaves stacked.
    """

    count: chex.Array  # int32 scalar (CAME has no bias correction; kept for composites)
    mu: optax.Updates  # exp_avg, like the params (or ``mu_dtype``)
    v_row: optax.Updates  # exp_avg_sq_row, shape[:-1]
    v_col: optax.Updates  # exp_avg_sq_col, shape[:-2] + shape[-1:]
    v: optax.Updates  # exp_avg_sq (ndim < 2), like the param
    r_row: optax.Updates  # exp_avg_res_row, shape[:-1]
    r_col: optax.Updates  # exp_avg_res_col, shape[:-2] + shape[-1:]


# ----------------------------------------------------------------- per-leaf building blocks


def is_factored(shape: tuple[int, ...]) -> bool:
    """Official CAME factors every leaf with at least two axes (no minimum size)."""
    return len(shape) >= 2


def update_factored_moment(x: chex.Array, row: chex.Array, col: chex.Array, decay: Any):
    """EMA of the row and column means of ``x`` over its last two axes.

    ``row <- decay row + (1 - decay) mean(x, -1)``, ``col <- decay col + (1 - decay)
    mean(x, -2)``; returned in the dtypes of ``row`` and ``col``. An empty ``x`` has no
    means (0 / 0): both are returned unchanged.
    """
    if x.size == 0:
        return row, col
    new_row = decay * row + (1 - decay) * jnp.mean(x, axis=-1)
    new_col = decay * col + (1 - decay) * jnp.mean(x, axis=-2)
    return new_row.astype(row.dtype), new_col.astype(col.dtype)


def factored_rsqrt(row: chex.Array, col: chex.Array) -> chex.Array:
    r"""Approximate inverse root from row/column factors (CAME's ``_approx_sq_grad``).

    :math:`\big(R_i C_j / \overline{R}\big)^{-1/2}`, as the outer product of
    ``rsqrt(row / mean(row))`` and ``rsqrt(col)``, shape ``row.shape + col.shape[-1:]``.
    """
    shape = row.shape + col.shape[-1:]
    if math.prod(shape) == 0:  # nothing to scale; mean(row) of an empty row is 0 / 0
        return jnp.zeros(shape, jnp.result_type(row, col))
    r_factor = lax.rsqrt(row / jnp.mean(row, axis=-1, keepdims=True))
    return r_factor[..., :, None] * lax.rsqrt(col)[..., None, :]


def rms(x: chex.Array) -> chex.Array:
    """Root mean square over all elements (torch: ``x.norm(2) / sqrt(x.numel())``)."""
    return jnp.sqrt(jnp.sum(jnp.square(x))) / math.sqrt(max(x.size, 1))


def rms_clip(u: chex.Array, clip_threshold: Any) -> chex.Array:
    """``u / max(1, rms(u) / clip_threshold)``: the whole leaf scaled to RMS <= threshold.

    The same rule as ``optax.clip_by_block_rms``, applied to one leaf.
    """
    return u / jnp.maximum(1.0, rms(u) / clip_threshold)


def came_precondition(g, v_row, v_col, v, b2, eps1):
    """CAME's scaled gradient before clipping: ``g`` over the root of its second moment.

    ``ndim >= 2``: the factored moments of ``g^2 + eps1`` and ``g * factored_rsqrt``;
    otherwise the elementwise ``v`` of ``g^2 + eps1`` and ``g * rsqrt(v)``. The slots a
    leaf does not use are returned unchanged. ``g`` should be in the statistics' dtype.

    Returns:
      ``(u, v_row, v_col, v)``.
    """
    sq = jnp.square(g) + eps1
    if is_factored(g.shape):
        v_row, v_col = update_factored_moment(sq, v_row, v_col, b2)
        return factored_rsqrt(v_row, v_col) * g, v_row, v_col, v
    v = (b2 * v + (1 - b2) * sq).astype(v.dtype)
    return lax.rsqrt(v) * g, v_row, v_col, v


def came_confidence(u, m, r_row, r_col, b3, eps2, *, residual=None):
    """CAME's confidence step: ``m`` scaled by the factored inverse root of the instability.

    For ``ndim >= 2``, the factored EMA of ``(u - m)^2 + eps2`` (``u`` the clipped
    update, ``m`` the *new* momentum) and ``factored_rsqrt(r_row, r_col) * m``. Official
    CAME has no confidence for ``ndim < 2``: ``m`` is returned as it is. ``residual``
    replaces ``u - m`` where the caller knows it exactly (:func:`momentum_residual`).

    Returns:
      ``(out, r_row, r_col)``.
    """
    if not is_factored(m.shape):
        return m, r_row, r_col
    res = jnp.square(u - m if residual is None else residual) + eps2
    r_row, r_col = update_factored_moment(res, r_row, r_col, b3)
    return factored_rsqrt(r_row, r_col) * m, r_row, r_col


def momentum_residual(u: chex.Array, m: chex.Array, b1: Any) -> chex.Array:
    """``u - m`` for the EMA momentum ``m = b1 m_prev + (1 - b1) u``, exactly 0 for ``b1 = 0``.

    With ``b1 = 0`` torch's ``m`` is ``0 m_prev + 1 u = u``, so its residual is exactly 0
    and the instability is ``eps2``. XLA recomputes ``u`` inside ``u - m`` and fuses its
    last product into the subtraction (an FMA), which leaves ``u``'s rounding error (about
    1 ulp, far above ``eps2 = 1e-16``): the confidence would then differ from torch's by
    orders of magnitude. ``0 * u`` keeps torch's NaN for a non-finite ``u``. A momentum
    in another dtype (``mu_dtype``) is rounded, so its residual is taken as it is.
    """
    residual = u - m.astype(u.dtype)
    if m.dtype != u.dtype:
        return residual
    return jnp.where(b1 == 0, 0 * u, residual)


# -------------------------------------------------------------------------- transforms


def _stat_dtype(dtype: Any) -> jnp.dtype:
    """Statistics in float32 or wider: a bf16 EMA with ``1 - b2 = 1e-3`` would stall."""
    return jnp.promote_types(jnp.float32, dtype)


def init_second_moments(params: optax.Params) -> tuple[Any, Any, Any, Any, Any]:
    """Zero ``(v_row, v_col, v, r_row, r_col)`` trees for CAME's statistics.

    Factored leaves (``ndim >= 2``) get row/column vectors (sharded like the param's
    remaining axes) and a ``(0,)`` placeholder for ``v``; the others an elementwise ``v``
    and placeholders for the factors. Every slot is a fresh buffer: shared buffers cannot
    be donated.
    """

    def leaf(p):
        stat = _stat_dtype(p.dtype)
        if is_factored(p.shape):
            rows = tuple(range(p.ndim - 1))  # the param's axes but the last
            cols = (*range(p.ndim - 2), p.ndim - 1)  # ... but the second to last
            return (
                filled_like(p, 0.0, stat, axes=rows),
                filled_like(p, 0.0, stat, axes=cols),
                jnp.zeros((0,), stat),
                filled_like(p, 0.0, stat, axes=rows),
                filled_like(p, 0.0, stat, axes=cols),
            )
        v = jnp.zeros_like(p, dtype=stat)
        return tuple(v if i == 2 else jnp.zeros((0,), stat) for i in range(5))

    return tree_map_multi(leaf, 5, params)


def scale_by_came(
    b1: Any = 0.9,
    b2: Any = 0.999,
    b3: Any = 0.9999,
    eps1: Any = 1e-30,
    eps2: Any = 1e-16,
    clip_threshold: Any = 1.0,
    *,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    r"""CAME's scaling (official CAME, no learning rate, no weight decay).

    For a leaf with ``ndim >= 2`` (factored over the last two axes, :math:`i` rows,
    :math:`j` columns):

    .. math::
      R_t &= \beta_2 R_{t-1} + (1-\beta_2)\,\mathrm{mean}_j(g_t^2 + \epsilon_1), \quad
      C_t = \beta_2 C_{t-1} + (1-\beta_2)\,\mathrm{mean}_i(g_t^2 + \epsilon_1) \\
      u_t &= g_t \big/ \sqrt{R_t C_t / \overline{R_t}}, \quad
      \hat u_t = u_t / \max(1, \mathrm{RMS}(u_t)/d) \\
      m_t &= \beta_1 m_{t-1} + (1-\beta_1)\hat u_t, \quad
      U_t = (\hat u_t - m_t)^2 + \epsilon_2 \\
      R'_t &= \beta_3 R'_{t-1} + (1-\beta_3)\,\mathrm{mean}_j U_t, \quad
      C'_t = \beta_3 C'_{t-1} + (1-\beta_3)\,\mathrm{mean}_i U_t \\
      \text{out}_t &= m_t \big/ \sqrt{R'_t C'_t / \overline{R'_t}}

    For ``ndim < 2`` the second moment is elementwise,
    :math:`v_t = \beta_2 v_{t-1} + (1-\beta_2)(g_t^2+\epsilon_1)`,
    :math:`u_t = g_t/\sqrt{v_t}`, and the output is :math:`m_t` (no confidence).
    There is no bias correction, so the first steps are large: about
    :math:`(1-\beta_1)/(\beta_1\sqrt{1-\beta_3}) \approx 11` for matrices.

    State: ``mu`` like the params (``mu_dtype``), and for a ``m x n`` matrix four
    vectors of ``m`` or ``n`` floats, so about 4 bytes per float32 element; the second
    moment statistics are kept in float32 or wider (float64 for float64 params). The
    state is kept stacked per group of like leaves
    (:func:`~jaxopt_adv.grouping.with_grouped_leaves`: leaves of one shape and dtype, up
    to :data:`~jaxopt_adv.grouping.MAX_GROUPED_SIZE` elements each, share one buffer a
    field; the maths is ``jax.vmap``-ed over them), so a tree that repeats a few shapes
    compiles in time that grows with its shapes, not its leaves; only the update is read
    back per leaf. A field reads per leaf with ``jaxopt_adv.grouping.ungroup_leaves(
    state.inner.mu, jax.tree.structure(params))``.

    Args:
      b1: momentum decay (torch ``betas[0]``), in ``[0, 1)``.
      b2: second-moment decay (``betas[1]``), in ``[0, 1)``.
      b3: instability (confidence) decay (``betas[2]``), in ``[0, 1)``.
      eps1: added to ``g^2`` (``eps[0]``), ``>= 0``.
      eps2: added to the instability (``eps[1]``), ``>= 0``.
      clip_threshold: RMS threshold ``d`` of the scaled update, ``> 0``.
      mu_dtype: static; optional dtype of the first moment.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is a
      ``jaxopt_adv.grouping.GroupedState`` around a :class:`ScaleByCameState`.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.came.came import scale_by_came
      >>> tx = scale_by_came()
      >>> state = tx.init(jnp.zeros(2))
      >>> u, state = tx.update(jnp.array([1.0, -2.0]), state)
      >>> u
      Array([ 0.1, -0.1], dtype=float32)

    References:
      Luo, Ren, Zheng, Jiang, Jiang, You, "CAME: Confidence-guided Adaptive Memory
      Efficient Optimization", ACL 2023 (arXiv 2307.02047); mirrors ``came_pytorch.CAME``
      0.1.3 and ``pytorch_optimizer.CAME`` 4.1.0 (with ``ams_bound=False``).

    Warning:
      ``optax.scale_by_factored_rms`` (Adafactor) is not reused: it factors over the two
      *largest* axes (CAME uses the last two), leaves dims < 128 unfactored and decays
      with ``1 - t^-0.8``. A non-finite gradient makes the statistics of its whole leaf
      NaN for good (the row mean feeds every element); wrap the optimizer in
      ``optax.apply_if_finite`` to skip such steps with the state untouched.
    """
    return with_grouped_leaves(
        came_scaling(b1, b2, b3, eps1, eps2, clip_threshold, mu_dtype=mu_dtype)
    )


def came_scaling(
    b1: Any = 0.9,
    b2: Any = 0.999,
    b3: Any = 0.9999,
    eps1: Any = 1e-30,
    eps2: Any = 1e-16,
    clip_threshold: Any = 1.0,
    *,
    mu_dtype: Any = None,
) -> optax.GradientTransformationExtraArgs:
    """:func:`scale_by_came`'s maths on the tree it is given, its state shaped alike.

    On a plain tree every leaf is scaled by its own trace; on a
    :class:`~jaxopt_adv.grouping.GroupTree` (what :func:`scale_by_came` passes) the
    per-leaf maths is ``jax.vmap``-ed over each stack's members, so the state is kept
    stacked and the compiled step grows with the distinct shapes, not the leaves.
    Arguments as :func:`scale_by_came`'s (checked here, at construction).
    """
    check_beta(b1, 0, "b1")
    check_beta(b2, 1, "b2")
    check_beta(b3, 2, "b3")
    check_nonnegative(eps1, "eps1")
    check_nonnegative(eps2, "eps2")
    check_positive(clip_threshold, "clip_threshold")
    mu_dtype = None if mu_dtype is None else jnp.dtype(mu_dtype)

    def init_fn(params: optax.Params) -> ScaleByCameState:
        v_row, v_col, v, r_row, r_col = tree_map_grouped(init_second_moments, 5, None, params)
        return ScaleByCameState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params, dtype=mu_dtype),
            v_row=v_row,
            v_col=v_col,
            v=v,
            r_row=r_row,
            r_col=r_col,
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args

        def leaf(g, m, v_row, v_col, v, r_row, r_col):
            x = g.astype(_stat_dtype(g.dtype))
            u, v_row, v_col, v = came_precondition(x, v_row, v_col, v, b2, eps1)
            u = rms_clip(u, clip_threshold)
            m = (b1 * m + (1 - b1) * u).astype(m.dtype)
            out, r_row, r_col = came_confidence(
                u, m.astype(u.dtype), r_row, r_col, b3, eps2, residual=momentum_residual(u, m, b1)
            )
            return out.astype(g.dtype), m, v_row, v_col, v, r_row, r_col

        moments = (state.mu, state.v_row, state.v_col, state.v, state.r_row, state.r_col)
        out, *moments = tree_map_grouped(leaf, 7, None, updates, *moments)
        return out, ScaleByCameState(optax.safe_increment(state.count), *moments)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


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
) -> optax.GradientTransformationExtraArgs:
    r"""CAME, as official CAME (``came_pytorch.CAME``) steps.

    .. math::
      \theta_t = \theta_{t-1} - \eta_t\,(\text{out}_t + \lambda\,\theta_{t-1})

    with :math:`\text{out}_t` from :func:`scale_by_came`: the chain
    ``scale_by_came -> add_decayed_weights -> scale_by_learning_rate``. The decay is
    decoupled, uses the pre-update params, and is scaled by the learning rate but not by
    the confidence, exactly where official CAME applies it.

    Args:
      learning_rate: scalar or schedule (torch ``lr``), ``>= 0``.
      b1: momentum decay, in ``[0, 1)``.
      b2: second-moment decay, in ``[0, 1)``.
      b3: instability decay, in ``[0, 1)``.
      eps1: added to ``g^2``, ``>= 0``.
      eps2: added to the instability, ``>= 0``.
      clip_threshold: RMS threshold of the scaled update, ``> 0``.
      weight_decay: decoupled decay :math:`\lambda`, ``>= 0``; at a Python ``0`` its
        block passes the updates through (then ``params`` are not needed).
      weight_decay_mask: optional mask (tree or callable) of the leaves to decay, as in
        ``optax.add_decayed_weights``.
      mu_dtype: static; optional dtype of the first moment.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; it needs ``params`` when
      ``weight_decay`` is not a Python 0.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.came.came import came
      >>> opt = came(0.1, weight_decay=0.5)
      >>> params = jnp.ones(2)
      >>> state = opt.init(params)
      >>> updates, state = opt.update(jnp.array([1.0, -1.0]), state, params)
      >>> updates
      Array([-0.06, -0.04], dtype=float32)

    References:
      Luo et al., "CAME: Confidence-guided Adaptive Memory Efficient Optimization",
      ACL 2023; mirrors ``came_pytorch.CAME`` 0.1.3 and ``pytorch_optimizer.CAME`` 4.1.0
      with its defaults ``weight_decouple=True, fixed_decay=False, ams_bound=False``.

    Warning:
      ``pytorch_optimizer.CAME`` has options official CAME lacks, not reproduced here:
      ``weight_decouple=False`` adds ``wd * p`` to the gradient before the second moment
      (``optax.chain(optax.add_decayed_weights(wd), scale_by_came(), ...)``);
      ``fixed_decay=True`` decays by ``wd`` without the learning rate; ``ams_bound``
      keeps a running max of the factored second moment. Its default ``lr`` is 2e-4;
      ``came_pytorch`` has none. Unlike ``came_pytorch`` (which asserts ``lr > 0`` and
      ``betas in [0, 1]``), ``learning_rate = 0`` is allowed and betas must be ``< 1``.
    """
    scaling = scale_by_came(b1, b2, b3, eps1, eps2, clip_threshold, mu_dtype=mu_dtype)
    return came_chain(scaling, learning_rate, weight_decay, weight_decay_mask)


def came_chain(
    scaling: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    weight_decay: Any,
    weight_decay_mask: Any | Callable[[optax.Params], Any] | None,
) -> optax.GradientTransformationExtraArgs:
    """:func:`came` around a given CAME ``scaling`` (e.g. ``jaxopt_adv.fast``'s kernel):
    ``scaling -> add_decayed_weights -> scale_by_learning_rate``, updates in the
    gradients' dtype; ``init`` refuses integer and complex params."""
    check_learning_rate(learning_rate)
    check_nonnegative(weight_decay, "weight_decay")
    decay = optax.add_decayed_weights(weight_decay, weight_decay_mask)
    blocks = [scaling, skip_at_static_zero(weight_decay, decay)]
    blocks.append(optax.scale_by_learning_rate(learning_rate))
    # the decay promotes to the params' dtype
    return requires_float_params(with_gradient_dtype(optax.chain(*blocks)))
