"""Automagic-CameAMP's scaling (``automagic.cc``) and direction control
(``automagic_direction.cc``) with each matrix's step in one C++ kernel call on CPU.

:func:`scale_by_automagic_came` takes the arguments of
:func:`jaxopt_adv.automagic.body.scale_by_automagic_came` and keeps its state
(:class:`~jaxopt_adv.automagic.body.AutomagicCameState`, same shapes and dtypes), so a
checkpoint saved with either resumes with the other. With ``factored=True``,
``came_enabled=True`` and a ``tam_correlation`` other than ``"dim0"`` (the defaults), on
a single-device CPU process, every non-empty float32/float64 leaf with ``ndim >= 2``
whose state shares its dtype is stepped by an XLA FFI call in four passes over the leaf:
CAME's factored second moment, the RMS clip, only the current phase's momentum
(torque-aware early, the decaying EMA later; XLA computes both and selects) with TAM's
per-leaf or per-row cosine, and CAME's confidence. The other leaves (0-d/1-D, bfloat16,
a momentum in another dtype), every leaf of the other configurations and every leaf
elsewhere take the transform's own JAX code. Sums are accumulated in float64, so the
results agree with the JAX path to rounding, not bit for bit. The kernel is used once
its self-check (:mod:`.selfcheck`) has passed on this host.

:func:`automagic_direction` does the same for
:func:`jaxopt_adv.automagic.body.automagic_direction` (same arguments and state): every
float32/float64 leaf with ``ndim >= 2`` and two elements or more whose reference gradient,
params and edge history share its dtype takes only its phase's passes (XLA computes both
phases' directions and selects one): Grams, the edge damping's Laplacian and history and
OrthoGrad's sums in one pass (its orthogonal norm formed from them) and the projection
in a second early (a pass for the orthogonal norm in between only for a leaf whose
update lies mostly along its weights); Cautious's count and the gradient's
variance in one pass and the masked update in a second later. Its own self-check gates
it. Under ``automagic_came_amp(kernel=True)`` the scaling and the direction of a matrix
run as one kernel call instead (:mod:`jaxopt_adv.fast.automagic_body`), with these two
blocks as its fallback.

:func:`selective_projection_decay` (``automagic_spd.cc``) is
:func:`jaxopt_adv.automagic.spd.selective_projection_decay` with the ``"zeros"`` or
``"init"`` anchor, every non-empty float32/float64 leaf whose params, raw gradient and
anchor share its dtype in one pass for the three sums and, only where the decay fires, a
second that writes the update in place (XLA sums in three loops and writes every step).
Its own self-check gates it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_adv.automagic.body import (
    _BACKGROUND_FACTOR,
    _BACKGROUND_VARIANCE,
    _CAUTIOUS_MEAN_FLOOR,
    _EDGE_DECAY,
    _EDGE_FLOOR,
    _ORTHOGRAD_EPS,
    momentum_schedule,
)
from jaxopt_adv.automagic.body import automagic_direction as jax_automagic_direction
from jaxopt_adv.automagic.body import scale_by_automagic_came as jax_scale_by_automagic_came
from jaxopt_adv.automagic.composition import EARLY, phase_of
from jaxopt_adv.automagic.spd import rank_aware_factor
from jaxopt_adv.automagic.spd import selective_projection_decay as jax_selective_projection_decay
from jaxopt_adv.fast import ffi, selfcheck
from jaxopt_adv.grouping import GroupTree, on_loose_leaves

__all__ = ["automagic_direction", "scale_by_automagic_came", "selective_projection_decay"]

# the state fields the kernel updates, in its operand order after the gradient
_FIELDS = ("mu", "v_row", "v_col", "r_row", "r_col", "s")

# The self-check's probes: the defaults (one cosine per leaf below 1000 elements, one per
# row above) and two non-default settings (the row rule everywhere with other betas; the
# leaf rule with a tight clip) on float32 leaves with warmup_steps=8 (three early-phase
# steps, then the EMA): runs of three and of seven steps, whose last step has an Inf, a
# -Inf and a NaN gradient element (in each phase); the kernel must agree with the JAX
# transform to rounding and put the same non-finite values in the same places.
_PROBE_SHAPES = {"w": (24, 60), "small": (12, 16), "c": (3, 4, 5), "b": (7,)}
_PROBE_KWARGS: tuple[dict[str, Any], ...] = (
    {"warmup_steps": 8},
    {
        "warmup_steps": 8,
        "tam_correlation": "row_cosine",
        "betas": (0.5, 0.9, 0.99),
        "tam_momentum": 0.7,
    },
    {"warmup_steps": 8, "tam_correlation": "cosine", "clip_threshold": 0.3, "eps": (1e-3, 1e-3)},
)
_PROBE_STEPS = (3, 7)
_PROBE_RTOL = 1e-4


def _probe_mismatches() -> dict[str, str | None]:
    """The scaling's self-check (:mod:`.selfcheck`): the first probe configuration whose
    kernel steps differ from the JAX transform's, or ``None``."""
    nonfinite = {("w", (2, 3)): np.inf, ("small", (5, 1)): -np.inf, ("c", (1, 2, 3)): np.nan}
    streams = [selfcheck.probe_stream(_PROBE_SHAPES, n, nonfinite) for n in _PROBE_STEPS]
    for kwargs in _PROBE_KWARGS:
        ours = scale_by_automagic_came(**kwargs)
        theirs = scale_by_automagic_came(**kwargs, kernel=False)
        if any(selfcheck.steps_differ(ours, theirs, s, _PROBE_RTOL) for s in streams):
            return {selfcheck.AUTOMAGIC: f"scale_by_automagic_came {kwargs}"}
    return {selfcheck.AUTOMAGIC: None}


def _unavailable_reason() -> str | None:
    """Why the kernel does not step leaves in this process (see :mod:`.selfcheck`)."""
    return selfcheck.unavailable(_probe_mismatches, selfcheck.AUTOMAGIC)


def _kernel_leaf(g: Any, state_arrays: list[Any]) -> bool:
    """Whether the kernel takes this leaf: float32/float64, ndim >= 2, not empty, and
    the momentum, statistics and ``s`` in the leaf's dtype."""
    dtype = np.dtype(g.dtype)
    if dtype not in ffi.FLOATS or jnp.ndim(g) < 2 or jnp.size(g) == 0:
        return False
    return all(np.dtype(a.dtype) == dtype for a in state_arrays)


def scaling_scalars(
    early: Any,
    beta1_t: Any,
    dtype: np.dtype,
    *,
    betas: tuple[float, float, float],
    eps: tuple[float, float],
    clip_threshold: float,
    tam_momentum: float,
    tam_decay: float,
) -> list[jax.Array]:
    """The scaling kernel's twelve scalars in ``dtype`` (``automagic.h``'s order)."""
    _, b2, b3 = betas
    eps1, eps2 = eps
    bt = beta1_t.astype(dtype)
    values = (early, bt, 1 - bt, b2, 1 - b2, b3, 1 - b3, eps1, eps2, clip_threshold)
    values += (tam_momentum, 1 - tam_decay)
    return [jnp.asarray(value).astype(dtype) for value in values]


def leaf_options(leaves: list[tuple], low_rank_emphasis: float, dtype: np.dtype) -> jax.Array:
    """Per leaf of ``[(g, mu, v_row, v_col, r_row, r_col, s), ...]``: TAM's emphasis (2-D
    leaves only) and whether ``s`` has one value per row."""
    return jnp.stack(
        [
            jnp.asarray(value, dtype)
            for g, *_, s in leaves
            for value in (
                low_rank_emphasis if jnp.ndim(g) == 2 else 1.0,
                jnp.ndim(s) == jnp.ndim(g),
            )
        ]
    )


def direction_scalars(edge_threshold: float, edge_penalty: float) -> tuple[float, ...]:
    """The direction kernel's nine scalars after its phase flag
    (``automagic_direction.h``'s order)."""
    values = (_EDGE_DECAY, 1.0 - _EDGE_DECAY, edge_threshold, edge_penalty, _EDGE_FLOOR)
    return (*values, _ORTHOGRAD_EPS, _CAUTIOUS_MEAN_FLOOR, _BACKGROUND_VARIANCE, _BACKGROUND_FACTOR)


def _call(scalars: list[jax.Array], options: jax.Array, leaves: list[tuple]) -> list[tuple]:
    """One custom call over ``leaves = [(g, mu, v_row, v_col, r_row, r_col, s), ...]``;
    returns ``[(out, mu, v_row, v_col, r_row, r_col, s), ...]`` (the state results alias
    their operands)."""
    call = ffi.Call([*scalars, options])
    for g, *state_arrays in leaves:
        call.read(g)
        call.output(jnp.shape(g), g.dtype)
        call.update(*state_arrays)
    return ffi.chunks(call.run("jaxopt_adv_automagic"), len(_FIELDS) + 1)


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
    kernel: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """:func:`jaxopt_adv.automagic.body.scale_by_automagic_came` with the matrices stepped
    by the CPU kernel.

    Same arguments, state and results (to rounding), plus ``kernel`` (static; ``False``
    always takes the JAX path). Use it under ``jax.jit`` with the state donated, so that
    the kernel updates the momentum and the statistics in place.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv import fast
      >>> from jaxopt_adv.automagic.body import scale_by_automagic_came
      >>> g = jnp.array([[1.0, -2.0], [3.0, 0.5]])
      >>> tx, reference = fast.scale_by_automagic_came(), scale_by_automagic_came()
      >>> u, state = tx.update(g, tx.init(g))
      >>> bool(jnp.allclose(u, reference.update(g, reference.init(g))[0], rtol=1e-6))
      True

    References:
      Luo et al., "CAME: Confidence-guided Adaptive Memory Efficient Optimization",
      ACL 2023; Malviya et al., "Torque-Aware Momentum", arXiv 2412.18790.
    """
    inner = jax_scale_by_automagic_came(
        betas=betas,
        eps=eps,
        clip_threshold=clip_threshold,
        beta1_decay=beta1_decay,
        beta1_floor=beta1_floor,
        tam_momentum=tam_momentum,
        tam_decay=tam_decay,
        tam_correlation=tam_correlation,
        tam_large_tensor_threshold=tam_large_tensor_threshold,
        low_rank_emphasis=low_rank_emphasis,
        factored=factored,
        came_enabled=came_enabled,
        warmup_steps=warmup_steps,
    )
    takes_any = factored and came_enabled and tam_correlation != "dim0"
    arithmetic = {"betas": betas, "eps": eps, "clip_threshold": clip_threshold}
    arithmetic |= {"tam_momentum": tam_momentum, "tam_decay": tam_decay}

    def replace(updates, state, out, new_state, extra_args):
        del extra_args
        b1 = betas[0]
        early, beta1_t = momentum_schedule(state.count, warmup_steps, b1, beta1_decay, beta1_floor)

        def call(dtype: np.dtype, leaves: list[tuple]) -> list[tuple]:
            scalars = scaling_scalars(early, beta1_t, dtype, **arithmetic)
            return _call(scalars, leaf_options(leaves, low_rank_emphasis, dtype), leaves)

        def step(updates, state, out, new_state):
            return ffi.step_leaves(updates, state, out, new_state, _FIELDS, _kernel_leaf, call)

        if isinstance(updates, GroupTree):
            # the stacks keep the JAX path's results (vmapped over their members: faster
            # than one kernel call a member, see benchmarks/RESULTS.md)
            return on_loose_leaves(step, _FIELDS, updates, state, out, new_state)
        return step(updates, state, out, new_state)

    return ffi.with_kernel(inner, kernel and takes_any, _unavailable_reason, replace)


# ------------------------------------------------------------------------ direction

DIRECTION_TARGET = "jaxopt_adv_automagic_direction"

# The direction's self-check: the defaults and the rules switched off, on float32 leaves
# (a matrix, a small one, a 3-D leaf with a single row per matrix and one column) with
# warmup_steps=6 (two early steps, then Cautious), five steps whose last has an Inf, a
# -Inf and a NaN update element; the kernel must agree with the JAX transform to rounding
# and put the same non-finite values in the same places.
_DIRECTION_SHAPES = {"w": (24, 60), "small": (3, 5), "c": (3, 1, 7), "d": (4, 6, 1), "b": (7,)}
_DIRECTION_KWARGS: tuple[dict[str, Any], ...] = (
    {"warmup_steps": 6},
    {"warmup_steps": 6, "edge_suppression": False, "background_regularization": False},
    {"warmup_steps": 6, "edge_threshold": 0.05, "edge_penalty": 2.0},
)
_DIRECTION_STEPS = 5


def _direction_extra_args(updates: dict[str, np.ndarray]) -> dict[str, Any]:
    """The probes' ``ref_grads`` (signs that differ from the update's, a background-sized
    variance on ``small``) and ``params`` (finite)."""
    refs = {k: np.flip(u, axis=-1) for k, u in updates.items()}
    refs["small"] = 1e-4 * refs["small"]
    params = {k: 1.0 + 0.5 * np.nan_to_num(u, posinf=1.0, neginf=-1.0) for k, u in updates.items()}
    return {"ref_grads": refs, "params": params}


def _direction_probe_mismatches() -> dict[str, str | None]:
    """The direction's self-check (:mod:`.selfcheck`): the first probe configuration
    whose kernel steps differ from the JAX transform's, or ``None``."""
    nonfinite = {("w", (2, 3)): np.inf, ("small", (1, 1)): -np.inf, ("c", (1, 0, 3)): np.nan}
    stream = selfcheck.probe_stream(_DIRECTION_SHAPES, _DIRECTION_STEPS, nonfinite)
    for kwargs in _DIRECTION_KWARGS:
        ours = automagic_direction(**kwargs)
        theirs = automagic_direction(**kwargs, kernel=False)
        if selfcheck.steps_differ(ours, theirs, stream, _PROBE_RTOL, _direction_extra_args):
            return {selfcheck.AUTOMAGIC_DIRECTION: f"automagic_direction {kwargs}"}
    return {selfcheck.AUTOMAGIC_DIRECTION: None}


def _direction_unavailable_reason() -> str | None:
    """Why the direction kernel does not step leaves in this process."""
    return selfcheck.unavailable(_direction_probe_mismatches, selfcheck.AUTOMAGIC_DIRECTION)


def _direction_leaf(u: Any, g: Any, p: Any, h: Any) -> bool:
    """Whether the direction kernel takes this leaf: float32/float64, ``ndim >= 2``, two
    elements or more, the reference gradient, the params and the history in its dtype."""
    dtype = np.dtype(u.dtype)
    if dtype not in ffi.FLOATS or jnp.ndim(u) < 2 or jnp.size(u) < 2:
        return False
    same = [np.dtype(x.dtype) == dtype and jnp.shape(x) == jnp.shape(u) for x in (g, p)]
    return all(same) and np.dtype(h.dtype) == dtype


def _direction_call(
    scalars: list[jax.Array], leaves: list[tuple], edge: bool, background: bool
) -> list[tuple]:
    """One custom call over ``leaves = [(u, g, w, h), ...]``; returns ``[(h', out),
    ...]`` (the history aliases its operand)."""
    call = ffi.Call(scalars)
    for u, g, w, h in leaves:
        call.read(u, g, w)
        call.update(h)
        call.output(jnp.shape(u), u.dtype)
    results = call.run(DIRECTION_TARGET, edge=edge, background=background)
    return ffi.chunks(results, 2)


def automagic_direction(
    warmup_steps: int = 500,
    *,
    edge_suppression: bool = True,
    edge_threshold: float = 0.6,
    edge_penalty: float = 0.1,
    background_regularization: bool = True,
    kernel: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """:func:`jaxopt_adv.automagic.body.automagic_direction` with the matrices stepped by
    the CPU kernel.

    Same arguments, state and results (to rounding), plus ``kernel`` (static; ``False``
    always takes the JAX path). Leaves the kernel does not take (0-d/1-D, one element,
    bfloat16, the members of stacked groups) take the JAX path.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.fast.automagic import automagic_direction
      >>> from jaxopt_adv.automagic.body import automagic_direction as reference
      >>> u, g = jnp.array([[1.0, -2.0], [3.0, 0.5]]), jnp.array([[1.0, 1.0], [-1.0, 1.0]])
      >>> tx, ref = automagic_direction(), reference()
      >>> ours = tx.update(u, tx.init(u), u + 1, ref_grads=g)[0]
      >>> bool(jnp.allclose(ours, ref.update(u, ref.init(u), u + 1, ref_grads=g)[0]))
      True

    References:
      Cao et al., "Grams", arXiv 2412.17107; Liang et al., "Cautious Optimizers", arXiv
      2411.16085; Prieto et al., "Grokking at the Edge of Numerical Stability"
      (OrthoGrad), arXiv 2501.04697.
    """
    inner = jax_automagic_direction(
        warmup_steps,
        edge_suppression=edge_suppression,
        edge_threshold=edge_threshold,
        edge_penalty=edge_penalty,
        background_regularization=background_regularization,
    )
    fields = ("edge_history",)

    def step(updates, refs, params, state, out, new_state):
        u_leaves, treedef = jax.tree.flatten(updates)
        g_leaves = treedef.flatten_up_to(refs)
        p_leaves = treedef.flatten_up_to(params)
        (h_leaves,) = ffi.fields_of(state, fields, treedef)
        out_leaves = treedef.flatten_up_to(out)
        (new_h,) = ffi.fields_of(new_state, fields, treedef)
        early = phase_of(state.count, warmup_steps) == EARLY

        def takes(i: int) -> bool:
            return _direction_leaf(u_leaves[i], g_leaves[i], p_leaves[i], h_leaves[i])

        for dtype, batch in ffi.batches_by_dtype(u_leaves, takes):
            values = (early, *direction_scalars(edge_threshold, edge_penalty))
            scalars = [jnp.asarray(value).astype(dtype) for value in values]
            operands = [(u_leaves[i], g_leaves[i], p_leaves[i], h_leaves[i]) for i in batch]
            results = _direction_call(
                scalars, operands, edge_suppression, background_regularization
            )
            for i, (history, update) in zip(batch, results, strict=True):
                out_leaves[i], new_h[i] = update, history
        return treedef.unflatten(out_leaves), ffi.with_fields(new_state, fields, [new_h], treedef)

    def update_fn(updates, state, params=None, **extra_args):
        # the JAX path's results for every leaf (it checks params and ref_grads); under
        # jax.jit XLA removes the parts of the leaves the kernel replaces
        out, new_state = inner.update(updates, state, params, **extra_args)
        if not kernel or _direction_unavailable_reason() is not None:
            return out, new_state
        refs = extra_args["ref_grads"]
        if isinstance(updates, GroupTree):
            # the stacks keep the JAX path's results (vmapped over their members)
            return on_loose_leaves(step, fields, updates, state, out, new_state, refs, params)
        return step(updates, refs, params, state, out, new_state)

    return optax.GradientTransformationExtraArgs(inner.init, update_fn)


# ---------------------------------------------------------------------- projection decay

SPD_TARGET = "jaxopt_adv_automagic_spd"

# SPD's self-check: both anchors (with the rank-aware factor, and a decay that stops
# after three steps), float32 leaves, five steps whose last has an Inf, a -Inf and a NaN
# update element; the params pull the candidate away from the anchor on some leaves and
# toward it on others, so the decay fires on some and not on others.
_SPD_SHAPES = {"w": (24, 60), "small": (3, 5), "c": (3, 1, 7), "b": (7,), "s": ()}
_SPD_KWARGS: tuple[dict[str, Any], ...] = (
    {"weight_decay": 0.3, "anchor": "zeros", "rank_aware": True},
    {"weight_decay": 0.7, "anchor": "init", "active_steps": 4},
)
_SPD_STEPS = 5


def _spd_extra_args(updates: dict[str, np.ndarray]) -> dict[str, Any]:
    """The probes' ``params`` (finite; signs that agree with the update's on some leaves)
    and ``raw_grads``."""
    finite = {k: np.nan_to_num(u, posinf=1.0, neginf=-1.0) for k, u in updates.items()}
    params = {k: (1.0 if k in ("w", "b") else -1.0) * u + 0.25 for k, u in finite.items()}
    return {"params": params, "raw_grads": {k: u + 0.5 for k, u in params.items()}}


def _spd_probe_mismatches() -> dict[str, str | None]:
    """SPD's self-check (:mod:`.selfcheck`): the first probe configuration whose kernel
    steps differ from the JAX transform's, or ``None``."""
    nonfinite = {("w", (2, 3)): np.inf, ("small", (1, 1)): -np.inf, ("c", (1, 0, 3)): np.nan}
    stream = selfcheck.probe_stream(_SPD_SHAPES, _SPD_STEPS, nonfinite)
    for kwargs in _SPD_KWARGS:
        ours = selective_projection_decay(**kwargs)
        theirs = selective_projection_decay(**kwargs, kernel=False)
        if selfcheck.steps_differ(ours, theirs, stream, _PROBE_RTOL, _spd_extra_args):
            return {selfcheck.AUTOMAGIC_SPD: f"selective_projection_decay {kwargs}"}
    return {selfcheck.AUTOMAGIC_SPD: None}


def _spd_unavailable_reason() -> str | None:
    """Why the SPD kernel does not step leaves in this process."""
    return selfcheck.unavailable(_spd_probe_mismatches, selfcheck.AUTOMAGIC_SPD)


def _spd_leaf(d: Any, *others: Any) -> bool:
    """Whether the SPD kernel takes this leaf: float32/float64, not empty, the params,
    the raw gradient (and the anchor) in its dtype and shape."""
    dtype = np.dtype(d.dtype)
    if dtype not in ffi.FLOATS or jnp.size(d) == 0:
        return False
    return all(np.dtype(x.dtype) == dtype and jnp.shape(x) == jnp.shape(d) for x in others)


def _spd_call(scalars: list[jax.Array], decays: jax.Array, leaves: list[tuple]) -> list[Any]:
    """One custom call over ``leaves = [(d, p, g[, anchor]), ...]``; returns the updates
    (each aliases its ``d``)."""
    call = ffi.Call([*scalars, decays])
    for d, *rest in leaves:
        call.update(d)
        call.read(*rest)
    return call.run(SPD_TARGET, anchor=len(leaves[0]) == 4)


def selective_projection_decay(
    weight_decay: float = 5e-4,
    anchor: str = "zeros",
    *,
    rank_aware: bool = False,
    active_steps: int | None = None,
    eps: float = 1e-8,
    kernel: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """:func:`jaxopt_adv.automagic.spd.selective_projection_decay` with each leaf stepped
    by the CPU kernel (``anchor`` ``"zeros"`` or ``"init"``).

    Same arguments, state and results (to rounding), plus ``kernel`` (static; ``False``,
    and the ``"current"`` anchor, always take the JAX path). ``weight_decay`` and ``eps``
    are Python numbers here (the kernel's per-leaf decay is computed at trace time).

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.fast.automagic import selective_projection_decay
      >>> tx = selective_projection_decay(0.5)
      >>> p = jnp.array([3.0, 4.0])
      >>> u, _ = tx.update(p / 5, tx.init(p), p, raw_grads=p)  # moves away from 0
      >>> u.tolist()
      [0.3, 0.4]

    References:
      Tian, Huang, Kira, "Rethinking Weight Decay for Robust Fine-Tuning of Foundation
      Models", NeurIPS 2024, arXiv 2411.01713.
    """
    inner = jax_selective_projection_decay(
        weight_decay, anchor, rank_aware=rank_aware, active_steps=active_steps, eps=eps
    )
    fields = ("anchor",) if anchor == "init" else ()

    def step(updates, params, raws, state, out, new_state):
        d_leaves, treedef = jax.tree.flatten(updates)
        others = [treedef.flatten_up_to(params), treedef.flatten_up_to(raws)]
        if anchor == "init":
            others.append(treedef.flatten_up_to(state.anchor))
        out_leaves = treedef.flatten_up_to(out)
        active = True if active_steps is None else state.count + 1 < active_steps

        def takes(i: int) -> bool:
            return _spd_leaf(d_leaves[i], *(x[i] for x in others))

        for dtype, batch in ffi.batches_by_dtype(d_leaves, takes):
            scalars = [jnp.asarray(value).astype(dtype) for value in (active, eps)]
            decays = [
                weight_decay * rank_aware_factor(jnp.shape(d_leaves[i]))
                if rank_aware
                else weight_decay
                for i in batch
            ]
            operands = [(d_leaves[i], *(x[i] for x in others)) for i in batch]
            results = _spd_call(scalars, jnp.asarray(decays, dtype), operands)
            for i, update in zip(batch, results, strict=True):
                out_leaves[i] = update
        return treedef.unflatten(out_leaves), new_state

    def update_fn(updates, state, params=None, **extra_args):
        out, new_state = inner.update(updates, state, params, **extra_args)
        if not kernel or anchor == "current" or _spd_unavailable_reason() is not None:
            return out, new_state
        raws = extra_args["raw_grads"]
        if isinstance(updates, GroupTree):
            # the stacks keep the JAX path's results (vmapped over their members)
            return on_loose_leaves(step, fields, updates, state, out, new_state, params, raws)
        return step(updates, params, raws, state, out, new_state)

    return optax.GradientTransformationExtraArgs(inner.init, update_fn)
