r"""Selective projection decay (SPD): decay toward an anchor only when the step moves away.

For each tensor with parameters :math:`p`, candidate :math:`\tilde p = p + d` (``d`` the
update in optax sign), raw gradient :math:`g` and anchor :math:`a`:

.. math::
  c = -\langle g, p - a\rangle, \qquad
  r = \operatorname{clip}\Bigl(\frac{\|\tilde p - a\| - \|p - a\|}{\|\tilde p - a\| + \epsilon}, 0, 1\Bigr),
  \qquad
  p_{new} = \begin{cases} \tilde p - \lambda\, r\, (\tilde p - a) & c < 0 \\ \tilde p & \text{else} \end{cases}

The anchor is zeros (LoRA), the initial weights (full fine-tune) or, for parity with the
refactored Automagic file only, the previous iterate. :func:`spd_leaf` and
:func:`rank_aware_factor` are the pure per-leaf pieces the composite optimizer imports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from jaxopt_adv._common import check, check_count, check_nonnegative
from jaxopt_adv.grouping import leaf_slots, tree_map_grouped

__all__ = [
    "SelectiveProjectionDecayState",
    "rank_aware_factor",
    "selective_projection_decay",
    "spd_leaf",
]

_ANCHORS = ("zeros", "init", "current")


class SelectiveProjectionDecayState(NamedTuple):
    """State of :func:`selective_projection_decay`."""

    count: chex.Array  # int32 scalar: number of updates taken
    anchor: optax.Params | None  # "init": initial params; "current": last iterate; None for "zeros"
    slots: optax.Updates  # int32 per leaf: its place among like leaves (None on a GroupTree)


def rank_aware_factor(shape: Sequence[int]) -> float:
    """``1 + mean_{k < min(m, n)} exp(-0.1 k)`` for a 2-D shape, else 1 (a trace-time constant).

    The refactored Automagic file takes an SVD of the step only for the *number* of
    singular values, ``min(m, n)``; the factor therefore depends on the shape alone.

    Example:
      >>> from jaxopt_adv.automagic.spd import rank_aware_factor
      >>> round(rank_aware_factor((3, 5)), 6), rank_aware_factor((7,))
      (1.907856, 1.0)
    """
    if len(shape) != 2 or min(shape) == 0:
        return 1.0
    n = min(shape)
    return 1.0 + sum(math.exp(-0.1 * k) for k in range(n)) / n


def spd_leaf(
    p: jax.Array,
    d: jax.Array,
    g_raw: jax.Array,
    anchor: jax.Array | None,
    weight_decay: Any,
    eps: Any = 1e-8,
    active: Any = True,
) -> jax.Array:
    """The SPD update of one leaf: ``p_new - p`` in optax sign, in ``d``'s dtype.

    Args:
      p: parameters before the step.
      d: the step in optax sign (``p + d`` is the undecayed candidate).
      g_raw: the raw gradient (the selection condition).
      anchor: the anchor; ``None`` for zeros.
      weight_decay: :math:`\\lambda` for this leaf (rank-aware factor included).
      eps: added to ``||p~ - a||`` in the ratio's denominator.
      active: scalar bool; ``False`` returns ``d``.
    """
    compute = jnp.promote_types(jnp.result_type(p, d), jnp.float32)
    p, g = p.astype(compute), g_raw.astype(compute)
    step = d.astype(compute)
    a = jnp.zeros_like(p) if anchor is None else anchor.astype(compute)
    candidate = p + step
    condition = -jnp.sum(g * (p - a))
    new_norm = jnp.sqrt(jnp.sum(jnp.square(candidate - a)))
    old_norm = jnp.sqrt(jnp.sum(jnp.square(p - a)))
    denom = new_norm + eps
    safe = denom > 0  # candidate == anchor with eps = 0: the step moves toward it, ratio 0
    ratio = jnp.where(safe, (new_norm - old_norm) / jnp.where(safe, denom, 1.0), 0.0)
    ratio = jnp.clip(ratio, 0.0, 1.0)
    decayed = step - weight_decay * ratio * (candidate - a)
    fire = jnp.logical_and(active, condition < 0)
    return jnp.where(fire, decayed.astype(d.dtype), d)


def selective_projection_decay(
    weight_decay: Any = 5e-4,
    anchor: str = "zeros",
    *,
    rank_aware: bool = False,
    active_steps: int | None = None,
    eps: Any = 1e-8,
) -> optax.GradientTransformationExtraArgs:
    r"""Selective projection decay toward a fixed anchor, as the *last* block of a chain.

    Receives the final update ``d`` (optax sign, learning rate applied: ``p + d`` is the
    next iterate), the ``params`` and the raw gradient as the extra argument
    ``raw_grads`` (:func:`~jaxopt_adv.automagic.composition.with_reference_grads` provides it).
    Per leaf, with :math:`\tilde p = p + d`:

    .. math::
      c = -\sum g_{raw}\,(p - a), \qquad
      r = \operatorname{clip}\Bigl(\frac{\|\tilde p-a\| - \|p-a\|}{\|\tilde p-a\| + \epsilon}, 0, 1\Bigr),
      \qquad p_{new} = \tilde p - \lambda\, r\, (\tilde p - a)\ \text{ if } c < 0 \text{ else } \tilde p

    and it returns ``p_new - p``. Norms are Frobenius norms of the whole tensor.
    :math:`\lambda` is *not* multiplied by the learning rate (the paper's rule).

    Anchors :math:`a`:

    * ``"zeros"``: the paper's PEFT / LoRA setting (no state).
    * ``"init"``: the initial weights, stored in the state by ``init`` (full fine-tune).
    * ``"current"``: the previous iterate, saved after every step as the refactored
      Automagic file does. Then ``p - a == 0`` from step 2 on and SPD never fires again:
      a no-op kept for parity only. The saved anchor is ``p + (p_new - p)``, exactly what
      ``optax.apply_updates`` produces, so the no-op is exact.

    Args:
      weight_decay: :math:`\lambda`, ``>= 0`` (Automagic default 5e-4).
      anchor: static; ``"zeros"``, ``"init"`` or ``"current"``.
      rank_aware: static; multiply :math:`\lambda` of 2-D leaves by
        :func:`rank_aware_factor` (``1 + mean_k exp(-0.1 k)``, ``k < min(m, n)``).
      active_steps: an int ``>= 1`` or ``None`` (static; an int array when injected);
        when given, SPD acts only on steps ``t < active_steps`` (``t`` counted from 1;
        Automagic uses ``warmup_steps``), plain ``d`` after.
      eps: added to :math:`\|\tilde p - a\|` in the ratio, ``>= 0``; Automagic 1e-8,
        the reference ``adamSPD`` 0.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; it needs ``params`` and
      ``raw_grads``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from jaxopt_adv.automagic.spd import selective_projection_decay
      >>> tx = selective_projection_decay(0.5)
      >>> p = jnp.array([3.0, 4.0])
      >>> u, _ = tx.update(p / 5, tx.init(p), p, raw_grads=p)  # moves away from 0
      >>> u.tolist()
      [0.3, 0.4]

    References:
      Tian, Huang, Kira, "Rethinking Weight Decay for Robust Fine-Tuning of Foundation
      Models", NeurIPS 2024, arXiv 2411.01713 (GT-RIPL ``adamSPD.py``). Parity checked,
      as ``chain(scale_by_adam, scale(-lr), selective_projection_decay)``, against the
      minimal torch AdamSPD ``tests/reference/torch_spd.py`` (restated from the paper's
      update and ``adamSPD.py``, not copied).

    Warning:
      A NaN raw gradient makes the condition false (no decay) for its leaf; NaN in the
      step propagates as usual. With ``eps=0`` and :math:`\tilde p = a` the ratio is 0.
    """
    check(anchor in _ANCHORS, f"Invalid anchor: {anchor!r} (anchor must be one of {_ANCHORS})")
    check_nonnegative(weight_decay, "weight_decay")
    check_nonnegative(eps, "eps")
    if active_steps is not None:
        check_count(active_steps, "active_steps")

    def init_fn(params: optax.Params) -> SelectiveProjectionDecayState:
        if anchor == "zeros":
            stored = None
        elif anchor == "init":
            stored = jax.tree.map(jnp.array, params)
        else:
            stored = optax.tree.zeros_like(params)
        return SelectiveProjectionDecayState(jnp.zeros([], jnp.int32), stored, leaf_slots(params))

    def update_fn(updates, state, params=None, **extra_args):
        if params is None:
            raise ValueError(
                "selective_projection_decay needs params: call update(updates, state, params)"
            )
        raw_grads = extra_args.get("raw_grads")
        if raw_grads is None:
            raise ValueError(
                "selective_projection_decay needs the raw gradient as the extra argument "
                "raw_grads=...; wrap the chain in jaxopt_adv.automagic.composition."
                "with_reference_grads or pass it to update()."
            )
        active = True if active_steps is None else state.count + 1 < active_steps

        def leaf(d, p, g, a):
            lam = weight_decay * rank_aware_factor(p.shape) if rank_aware else weight_decay
            out = spd_leaf(p, d, g, a, lam, eps, active)
            # "current": the iterate optax.apply_updates will produce.
            saved = (p + out).astype(p.dtype) if anchor == "current" else a
            return out, saved

        slots = state.slots
        if anchor == "zeros":
            (out,) = tree_map_grouped(
                lambda d, p, g: leaf(d, p, g, None)[:1], 1, slots, updates, params, raw_grads
            )
            new_anchor = None
        else:
            out, new_anchor = tree_map_grouped(
                leaf, 2, slots, updates, params, raw_grads, state.anchor
            )
        count = optax.safe_increment(state.count)
        return out, SelectiveProjectionDecayState(count, new_anchor, slots)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)
