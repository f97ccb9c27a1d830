r"""The Automagic per-element learning-rate mask, with Automagic-CameAMP's spatial bump.

Each parameter element carries its own learning rate. During warmup (``t < w``) it is
bumped up where the sign of a reference signal agrees with the previous step's sign and
down where it flips; after warmup it is frozen and follows the group learning-rate
schedule. :func:`lr_mask_leaf` and :func:`spatial_variance_leaf` are the pure per-leaf
pieces the composite optimizer imports; :func:`automagic_lr_mask` is the optax block.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from jaxopt_adv._common import (
    check,
    check_count,
    check_interval,
    check_nonnegative,
    concrete_scalar,
    filled_like,
    fresh_array,
    scalar_dtype,
)
from jaxopt_adv.grouping import leaf_slots, tree_map_grouped, tree_map_members

__all__ = [
    "AutomagicLrMaskState",
    "automagic_lr_mask",
    "lr_mask_leaf",
    "mask_bump",
    "mask_schedule",
    "sign_source",
    "spatial_variance_leaf",
]

_SOURCES = ("ref", "raw", "update")
_SV_DECAY = 0.9  # the original's hard-coded spatial-variance EMA 0.9 / 0.1
_MIN_RATIO = 0.1  # base/gesen floor on group_lr / lr_max after warmup


class AutomagicLrMaskState(NamedTuple):
    """State of :func:`automagic_lr_mask`."""

    count: chex.Array  # int32 scalar: number of updates taken
    lr_mask: optax.Updates  # per-element learning rate (mask_dtype, float32 by default)
    last_polarity: optax.Updates  # bool: sign source > 0 at the last warmup step
    spatial_variance: optax.Updates | None  # per row (..., 1) for ndim >= 2, () else; spatial only
    lr_max: chex.Array  # scalar: the group learning rate the mask is relative to
    avg_lr: optax.Updates  # per-leaf scalar: mean effective learning rate of the last step
    slots: optax.Updates  # int32 per leaf: its place among like leaves (None on a GroupTree)


def spatial_variance_leaf(ref: jax.Array, sv: jax.Array) -> jax.Array:
    """``0.9 sv + 0.1 var(ref, axis=-1, unbiased)`` per row; unchanged (ones) for ``ndim < 2``.

    A last axis of length 1 contributes a variance of 1 (torch's unbiased variance of one
    element is NaN; Automagic-CameAMP substitutes ones).
    """
    if ref.ndim < 2:
        return sv
    ref = ref.astype(sv.dtype)
    if ref.shape[-1] > 1:
        variance = jnp.var(ref, axis=-1, ddof=1, keepdims=True)
    else:
        variance = jnp.ones_like(sv)
    return _SV_DECAY * sv + (1 - _SV_DECAY) * variance


def mask_bump(
    lr_bump: Any, detail_preservation: Any, spatial_variance: jax.Array | None, dtype: Any
) -> jax.Array:
    """The warmup bump in ``dtype``: ``lr_bump``, or per row (the shape of
    ``spatial_variance``) ``lr_bump * clip(detail_preservation * sv, 0.5, 1.5)``."""
    if spatial_variance is None:
        return jnp.asarray(lr_bump, dtype)
    return (lr_bump * jnp.clip(detail_preservation * spatial_variance, 0.5, 1.5)).astype(dtype)


def mask_schedule(
    count: chex.Array,
    lr_max: chex.Array,
    group_lr: optax.ScalarOrSchedule | None,
    warmup_steps: Any,
    persistent_schedule: bool,
) -> tuple[chex.Array, chex.Array, chex.Array, chex.Array]:
    """The step's scalars ``(warm, increase, ratio, new_lr_max)`` after ``count`` updates
    (see :func:`automagic_lr_mask`)."""
    sdt = scalar_dtype()
    warm = count + 1 < warmup_steps
    zero = jnp.zeros([], sdt)
    if group_lr is None:
        return warm, zero, jnp.ones([], sdt), lr_max
    eta = jnp.asarray(group_lr(count) if callable(group_lr) else group_lr, sdt)
    rises = eta > lr_max
    if persistent_schedule:
        post_lr_max = jnp.maximum(lr_max, eta)
        ratio = jnp.maximum(eta / post_lr_max, _MIN_RATIO)
    else:
        post_lr_max = eta
        ratio = jnp.where(eta != lr_max, eta / lr_max, 1.0)
    increase = jnp.where(rises, eta - lr_max, zero)
    new_lr_max = jnp.where(warm, jnp.where(rises, eta, lr_max), post_lr_max)
    return warm, increase, ratio, new_lr_max


def _extra(extra_args: dict, name: str, polarity_source: str, spatial: bool) -> Any:
    value = extra_args.get(name)
    if value is None:
        raise ValueError(
            f"automagic_lr_mask(polarity_source={polarity_source!r}, spatial={spatial}) "
            f"needs the extra argument {name}=...; wrap the chain in "
            "jaxopt_adv.automagic.composition.with_reference_grads or pass it to update()."
        )
    return value


def sign_source(
    polarity_source: str, spatial: bool, updates: optax.Updates, extra_args: dict
) -> optax.Updates:
    """The tree whose sign the mask follows (see :func:`automagic_lr_mask`): the updates,
    or the extra argument ``ref_grads`` / ``raw_grads`` (a clear error when missing)."""
    if polarity_source == "update":
        return updates
    name = "ref_grads" if polarity_source == "ref" else "raw_grads"
    return _extra(extra_args, name, polarity_source, spatial)


def lr_mask_leaf(
    source: jax.Array,
    mask: jax.Array,
    last_polarity: jax.Array,
    spatial_variance: jax.Array | None,
    *,
    warm: Any,
    increase: Any,
    ratio: Any,
    min_lr: Any,
    max_lr: Any,
    lr_bump: Any,
    detail_preservation: Any,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One leaf's mask step: ``(effective_lr, new_mask, new_polarity)``.

    Args:
      source: the sign source (``source > 0`` is the polarity).
      mask: the stored per-element learning rate.
      last_polarity: the previous polarity (bool).
      spatial_variance: per-row spatial variance, or ``None`` without the spatial bump.
      warm: scalar bool, ``t < warmup_steps``.
      increase: scalar, the group-lr increase added to the mask in warmup (0 for none).
      ratio: scalar, the factor on the mask after warmup.
      min_lr, max_lr: warmup clamp.
      lr_bump: the bump size.
      detail_preservation: the spatial bump factor is ``clip(detail * sv, 0.5, 1.5)``.
    """
    dtype = mask.dtype
    polarity = source > 0
    bump = mask_bump(lr_bump, detail_preservation, spatial_variance, dtype)
    bumped = mask + jnp.where(last_polarity == polarity, bump, -bump)
    bumped = bumped + jnp.asarray(increase).astype(dtype)
    bumped = jnp.clip(bumped, jnp.asarray(min_lr, dtype), jnp.asarray(max_lr, dtype))
    scaled = mask * jnp.asarray(ratio).astype(dtype)
    return (
        jnp.where(warm, bumped, scaled),
        jnp.where(warm, bumped, mask),
        jnp.where(warm, polarity, last_polarity),
    )


def automagic_lr_mask(
    lr: Any = 1e-6,
    min_lr: Any = 1e-7,
    max_lr: Any = 1e-3,
    lr_bump: Any = 3e-6,
    group_lr: optax.ScalarOrSchedule | None = None,
    *,
    warmup_steps: int = 500,
    spatial: bool = False,
    detail_preservation: Any = 0.8,
    polarity_source: str = "ref",
    persistent_schedule: bool = True,
    mask_dtype: Any = "float32",
) -> optax.GradientTransformationExtraArgs:
    r"""Automagic's per-element learning-rate mask: returns ``updates * lr_eff``.

    The mask starts at ``lr``. With :math:`t` the 1-based step, :math:`s` the sign source
    and :math:`\eta_g` the group learning rate ``group_lr(count)``:

    **Warmup,** :math:`t < w`:

    .. math::
      b = \text{lr\_bump}\cdot\operatorname{clip}(\text{detail}\cdot SV, 0.5, 1.5)_{\text{if spatial}},
      \quad M \leftarrow \operatorname{clip}\bigl(M \pm b + [\eta_g - \eta_{max}]_+,
      \text{min\_lr}, \text{max\_lr}\bigr)

    with :math:`+b` where ``(s > 0) == last_polarity`` and :math:`-b` elsewhere; an
    increase of the group lr is added to the whole mask and raises
    :math:`\eta_{max}` (decreases are ignored). ``lr_eff = M``.

    **After warmup** the mask is frozen and rescaled by the schedule:

    * ``persistent_schedule=True`` (the fixed semantics, base/gesen Automagic):
      :math:`\eta_{max} \leftarrow \max(\eta_{max}, \eta_g)`,
      ``lr_eff = M * max(eta_g / eta_max, 0.1)`` at every step.
    * ``persistent_schedule=False`` (the refactored file, parity only): if
      :math:`\eta_g \ne \eta_{max}`, ``lr_eff = M * eta_g / eta_max`` and
      :math:`\eta_{max} \leftarrow \eta_g`, so a schedule change scales exactly one step.

    **Spatial variance** (``spatial=True``, every phase, after the mask step): per row of
    ``ref_grads`` over the last axis, :math:`SV \leftarrow 0.9\,SV + 0.1\,\mathrm{var}`
    (unbiased); stored as ``(..., 1)``, ones for leaves with ``ndim < 2``. The last axis
    is meant in torch layout (a Linear weight's ``in``, a conv kernel's ``kw``); a Flax
    ``Dense`` kernel is (in, out), so transpose it first for the source's behaviour.

    Args:
      lr: initial mask value and initial :math:`\eta_{max}`, ``> 0``.
      min_lr: lower clamp of the mask in warmup, ``>= 0``.
      max_lr: upper clamp, ``> min_lr``.
      lr_bump: bump size, ``>= 0``.
      group_lr: schedule ``count -> lr`` (or a constant) standing in for torch's param
        group lr (kohya's scheduler output); ``None``: the group lr stays ``lr``.
      warmup_steps: ``w``, an int ``>= 1`` (static; an int array when injected by
        ``optax.inject_hyperparams``); the mask adapts on steps ``t < w``.
      spatial: static; scale the bump by the spatial variance of ``ref_grads``.
      detail_preservation: the spatial factor's scale, ``>= 0`` (Automagic 0.8).
      polarity_source: static; the sign source: ``"ref"`` the processed gradient
        ``ref_grads`` (Automagic-CameAMP), ``"raw"`` the raw gradient ``raw_grads``
        (gesen2egee's original), ``"update"`` the incoming updates (Ostris' Automagic).
      persistent_schedule: static; see above.
      mask_dtype: dtype of the mask state (float32 as in torch; bfloat16 halves it).
        Give it as a string or dtype instance under ``optax.inject_hyperparams``
        (which would call ``jnp.float32`` as a schedule).

    Returns:
      An ``optax.GradientTransformationExtraArgs``. It reads ``ref_grads`` (for
      ``polarity_source="ref"`` or ``spatial``) and ``raw_grads`` (for ``"raw"``) from the
      extra arguments, as :func:`~jaxopt_adv.automagic.composition.with_reference_grads`
      provides them. ``state.avg_lr`` holds each leaf's mean effective learning rate
      (torch ``avg_lr``) for logging.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.automagic.lr_mask import automagic_lr_mask
      >>> tx = automagic_lr_mask(lr=0.1, max_lr=1.0, lr_bump=0.01, polarity_source="update")
      >>> state = tx.init(jnp.zeros(2))
      >>> u, state = tx.update(jnp.array([1.0, -1.0]), state)
      >>> u.tolist()  # step 1: last polarity is False, so only g <= 0 "agrees"
      [0.09, -0.11]

    References:
      Ostris, Automagic optimizer (ai-toolkit ``toolkit/optimizers/automagic.py``);
      gesen2egee / hinablue Automagic-CameAMP (sd-scripts). Parity checked against the
      minimal torch restatement ``tests/reference/torch_lr_mask.py`` of Automagic-CameAMP's
      mask step (both schedule semantics).

    Warning:
      The first warmup step reproduces the source's quirk: ``last_polarity`` starts
      ``False``, so every element whose source is ``<= 0`` counts as agreeing and gets
      ``+lr_bump`` (Ostris' current Automagic makes the first step neutral). A NaN in the
      sign source reads as non-positive; a NaN in ``ref_grads`` with ``spatial`` makes
      that row's spatial variance, hence its mask, NaN for good.
    """
    check(
        polarity_source in _SOURCES,
        f"Invalid polarity_source: {polarity_source!r} (polarity_source must be one of {_SOURCES})",
    )
    check_interval(lr, "lr", 0.0, float("inf"), low_open=True)
    check_nonnegative(min_lr, "min_lr")
    check_nonnegative(max_lr, "max_lr")
    if concrete_scalar(min_lr) is not None and concrete_scalar(max_lr) is not None:
        check(min_lr < max_lr, f"Invalid min_lr/max_lr: {min_lr}, {max_lr} (need min_lr < max_lr)")
    check_nonnegative(lr_bump, "lr_bump")
    check_nonnegative(detail_preservation, "detail_preservation")
    check_count(warmup_steps, "warmup_steps")
    if group_lr is not None and not callable(group_lr):
        check_interval(group_lr, "group_lr", 0.0, float("inf"), low_open=True)
    mask_dtype = jnp.dtype(mask_dtype)

    def init_fn(params: optax.Params) -> AutomagicLrMaskState:
        sdt = scalar_dtype()

        def sv_init(p):
            per_row = (*range(p.ndim - 1), None) if p.ndim >= 2 else ()
            return filled_like(p, 1.0, jnp.promote_types(jnp.float32, p.dtype), axes=per_row)

        return AutomagicLrMaskState(
            count=jnp.zeros([], jnp.int32),
            lr_mask=tree_map_members(lambda p: filled_like(p, lr, mask_dtype), params),
            last_polarity=tree_map_members(lambda p: filled_like(p, False, bool), params),
            spatial_variance=tree_map_members(sv_init, params) if spatial else None,
            lr_max=fresh_array(lr, sdt),
            avg_lr=tree_map_members(lambda p: filled_like(p, lr, sdt, ()), params),
            slots=leaf_slots(params),
        )

    def update_fn(updates, state, params=None, **extra_args):
        del params
        sdt = scalar_dtype()
        source = sign_source(polarity_source, spatial, updates, extra_args)
        ref = _extra(extra_args, "ref_grads", polarity_source, spatial) if spatial else None

        warm, increase, ratio, new_lr_max = mask_schedule(
            state.count, state.lr_max, group_lr, warmup_steps, persistent_schedule
        )

        def leaf(u, s, mask, polarity, sv, avg, r):
            lr_eff, mask, polarity = lr_mask_leaf(
                s,
                mask,
                polarity,
                sv if spatial else None,
                warm=warm,
                increase=increase,
                ratio=ratio,
                min_lr=min_lr,
                max_lr=max_lr,
                lr_bump=lr_bump,
                detail_preservation=detail_preservation,
            )
            out = (u * lr_eff).astype(u.dtype)
            sv = spatial_variance_leaf(r, sv) if spatial else None
            if lr_eff.size == 0:  # no rates to average (a mean would be 0 / 0): keep it
                return out, mask, polarity, avg, sv
            return out, mask, polarity, jnp.mean(lr_eff.astype(sdt)), sv

        # without the spatial bump, placeholders (unread) stand in for the variance and ref
        svs = state.spatial_variance if spatial else state.lr_mask
        refs = ref if spatial else updates
        out, mask, polarity, avg_lr, new_sv = tree_map_grouped(
            leaf,
            5,
            state.slots,
            updates,
            source,
            state.lr_mask,
            state.last_polarity,
            svs,
            state.avg_lr,
            refs,
        )
        new_state = AutomagicLrMaskState(
            optax.safe_increment(state.count),
            mask,
            polarity,
            new_sv if spatial else None,
            new_lr_max,
            avg_lr,
            state.slots,
        )
        return out, new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
