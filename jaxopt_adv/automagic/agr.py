r"""Adaptive gradient regularisation (AGR), with the Automagic Laplacian edge factor.

AGR shrinks each gradient element by its share of the total absolute gradient,

.. math::
  \alpha = \frac{|g|}{S + \epsilon}\,(1 + E(g)), \qquad g' = g\,(1 - \alpha),

where :math:`S = \sum |g|` runs over one tensor (``scope="leaf"``, official AGR) or over
the whole gradient tree (``scope="tree"``, one torch param group, as Automagic-CameAMP
does). :math:`E` is the optional Laplacian edge strength of :func:`edge_strength`.

The pure per-leaf functions (:func:`edge_strength`, :func:`agr_leaf`) are exported for the
composite optimizer; :func:`agr` is the optax block.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxopt_adv._common import check, check_interval, check_nonnegative, unshard_trailing_axes
from jaxopt_adv.grouping import sum_grouped, tree_map_grouped

__all__ = ["agr", "agr_leaf", "edge_strength", "laplacian"]

_SCOPES = ("leaf", "tree")


def laplacian(x: jax.Array) -> jax.Array:
    """Sum of the second differences of ``x`` over its last two axes (zero on borders).

    The row term ``x[i+1] - 2 x[i] + x[i-1]`` is added on rows ``1..h-2`` (only when
    ``h > 2``), the column term likewise on columns ``1..w-2`` (only when ``w > 2``); the
    two are independent, so a border row still gets its column term. Leaves with fewer
    than two axes give zeros.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.automagic.agr import laplacian
      >>> laplacian(jnp.array([[0., 0., 0., 0.], [0., 1., 0., 0.], [0., 0., 0., 0.]]))
      Array([[ 0.,  0.,  0.,  0.],
             [ 0., -4.,  1.,  0.],
             [ 0.,  0.,  0.,  0.]], dtype=float32)
    """
    if x.ndim < 2:
        return jnp.zeros_like(x)
    # Shifted slices need neighbours: gather explicitly sharded axes, then shard back.
    y = unshard_trailing_axes(x, 2)
    out = jnp.zeros_like(y)
    h, w = y.shape[-2:]
    if h > 2:
        out = out.at[..., 1:-1, :].add(y[..., 2:, :] - 2 * y[..., 1:-1, :] + y[..., :-2, :])
    if w > 2:
        out = out.at[..., 1:-1].add(y[..., 2:] - 2 * y[..., 1:-1] + y[..., :-2])
    return out if y is x else jax.sharding.reshard(out, jax.typeof(x).sharding)


def edge_strength(x: jax.Array, threshold: Any = 0.6, scale: Any = 0.1) -> jax.Array:
    """Laplacian edge strength ``E(x) = 1[|lap x| > threshold] * |lap x| * scale``.

    ``lap`` is :func:`laplacian` (last two axes; zero for ``ndim < 2``). On a torch Linear
    weight this works on the (out, in) index grid, on a conv kernel (O, I, kh, kw) on the
    kernel taps (a 3x3 kernel: centre tap only), not on images. It is symmetric in the two
    axes, so a Flax ``Dense`` kernel (in, out) gives the transposed result; a Flax conv
    kernel (HWIO) does not put the taps last.

    Args:
      x: any array.
      threshold: edge threshold (Automagic ``edge_threshold``, default 0.6).
      scale: factor on the magnitude above the threshold (``edge_penalty``, default 0.1).

    Returns:
      An array like ``x``; NaN where ``lap x`` is NaN.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.automagic.agr import edge_strength
      >>> edge_strength(jnp.array([[0., 0., 0., 0.], [0., 1., 0., 0.], [0., 0., 0., 0.]]))[1]
      Array([0. , 0.4, 0.1, 0. ], dtype=float32)
    """
    magnitude = jnp.abs(laplacian(x))
    return jnp.where(magnitude > threshold, magnitude * scale, jnp.zeros_like(magnitude))


def agr_leaf(
    g: jax.Array,
    total: jax.Array,
    eps: Any = 1e-10,
    *,
    count: int | None = None,
    edge: bool = False,
    edge_threshold: Any = 0.6,
    edge_scale: Any = 0.1,
) -> jax.Array:
    """AGR of one leaf given the absolute-gradient sum ``total`` of its scope.

    ``g * (1 - alpha)``, ``alpha = |g| / (total + eps) * (1 + E(g) if edge)``. With
    ``count`` (static: the number of elements ``total`` sums over), ``alpha`` is capped at
    ``1 - 1 / count``: an element that carries the whole sum keeps ``1 / count`` of itself
    instead of vanishing, and a lone element (``count == 1``) passes unchanged. When
    ``total + eps == 0`` (all-zero gradients with ``eps=0``, where official AGR divides 0
    by 0) the leaf is returned unchanged, i.e. zero.
    """
    denom = total + eps
    safe = denom != 0  # NaN totals stay NaN
    alpha = jnp.abs(g) / jnp.where(safe, denom, jnp.ones_like(denom))
    alpha = jnp.where(safe, alpha, jnp.zeros_like(alpha))
    if edge:
        alpha = alpha * (1 + edge_strength(g, edge_threshold, edge_scale))
    if count is not None:
        alpha = jnp.minimum(alpha, 1 - 1 / count)  # NaN stays NaN
    return (g * (1 - alpha)).astype(g.dtype)


def _abs_sum(g: jax.Array) -> jax.Array:
    return jnp.sum(jnp.abs(g), dtype=jnp.promote_types(jnp.float32, g.dtype))


def agr(
    scope: str = "leaf",
    edge: bool = False,
    edge_threshold: Any = 0.6,
    edge_scale: Any = 0.1,
    eps: Any = 1e-10,
    *,
    cap_alpha: bool = False,
) -> optax.GradientTransformationExtraArgs:
    r"""Adaptive gradient regularisation: shrink each element by its share of ``sum |g|``.

    .. math::
      \alpha = \frac{|g|}{S + \epsilon}\,\bigl(1 + E(g)\bigr)_{\text{if edge}}, \qquad
      g' = g\,(1 - \alpha)

    * ``scope="leaf"``: :math:`S = \sum |g|` over each tensor: official AGR
      (hjiang24/AGR-method, which has no eps: pass ``eps=0``).
    * ``scope="tree"``: :math:`S` over the whole gradient tree, the sum Automagic-CameAMP
      takes over one torch param group. Under ``optax.partition`` the other partitions'
      leaves are ``MaskedNode`` s and vanish from the sum, so one partition label is
      exactly one torch param group.
    * ``edge``: multiply :math:`\alpha` by ``1 + edge_strength(g)``, the Laplacian edge
      factor over the last two axes (:func:`edge_strength`, zero for ``ndim < 2``).
    * ``cap_alpha``: cap :math:`\alpha` at :math:`1 - 1/n`, with :math:`n` the number of
      elements :math:`S` sums over. Without it an element that carries the whole sum (a
      scalar parameter under ``"leaf"``; one active entry of a vector, or a tree that is
      one small array, under ``"tree"``) is multiplied by exactly zero at every step and
      never moves. With it such an element keeps :math:`1/n` of itself, a lone element
      (:math:`n = 1`) passes unchanged, and no edge factor can flip a sign; elsewhere
      (:math:`\alpha \le 1 - 1/n`, always so in large tensors unless one element holds
      nearly all of :math:`S`) the result is AGR's.

    Put it first in a chain, on raw gradients: ``optax.chain(agr(), optax.adamw(...))`` is
    the paper's AdamW-AGR.

    Args:
      scope: static; ``"leaf"`` or ``"tree"``.
      edge: static; apply the Laplacian edge factor.
      edge_threshold: edge threshold, in ``(0, 1)`` (Automagic default 0.6).
      edge_scale: edge factor scale, ``>= 0`` (Automagic ``edge_penalty``, 0.1).
      eps: added to :math:`S`, ``>= 0``; Automagic 1e-10, official AGR 0.
      cap_alpha: static; cap :math:`\alpha` at :math:`1 - 1/n` (default off: official
        AGR; Automagic-CameAMP turns it on).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with ``optax.EmptyState``. Given the
      extra argument ``slots`` (:func:`~jaxopt_adv.grouping.leaf_slots` of the params,
      as :func:`~jaxopt_adv.grouping.with_slots` passes it), leaves of one shape are
      processed as one group (:func:`~jaxopt_adv.grouping.tree_map_grouped`); on a
      :class:`~jaxopt_adv.grouping.GroupTree` (inside
      :func:`~jaxopt_adv.automagic.automagic.automagic_came_amp`) per member of each
      stack; otherwise one by one. The results are the same to rounding.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.automagic.agr import agr
      >>> tx = agr(eps=0.0)
      >>> u, _ = tx.update(jnp.array([1.0, -3.0]), tx.init(jnp.zeros(2)))
      >>> u
      Array([ 0.75, -0.75], dtype=float32)

    References:
      Jiang, Shen et al., "Adaptive Gradient Regularization: A Faster and Generalizable
      Optimization Technique for Deep Neural Networks", arXiv 2407.16944, 2024. Parity
      checked against the minimal torch restatement ``tests/reference/torch_agr.py`` of
      AGR and Automagic-CameAMP's variant (group-wide sum, Laplacian edge factor).

    Warning:
      With ``eps=0`` an all-zero gradient (zero tree for ``"tree"``) is returned as zeros
      where official AGR gives NaN. A NaN gradient element makes :math:`S` NaN, so the
      whole leaf (``"leaf"``) or tree (``"tree"``) becomes NaN; an infinite one makes
      :math:`\alpha = 0` for the finite elements and NaN for itself.
    """
    check(scope in _SCOPES, f"Invalid scope: {scope!r} (scope must be one of {_SCOPES})")
    check_interval(edge_threshold, "edge_threshold", 0.0, 1.0, low_open=True, high_open=True)
    check_nonnegative(edge_scale, "edge_scale")
    check_nonnegative(eps, "eps")

    def init_fn(params: optax.Params) -> optax.EmptyState:
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None, **extra_args):
        del params
        slots = extra_args.get("slots")
        leaves = jax.tree.leaves(updates)
        tree_count = sum(int(jnp.size(g)) for g in leaves)
        # the tree-wide sum: one reduction per shape group, not per leaf (compile time)
        tree_total = sum_grouped(_abs_sum, leaves) if scope == "tree" and leaves else None

        def leaf(g):
            total = tree_total if scope == "tree" else _abs_sum(g)
            count = (tree_count if scope == "tree" else int(jnp.size(g))) if cap_alpha else None
            shrunk = agr_leaf(
                g,
                total,
                eps,
                count=count,
                edge=edge,
                edge_threshold=edge_threshold,
                edge_scale=edge_scale,
            )
            return (shrunk,)

        return tree_map_grouped(leaf, 1, slots, updates)[0], state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
