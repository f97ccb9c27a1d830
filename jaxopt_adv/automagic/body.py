"""The body blocks of Automagic-CameAMP: CAME scaling with a phased (torque-aware, then
decaying-EMA) momentum and confidence, and the phase-selected direction control.

:func:`scale_by_automagic_came` and :func:`automagic_direction` take the
:class:`~jaxopt_adv.automagic.automagic.AutomagicConfig` fields of the same names as
keyword arguments; :func:`~jaxopt_adv.automagic.automagic.automagic_came_amp` chains them
with the learning-rate mask and selective projection decay.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from jaxopt_adv._common import (
    check,
    check_beta,
    check_count,
    check_interval,
    check_nonnegative,
    check_tuple,
    decay_power,
    filled_like,
    scalar_dtype,
)
from jaxopt_adv.automagic.composition import EARLY, phase_of
from jaxopt_adv.automagic.direction import (
    cautious_update,
    edge_damping_update,
    grams_update,
    orthogonalize,
)
from jaxopt_adv.came.came import (
    came_confidence,
    came_precondition,
    init_second_moments,
    rms_clip,
)
from jaxopt_adv.grouping import leaf_slots, tree_map_grouped, tree_map_members
from jaxopt_adv.tam.tam import CORRELATIONS, torque_aware_momentum_update

__all__ = [
    "AutomagicCameState",
    "AutomagicDirectionState",
    "automagic_direction",
    "scale_by_automagic_came",
]

_EDGE_DECAY = 0.9  # EMA decay of the early-phase edge history
_EDGE_FLOOR = 0.1  # smallest early-phase edge damping factor
_ORTHOGRAD_EPS = 1e-30  # OrthoGrad's eps (both references' value)
_CAUTIOUS_MEAN_FLOOR = 1e-3  # floor of the Cautious mask's kept fraction
_BACKGROUND_VARIANCE = 1e-6  # a gradient variance below this is "background" ...
_BACKGROUND_FACTOR = 0.5  # ... and its Cautious mask is scaled by this factor


# the AutomagicConfig fields check_came_options validates, in its argument order
CAME_OPTIONS = (
    "betas",
    "eps",
    "clip_threshold",
    "beta1_decay",
    "beta1_floor",
    "tam_momentum",
    "tam_decay",
    "tam_correlation",
    "tam_large_tensor_threshold",
    "low_rank_emphasis",
)


def check_came_options(
    betas: Any,
    eps: Any,
    clip_threshold: Any,
    beta1_decay: Any,
    beta1_floor: Any,
    tam_momentum: Any,
    tam_decay: Any,
    tam_correlation: Any,
    tam_large_tensor_threshold: Any,
    low_rank_emphasis: Any,
) -> None:
    """The checks of :func:`scale_by_automagic_came`'s options (``AutomagicConfig`` runs
    them too)."""
    check_tuple(betas, "betas", 3)
    for i, beta in enumerate(betas):
        check_beta(beta, i, f"betas[{i}]")
    check_tuple(eps, "eps", 2)
    for i, value in enumerate(eps):
        check_nonnegative(value, f"eps[{i}]")
    check_interval(clip_threshold, "clip_threshold", 0.0, math.inf, low_open=True, high_open=True)
    check_interval(beta1_decay, "beta1_decay", 0.0, 1.0, low_open=True)
    check_interval(beta1_floor, "beta1_floor", 0.0, 1.0, high_open=True)
    check_interval(tam_momentum, "tam_momentum", 0.0, 1.0, high_open=True)
    check_interval(tam_decay, "tam_decay", 0.0, 1.0, high_open=True)
    check(
        tam_correlation in CORRELATIONS,
        f"Invalid tam_correlation value: {tam_correlation!r} "
        f"(tam_correlation must be one of {CORRELATIONS})",
    )
    check_count(tam_large_tensor_threshold, "tam_large_tensor_threshold", minimum=0)
    check_interval(
        low_rank_emphasis, "low_rank_emphasis", 0.0, math.inf, low_open=True, high_open=True
    )


# ------------------------------------------------------------------ CAME with phases


class AutomagicCameState(NamedTuple):
    """State of :func:`scale_by_automagic_came`."""

    count: chex.Array  # int32 scalar
    mu: optax.Updates  # momentum m
    s: optax.Updates  # TAM's smoothed correlation, at its true size (see _correlation_axes)
    v_row: optax.Updates  # factored second moment (ndim >= 2), else (0,)
    v_col: optax.Updates
    v: optax.Updates  # elementwise second moment (ndim < 2, or factored=False)
    r_row: optax.Updates  # factored residual (confidence), ndim >= 2
    r_col: optax.Updates
    r: optax.Updates  # elementwise residual (factored=False), else (0,)
    slots: optax.Updates  # int32 per leaf: its place among like leaves (None on a GroupTree)


def _stat_dtype(dtype: Any) -> Any:
    return jnp.promote_types(jnp.float32, dtype)


def _placeholder(p: chex.Array) -> chex.Array:
    return jnp.zeros((0,), _stat_dtype(p.dtype))


def momentum_schedule(
    count: chex.Array, warmup_steps: int, b1: Any, beta1_decay: Any, beta1_floor: Any
) -> tuple[chex.Array, chex.Array]:
    """``(early, beta1_t)`` of the step after ``count`` steps: whether it is in the early
    (TAM) phase, and the decaying EMA's ``max(b1 * beta1_decay^t, beta1_floor)``, ``t =
    count + 1``."""
    early = phase_of(count, warmup_steps) == EARLY
    t = optax.safe_increment(count).astype(scalar_dtype())
    return early, jnp.maximum(b1 * decay_power(beta1_decay, t)[0], beta1_floor)


def _correlation_axes(shape: tuple[int, ...], rule: str, threshold: int) -> tuple[int | None, ...]:
    """The param axes TAM's smoothed correlation really has (it is broadcast elsewhere).

    ``"dim0"`` is elementwise; ``"cosine"`` one scalar; ``"row_cosine"`` one per row;
    ``"auto"`` a scalar up to ``threshold`` elements or for 0-d/1-D
    leaves, else one per row. Storing ``s`` at that size is exact and saves 4 bytes per
    element for every leaf but the ``"dim0"`` rule. In :func:`filled_like`'s ``axes``
    form (``None``: a kept axis of size 1), so ``s`` is sharded like the param's rows.
    """
    ndim = len(shape)
    per_row = (*range(ndim - 1), None) if ndim >= 2 else ()
    if rule == "dim0":
        return tuple(range(ndim))
    if rule == "cosine":
        return ()
    if rule == "row_cosine":
        return per_row
    return () if math.prod(shape) <= threshold else per_row


def _compact(x: chex.Array, shape: tuple[int, ...]) -> chex.Array:
    """``x`` (constant along the axes ``shape`` lacks) reduced down to ``shape``.

    A max over constant values is exact, and unlike slicing it works on explicitly
    sharded axes.
    """
    if x.shape == shape:
        return x
    if shape == ():
        return jnp.max(x, initial=0.0) if x.size == 0 else jnp.max(x)
    return jnp.max(x, axis=-1, keepdims=True)


def scale_by_automagic_came(
    *,
    betas: tuple[float, float, float] = (0.8, 0.999, 0.9999),
    eps: tuple[float, float] = (1e-30, 1e-16),
    clip_threshold: float = 1.0,
    beta1_decay: float = 0.9995,
    beta1_floor: float = 0.4,
    tam_momentum: float = 0.9,
    tam_decay: float = 0.9,
    tam_correlation: str = "auto",
    tam_large_tensor_threshold: int = 1000,
    low_rank_emphasis: float = 1.2,
    factored: bool = True,
    came_enabled: bool = True,
    warmup_steps: int = 500,
) -> optax.GradientTransformationExtraArgs:
    r"""CAME's scaling and confidence around Automagic's phased momentum.

    .. math::
      u = \operatorname{clip}_{\mathrm{rms}}\bigl(g / \sqrt{v}\bigr), \qquad
      m = \begin{cases} \text{TAM}(m, s, u) & t < w/2 \\
          \beta_{1,t} m + (1 - \beta_{1,t}) u,\ \beta_{1,t} = \max(\beta_1 \delta^t, f)
          & \text{else} \end{cases}, \qquad
      U = m \big/ \sqrt{r},\ r \leftarrow \mathrm{EMA}_{\beta_3}\bigl((u - m)^2 + \epsilon_2\bigr)

    with :math:`v` and :math:`r` factored over the last two axes (``factored=True``; no
    confidence for leaves with fewer than two axes, as official CAME) or elementwise.
    TAM is :func:`~jaxopt_adv.tam.tam.torque_aware_momentum_update` (``variant="fixed"``).
    The arguments are the :class:`AutomagicConfig` fields of the same names
    (:attr:`AutomagicConfig.came_options` gives them).

    Args:
      betas: (:math:`\beta_1`, :math:`\beta_2`, :math:`\beta_3`): the momentum EMA after
        the early phase, the second moment, the confidence residual; each in ``[0, 1)``.
      eps: (:math:`\epsilon_1`, :math:`\epsilon_2`): added to the squared gradient (and
        TAM's norms), and to the squared residual; ``>= 0``.
      clip_threshold: RMS clip of the scaled gradient ``u``, ``> 0``.
      beta1_decay: :math:`\delta`, in ``(0, 1]``.
      beta1_floor: :math:`f`, in ``[0, 1)``.
      tam_momentum: TAM's momentum, in ``[0, 1)``.
      tam_decay: TAM's correlation decay, in ``[0, 1)``.
      tam_correlation: static; TAM's correlation rule (``"auto"``, ``"dim0"``,
        ``"cosine"``, ``"row_cosine"``).
      tam_large_tensor_threshold: static int ``>= 0``; ``"auto"`` uses one cosine for
        leaves up to this many elements, one per row above.
      low_rank_emphasis: TAM's emphasis on the correlation of 2-D leaves, ``> 0`` (the
        composite passes 1 when the rank penalty is off).
      factored: static; factor :math:`v` and :math:`r` over the last two axes.
      came_enabled: static; ``False`` skips the second-moment scaling (``u = g``).
      warmup_steps: static int ``>= 1``, :math:`w`.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` (no learning rate, ascent direction).
    """
    check_came_options(
        betas,
        eps,
        clip_threshold,
        beta1_decay,
        beta1_floor,
        tam_momentum,
        tam_decay,
        tam_correlation,
        tam_large_tensor_threshold,
        low_rank_emphasis,
    )
    check_count(warmup_steps, "warmup_steps")
    b1, b2, b3 = betas
    eps1, eps2 = eps

    def init_fn(params: optax.Params) -> AutomagicCameState:
        def placeholders():
            return tree_map_members(_placeholder, params)

        def elementwise():
            return tree_map_members(lambda p: filled_like(p, 0.0, _stat_dtype(p.dtype)), params)

        def correlation(p):
            axes = _correlation_axes(p.shape, tam_correlation, tam_large_tensor_threshold)
            return filled_like(p, 0.0, p.dtype, axes=axes)

        if factored:
            # per member of a stacked group (jaxopt_adv.grouping.GroupTree)
            v_row, v_col, v, r_row, r_col = tree_map_grouped(init_second_moments, 5, None, params)
            if not came_enabled:  # no second moment: only the confidence factors
                v_row, v_col, v = placeholders(), placeholders(), placeholders()
            r = placeholders()
        else:
            v_row, v_col, r_row, r_col = (placeholders() for _ in range(4))
            v = elementwise() if came_enabled else placeholders()
            r = elementwise()
        return AutomagicCameState(
            count=jnp.zeros([], jnp.int32),
            mu=optax.tree.zeros_like(params),
            s=tree_map_members(correlation, params),
            v_row=v_row,
            v_col=v_col,
            v=v,
            r_row=r_row,
            r_col=r_col,
            r=r,
            slots=leaf_slots(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params, extra_args
        early, beta1_t = momentum_schedule(state.count, warmup_steps, b1, beta1_decay, beta1_floor)

        def leaf(g, m, s, v_row, v_col, v, r_row, r_col, r):
            x = g.astype(_stat_dtype(g.dtype))
            if not came_enabled:
                u = x
            elif factored:
                u, v_row, v_col, v = came_precondition(x, v_row, v_col, v, b2, eps1)
                u = rms_clip(u, clip_threshold)
            else:  # elementwise second moment for every leaf
                v = (b2 * v + (1 - b2) * (jnp.square(x) + eps1)).astype(v.dtype)
                u = rms_clip(jax.lax.rsqrt(v) * x, clip_threshold)
            m_tam, s_tam = torque_aware_momentum_update(
                u,
                m.astype(u.dtype),
                jnp.broadcast_to(s.astype(u.dtype), u.shape),
                b1=tam_momentum,
                decay_rate=tam_decay,
                eps=eps1,
                correlation=tam_correlation,
                auto_threshold=tam_large_tensor_threshold,
                emphasis=low_rank_emphasis if x.ndim == 2 else 1.0,
                variant="fixed",
            )
            bt = beta1_t.astype(u.dtype)
            m_ema = bt * m.astype(u.dtype) + (1 - bt) * u
            m_new = jnp.where(early, m_tam, m_ema)
            s_new = jnp.where(early, _compact(s_tam, s.shape), s.astype(u.dtype))
            if factored:
                out, r_row, r_col = came_confidence(u, m_new, r_row, r_col, b3, eps2)
            else:
                r = (b3 * r + (1 - b3) * (jnp.square(u - m_new) + eps2)).astype(r.dtype)
                out = m_new * jax.lax.rsqrt(r)
            return (
                out.astype(g.dtype),
                m_new.astype(m.dtype),
                s_new.astype(s.dtype),
                v_row,
                v_col,
                v,
                r_row,
                r_col,
                r,
            )

        out, mu, s, v_row, v_col, v, r_row, r_col, r = tree_map_grouped(
            leaf,
            9,
            state.slots,
            updates,
            state.mu,
            state.s,
            state.v_row,
            state.v_col,
            state.v,
            state.r_row,
            state.r_col,
            state.r,
        )
        count = optax.safe_increment(state.count)
        new_state = AutomagicCameState(count, mu, s, v_row, v_col, v, r_row, r_col, r, state.slots)
        return out, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


# --------------------------------------------------------------------- direction


class AutomagicDirectionState(NamedTuple):
    """State of :func:`automagic_direction`."""

    count: chex.Array  # int32 scalar
    edge_history: optax.Updates  # H of the early-phase edge damping (ndim >= 2), else (0,)
    slots: optax.Updates  # int32 per leaf: its place among like leaves (None on a GroupTree)


def automagic_direction(
    warmup_steps: int = 500,
    *,
    edge_suppression: bool = True,
    edge_threshold: float = 0.6,
    edge_penalty: float = 0.1,
    background_regularization: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """Automagic's direction control, selected by phase.

    Early phase (``t < w // 2``): Grams ``|U| sign(g')`` with ``g'`` the processed
    gradient (``ref_grads``), damped where its edge strength has been high
    (``edge_suppression``: :func:`~jaxopt_adv.automagic.direction.edge_damping_update`
    with history decay 0.9 and factor floor 0.1), then OrthoGrad against the params
    (``rule="automagic"``, eps 1e-30; skipped for one-element leaves, whose update is
    always parallel to the weight). Later: the Cautious mask
    ``1[U g' > 0] / max(mean, 1e-3)``, halved when the gradient's variance is below 1e-6
    (``background_regularization``). The arguments are the :class:`AutomagicConfig`
    fields of the same names (:attr:`AutomagicConfig.direction_options`).

    Args:
      warmup_steps: static int ``>= 1``, :math:`w`.
      edge_suppression: static; damp the early-phase update at edges.
      edge_threshold: edge threshold, in ``(0, 1)``.
      edge_penalty: scale of the edge strength, ``>= 0``.
      background_regularization: static; the Cautious background halving.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` needs ``params`` and the
      extra argument ``ref_grads``.
    """
    check_count(warmup_steps, "warmup_steps")
    check_interval(edge_threshold, "edge_threshold", 0.0, 1.0, low_open=True, high_open=True)
    check_nonnegative(edge_penalty, "edge_penalty")
    background = _BACKGROUND_VARIANCE if background_regularization else None

    def init_fn(params: optax.Params) -> AutomagicDirectionState:
        def history(p):
            if edge_suppression and p.ndim >= 2:
                return filled_like(p, 0.0, _stat_dtype(p.dtype))
            return _placeholder(p)

        history = tree_map_members(history, params)
        return AutomagicDirectionState(jnp.zeros([], jnp.int32), history, leaf_slots(params))

    def update_fn(updates, state, params=None, **extra_args):
        ref_grads = extra_args.get("ref_grads")
        if params is None or ref_grads is None:
            raise ValueError(
                "automagic_direction needs params and the extra argument ref_grads "
                "(use it inside with_reference_grads)"
            )
        early = phase_of(state.count, warmup_steps) == EARLY

        def leaf(u, g, p, h):
            c = grams_update(u, g)
            if edge_suppression and u.ndim >= 2:
                c, h_new = edge_damping_update(
                    c, h, _EDGE_DECAY, edge_threshold, edge_penalty, _EDGE_FLOOR
                )
                h = jnp.where(early, h_new, h)
            if p.size > 1:  # a one-element update is always parallel to its weight
                c = orthogonalize(c, p, _ORTHOGRAD_EPS, rule="automagic")
            late = cautious_update(u, g, _CAUTIOUS_MEAN_FLOOR, background, _BACKGROUND_FACTOR)
            return jnp.where(early, c, late).astype(u.dtype), h

        out, history = tree_map_grouped(
            leaf, 2, state.slots, updates, ref_grads, params, state.edge_history
        )
        count = optax.safe_increment(state.count)
        return out, AutomagicDirectionState(count, history, state.slots)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
