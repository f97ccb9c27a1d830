r"""Direction control: Grams, Cautious masking, edge damping and OrthoGrad.

These blocks change an update's direction, not its optimizer state. Grams and Cautious
compare the update with a *reference gradient* they read from the extra argument
``ref_grads`` -- :func:`jaxopt_adv.automagic.composition.with_reference_grads` provides it
(the processed gradient), or pass ``ref_grads=grads`` to ``update`` yourself:

.. math::
  \text{grams}(u, g) = |u| \odot \operatorname{sign}(g), \qquad
  \text{cautious}(u, g) = u \odot \frac{\mathbb 1[u g > 0]}
      {\max(\operatorname{mean} \mathbb 1[u g > 0],\ 10^{-3})}

Edge damping shrinks updates where their Laplacian edge strength has been high, and
:func:`orthogonalize_update` removes the update's component along the weights (OrthoGrad),
keeping its norm. The per-leaf maths are pure functions the Automagic-CameAMP composite
imports; it selects between them per phase with ``jnp.where``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from jaxopt_adv._common import check, check_interval, check_nonnegative, tree_map_multi
from jaxopt_adv.automagic.agr import edge_strength

__all__ = [
    "ORTHOGONALIZE_RULES",
    "EdgeDampingState",
    "cautious",
    "cautious_update",
    "edge_damping",
    "edge_damping_update",
    "grams",
    "grams_update",
    "orthogonalize",
    "orthogonalize_update",
]

ORTHOGONALIZE_RULES = ("pytorch_optimizer", "automagic")
_NO_PARAMS_MSG = (
    "orthogonalize_update requires the current value of parameters, but you are not "
    "passing `params` when calling `update`."
)


def _ref_grads(name: str, updates: Any, extra_args: dict[str, Any]) -> Any:
    """The ``ref_grads`` extra argument, which must be there and shaped like ``updates``."""
    ref_grads = extra_args.get("ref_grads")
    if ref_grads is None:
        raise ValueError(
            f"{name} needs the reference gradient as the extra argument `ref_grads` (its "
            "signs steer the update): wrap the chain in "
            "jaxopt_adv.automagic.composition.with_reference_grads(pre, body), or call "
            "update(updates, state, params, ref_grads=grads). The updates' own signs are no "
            f"substitute: {name} would then do nothing."
        )
    if jax.tree.structure(ref_grads) != jax.tree.structure(updates):
        raise ValueError(
            f"{name}: `ref_grads` must have the structure of the updates (inside "
            "optax.masked / optax.partition pass mask_compatible_extra_args=True), got "
            f"{jax.tree.structure(ref_grads)} for {jax.tree.structure(updates)}"
        )
    return ref_grads


def _compute_dtype(*xs: chex.Array) -> Any:
    """float64 when any input is, else float32 (bf16/f16 are promoted for the reductions)."""
    return jnp.promote_types(jnp.float32, jnp.result_type(*xs))


# --------------------------------------------------------------------------------------
# Grams.


def grams_update(u: chex.Array, g: chex.Array) -> chex.Array:
    """``|u| * sign(g)`` for one leaf: the update's magnitude, the gradient's sign."""
    return (jnp.abs(u) * jnp.sign(g).astype(u.dtype)).astype(u.dtype)


def grams() -> optax.GradientTransformationExtraArgs:
    r"""Grams: keep each update element's magnitude, take its sign from ``ref_grads``.

    .. math::
      \text{out} = |u| \odot \operatorname{sign}(g_{\text{ref}})

    Elements whose reference gradient is 0 get a 0 update. With ``ref_grads`` the raw
    gradient and an Adam scaling in front, this is ``pytorch_optimizer.Grams``:
    ``with_reference_grads(optax.identity(), optax.chain(jaxopt_adv.torch.scale_by_adam(
    b1, b2, eps=1e-6), grams(), optax.add_decayed_weights(wd),
    optax.scale_by_learning_rate(lr)))``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``ref_grads=``
      (``ValueError`` otherwise).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.automagic.direction import grams
      >>> tx = grams()
      >>> u, _ = tx.update(jnp.array([2.0, -1.0, 3.0]), tx.init(jnp.zeros(3)),
      ...                  ref_grads=jnp.array([-0.1, -0.2, 0.0]))
      >>> u
      Array([-2., -1.,  0.], dtype=float32)

    References:
      Cao et al., "Grams: Gradient Descent with Adaptive Momentum Scaling",
      arXiv 2412.17107, 2024; the update of ``pytorch_optimizer.Grams`` (4.1.0).

    Warning:
      ``pytorch_optimizer.Grams`` with ``weight_decouple=False`` adds the coupled decay
      to the gradient only after the update was formed, so there it does nothing.
    """

    def update_fn(updates, state, params=None, **extra_args):
        del params
        ref_grads = _ref_grads("grams", updates, extra_args)
        return jax.tree.map(grams_update, updates, ref_grads), state

    return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update_fn)


# --------------------------------------------------------------------------------------
# Cautious (Automagic's mean-floor normalisation and background halving).


def cautious_update(
    u: chex.Array,
    g: chex.Array,
    mean_floor: Any = 1e-3,
    background_threshold: Any = None,
    background_factor: Any = 0.5,
) -> chex.Array:
    """Automagic's cautious mask for one leaf (Automagic-CameAMP's mean-floor rule).

    ``M = 1[u g > 0] / max(mean(1[u g > 0]), mean_floor)``; if ``background_threshold`` is
    not ``None`` and the unbiased variance of the whole ``g`` is below it, ``M *= factor``;
    returns ``u * M``. A one-element ``g`` has a NaN variance (as in torch), which never
    compares below the threshold. An empty leaf (no mean: 0 / 0) is returned as it is.
    """
    if u.size == 0:
        return u
    dtype = _compute_dtype(u)
    mask = (u * g > 0).astype(dtype)
    mask = mask / jnp.maximum(jnp.mean(mask), mean_floor)
    if background_threshold is not None:
        variance = jnp.var(g.astype(_compute_dtype(g)), ddof=1)
        mask = jnp.where(variance < background_threshold, mask * background_factor, mask)
    return (u * mask).astype(u.dtype)


def cautious(
    mean_floor: Any = 1e-3,
    background_threshold: Any = None,
    background_factor: Any = 0.5,
) -> optax.GradientTransformationExtraArgs:
    r"""Cautious masking as Automagic-CameAMP normalises it, with optional background halving.

    .. math::
      M = \frac{\mathbb 1[u \odot g_{\text{ref}} > 0]}
               {\max(\operatorname{mean}\mathbb 1[u \odot g_{\text{ref}} > 0], f)}, \qquad
      M \leftarrow \kappa M \ \text{ if }\ \operatorname{var}(g_{\text{ref}}) < \tau, \qquad
      \text{out} = u \odot M

    per leaf; the variance is the unbiased variance of the whole leaf.

    Args:
      mean_floor: :math:`f`, floor of the kept fraction, ``> 0`` (default ``1e-3``).
      background_threshold: :math:`\tau`, ``>= 0``; ``None`` (static) switches the
        background rule off.
      background_factor: :math:`\kappa`, ``>= 0`` (default 0.5).

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``ref_grads=``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.automagic.direction import cautious
      >>> tx = cautious()
      >>> u, _ = tx.update(jnp.array([1.0, 1.0, 2.0, 1.0]), tx.init(jnp.zeros(4)),
      ...                  ref_grads=jnp.array([1.0, -1.0, 1.0, -1.0]))
      >>> u
      Array([2., 0., 4., 0.], dtype=float32)

    References:
      Liang, Chen, Liu, Liu, "Cautious Optimizers: Improving Training with One Line of
      Code", arXiv 2411.16085, 2024; the normalisation of Automagic-CameAMP
      (gesen2egee / hinablue sd-scripts).

    Warning:
      ``pytorch_optimizer``'s ``apply_cautious`` (the ``cautious=True`` flag) scales the
      mask by ``numel / (sum + 1)`` instead of ``1 / max(mean, f)``: its kept updates are
      smaller by the factor ``sum / (sum + 1)`` (0.5 with one kept element).
    """
    check_interval(mean_floor, "mean_floor", 0.0, float("inf"), low_open=True)
    if background_threshold is not None:
        check_nonnegative(background_threshold, "background_threshold")
    check_nonnegative(background_factor, "background_factor")

    def update_fn(updates, state, params=None, **extra_args):
        del params
        ref_grads = _ref_grads("cautious", updates, extra_args)

        def leaf(u, g):
            return cautious_update(u, g, mean_floor, background_threshold, background_factor)

        return jax.tree.map(leaf, updates, ref_grads), state

    return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update_fn)


# --------------------------------------------------------------------------------------
# Laplacian edge strength and edge damping.


def edge_damping_update(
    u: chex.Array,
    history: chex.Array,
    decay: Any = 0.9,
    threshold: Any = 0.6,
    scale: Any = 0.1,
    floor: Any = 0.1,
) -> tuple[chex.Array, chex.Array]:
    """One leaf: ``H = decay H + (1-decay) E(u)``; returns ``(u * clip(1 - H, floor, 1), H)``.

    Leaves with ``ndim < 2`` have no edges: ``u`` and ``history`` come back unchanged.
    """
    if u.ndim < 2:
        return u, history
    strength = edge_strength(u, threshold, scale).astype(history.dtype)
    history = (decay * history + (1.0 - decay) * strength).astype(history.dtype)
    factor = jnp.clip(1.0 - history, floor, 1.0)
    return (u * factor).astype(u.dtype), history


class EdgeDampingState(NamedTuple):
    """State of :func:`edge_damping`."""

    count: chex.Array  # int32 scalar
    edge_history: optax.Updates  # H; shape (0,) for leaves with ndim < 2


def edge_damping(
    decay: Any = 0.9,
    threshold: Any = 0.6,
    scale: Any = 0.1,
    floor: Any = 0.1,
) -> optax.GradientTransformationExtraArgs:
    r"""Damp updates where their edge strength has been high (Automagic, early phase).

    .. math::
      H_t = \delta H_{t-1} + (1 - \delta) E(u_t), \qquad
      \text{out}_t = u_t \odot \operatorname{clip}(1 - H_t, f, 1)

    with :math:`E` the Laplacian :func:`edge_strength` of the *update* over its last two
    axes. Leaves with fewer than two axes pass through (their history is a ``(0,)``
    placeholder).

    Args:
      decay: :math:`\delta`, in ``[0, 1)`` (default 0.9).
      threshold: edge threshold of :math:`E`, ``>= 0`` (default 0.6).
      scale: factor of :math:`E`, ``>= 0`` (Automagic ``edge_penalty``, default 0.1).
      floor: :math:`f`, smallest damping factor, in ``[0, 1]`` (default 0.1).

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.automagic.direction import edge_damping
      >>> tx = edge_damping()
      >>> u = jnp.zeros((3, 3)).at[1, 1].set(10.0)
      >>> out, state = tx.update(u, tx.init(u))
      >>> out[1, 1]  # E = 0.1 * |lap u| = 4, H = 0.1 * E, factor 1 - H
      Array(6., dtype=float32)

    References:
      Automagic-CameAMP (gesen2egee / hinablue sd-scripts), "edge suppression" in the
      Grams phase (its Laplacian edge strength, as in its AGR edge factor).
    """
    check_interval(decay, "decay", 0.0, 1.0, high_open=True)
    check_nonnegative(threshold, "threshold")
    check_nonnegative(scale, "scale")
    check_interval(floor, "floor", 0.0, 1.0)

    def init_fn(params: optax.Params) -> EdgeDampingState:
        def history(p):
            return jnp.zeros_like(p) if p.ndim >= 2 else jnp.zeros((0,), p.dtype)

        return EdgeDampingState(jnp.zeros([], jnp.int32), jax.tree.map(history, params))

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args

        def leaf(u, h):
            return edge_damping_update(u, h, decay, threshold, scale, floor)

        out, history = tree_map_multi(leaf, 2, updates, state.edge_history)
        return out, EdgeDampingState(optax.safe_increment(state.count), history)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------------------------
# OrthoGrad.


def orthogonalize(
    u: chex.Array, w: chex.Array, eps: Any = 1e-30, rule: str = "pytorch_optimizer"
) -> chex.Array:
    r"""OrthoGrad for one leaf: ``u`` without its component along ``w``, norm restored.

    With flattened ``w, u`` and :math:`u_\perp = u - \frac{w \cdot u}{w \cdot w + \epsilon} w`:

    * ``"pytorch_optimizer"`` (4.1.0): :math:`u_\perp` is zeroed when
      :math:`\|u_\perp\| \le 4\,\varepsilon_{\text{mach}} \|u\|` (an update parallel to the
      weights), then returned as :math:`u_\perp \|u\| / (\|u_\perp\| + \epsilon)`;
    * ``"automagic"`` (Automagic-CameAMP's OrthoGrad): ``u`` unchanged when :math:`\|w\| \le \epsilon`, or when
      :math:`\|u_\perp\| \le \epsilon`; otherwise :math:`u_\perp \|u\| / (\|u_\perp\| + \epsilon)`.

    The two agree except for updates (numerically) parallel to the weights. Computed in
    float64 for float64 inputs, else float32; returned in ``u``'s dtype.
    """
    if rule not in ORTHOGONALIZE_RULES:
        raise ValueError(f"Invalid rule: {rule!r} (must be one of {ORTHOGONALIZE_RULES})")
    dtype = _compute_dtype(u, w)
    # Sums of products rather than jnp.dot over flattened leaves: the same numbers, and
    # valid for explicitly sharded leaves (a dot over a sharded axis needs out_sharding).
    c, v = u.astype(dtype), w.astype(dtype)
    projection = jnp.sum(v * c) / (jnp.sum(v * v) + eps)
    c_orth = c - v * projection
    c_norm = jnp.sqrt(jnp.sum(c * c))
    orth_norm = jnp.sqrt(jnp.sum(c_orth * c_orth))
    if rule == "pytorch_optimizer":
        parallel = orth_norm <= 4.0 * jnp.finfo(dtype).eps * c_norm
        out = jnp.where(parallel, 0.0, c_orth) * (c_norm / (orth_norm + eps))
    else:
        rescaled = c_orth * (c_norm / (orth_norm + eps))
        keep = (jnp.sqrt(jnp.sum(v * v)) <= eps) | (orth_norm <= eps)
        out = jnp.where(keep, c, rescaled)
    return out.astype(u.dtype)


def orthogonalize_update(
    eps: Any = 1e-30, *, rule: str = "pytorch_optimizer"
) -> optax.GradientTransformationExtraArgs:
    r"""OrthoGrad: project each update leaf orthogonally to its parameters, keep its norm.

    .. math::
      u_\perp = u - \frac{\langle w, u\rangle}{\langle w, w\rangle + \epsilon} w, \qquad
      \text{out} = u_\perp \frac{\|u\|}{\|u_\perp\| + \epsilon}

    per leaf, over the flattened tensor (see :func:`orthogonalize` for the degenerate
    cases of each ``rule``). Placed first in a chain it is ``pytorch_optimizer.OrthoGrad``
    (which projects the *gradients* before the wrapped optimizer); the Automagic composite
    applies it to its final direction instead.

    Args:
      eps: :math:`\epsilon`, ``>= 0`` (default ``1e-30``, as both references).
      rule: static; ``"pytorch_optimizer"`` (default) or ``"automagic"``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; it needs ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.automagic.direction import orthogonalize_update
      >>> tx = orthogonalize_update()
      >>> params = jnp.array([1.0, 0.0])
      >>> u, _ = tx.update(jnp.array([3.0, 4.0]), tx.init(params), params)
      >>> u
      Array([0., 5.], dtype=float32)

    References:
      Prieto, Barsbey, Mediano, Birdal, "Grokking at the Edge of Numerical Stability",
      arXiv 2501.04697, 2025; mirrors ``pytorch_optimizer.OrthoGrad`` (4.1.0).
    """
    check_nonnegative(eps, "eps")
    check(
        rule in ORTHOGONALIZE_RULES,
        f"Invalid rule: {rule!r} (must be one of {ORTHOGONALIZE_RULES})",
    )

    def update_fn(updates, state, params=None, **extra_args):
        del extra_args
        if params is None:
            raise ValueError(_NO_PARAMS_MSG)
        return jax.tree.map(lambda u, w: orthogonalize(u, w, eps, rule), updates, params), state

    return optax.GradientTransformationExtraArgs(lambda params: optax.EmptyState(), update_fn)
