"""Automagic-CameAMP's scaling and direction control with each matrix's two blocks in one
C++ kernel call on CPU (``automagic_body.cc``).

:func:`scale_and_direct` is ``optax.chain(scale_by_automagic_came(**scaling),
automagic_direction(**direction))`` of :mod:`jaxopt_adv.automagic.body`, with that
chain's state (the pair of the two blocks' states), so a checkpoint saved with either
resumes with the other. Where the scaling's kernel applies (``factored=True``,
``came_enabled=True``, a ``tam_correlation`` other than ``"dim0"``, a single-device CPU
process) every float32/float64 leaf with ``ndim >= 2`` and two elements or more that
both kernels of :mod:`jaxopt_adv.fast.automagic` would take is stepped by one XLA FFI
call instead of two: the scaling's update ``m' / sqrt(r)`` is never written, the
direction's first pass forms it from the new momentum and the confidence factors (early:
Grams, the edge damping and OrthoGrad's sums; later: Cautious's count and the
gradient's variance; later the scaling's third pass, which writes the new momentum,
counts Cautious's kept elements as it goes, since the confidence factors are positive,
unless a factor is not finite or a product is near underflow). A matrix takes five
passes early and four later instead of the two kernels' six, and the passes that read
the update read the momentum instead of a freshly written array. The other leaves take the two blocks' JAX code; with
the scaling's kernel ruled out by the settings, or this kernel's self-check
(:mod:`.selfcheck`) failed, the two blocks of :mod:`jaxopt_adv.fast.automagic` run, each
with its own kernel where it can. Sums are accumulated in float64, so the results agree
with the JAX blocks to rounding, not bit for bit.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_adv.automagic.body import automagic_direction as jax_automagic_direction
from jaxopt_adv.automagic.body import momentum_schedule
from jaxopt_adv.automagic.body import scale_by_automagic_came as jax_scale_by_automagic_came
from jaxopt_adv.fast import ffi, selfcheck
from jaxopt_adv.fast.automagic import (
    _FIELDS,
    _PROBE_RTOL,
    _direction_extra_args,
    _direction_leaf,
    _kernel_leaf,
    automagic_direction,
    direction_scalars,
    leaf_options,
    scale_by_automagic_came,
    scaling_scalars,
)
from jaxopt_adv.grouping import GroupTree, loose_fields, with_loose_fields

__all__ = ["BODY_TARGET", "scale_and_direct"]

BODY_TARGET = "jaxopt_adv_automagic_body"
_HISTORY = ("edge_history",)

# The self-check's probes: the defaults, the row rule with other betas and the direction's
# rules off, and the leaf rule with a tight clip and strong edges, on float32 leaves (a
# matrix, a small one, a 3-D leaf with a single row per matrix, one with a single column,
# a vector left to JAX) with warmup_steps=8 (three early steps, then the EMA and
# Cautious): runs of three and of seven steps, whose last step has an Inf, a -Inf and a
# NaN gradient element (in each phase); the kernel must agree with the JAX blocks to
# rounding and put the same non-finite values in the same places.
_PROBE_SHAPES = {"w": (24, 60), "small": (3, 5), "c": (3, 1, 7), "d": (4, 6, 1), "b": (7,)}
_PROBE_OPTIONS: tuple[tuple[dict[str, Any], dict[str, Any]], ...] = (
    ({"warmup_steps": 8}, {"warmup_steps": 8}),
    (
        {"warmup_steps": 8, "tam_correlation": "row_cosine", "betas": (0.5, 0.9, 0.99)},
        {"warmup_steps": 8, "edge_suppression": False, "background_regularization": False},
    ),
    (
        {"warmup_steps": 8, "tam_correlation": "cosine", "clip_threshold": 0.3},
        {"warmup_steps": 8, "edge_threshold": 0.05, "edge_penalty": 2.0},
    ),
)
_PROBE_STEPS = (3, 7)


def _probe_mismatches() -> dict[str, str | None]:
    """The kernel's self-check (:mod:`.selfcheck`): the first probe configuration whose
    kernel steps differ from the JAX blocks', or ``None``."""
    nonfinite = {("w", (2, 3)): np.inf, ("small", (1, 1)): -np.inf, ("c", (1, 0, 3)): np.nan}
    streams = [selfcheck.probe_stream(_PROBE_SHAPES, n, nonfinite) for n in _PROBE_STEPS]
    for scaling, direction in _PROBE_OPTIONS:
        ours = scale_and_direct(scaling, direction)
        theirs = optax.chain(
            jax_scale_by_automagic_came(**scaling), jax_automagic_direction(**direction)
        )
        for stream in streams:
            if selfcheck.steps_differ(ours, theirs, stream, _PROBE_RTOL, _direction_extra_args):
                return {selfcheck.AUTOMAGIC_BODY: f"scale_and_direct {scaling} {direction}"}
    return {selfcheck.AUTOMAGIC_BODY: None}


def _unavailable_reason() -> str | None:
    """Why the kernel does not step leaves in this process (see :mod:`.selfcheck`)."""
    return selfcheck.unavailable(_probe_mismatches, selfcheck.AUTOMAGIC_BODY)


def _call(
    scalars: jax.Array,
    options: jax.Array,
    leaves: list[tuple],
    directions: list[tuple],
    edge: bool,
    background: bool,
) -> tuple[list[tuple], list[Any]]:
    """One custom call over ``leaves = [(g, mu, v_row, v_col, r_row, r_col, s), ...]`` and
    their ``directions = [(g', w, h), ...]``; returns ``[(out, mu, v_row, v_col, r_row,
    r_col, s), ...]`` and the new histories (the state results alias their operands)."""
    call = ffi.Call([scalars, options])
    for g, *state_arrays in leaves:
        call.read(g)
        call.output(jnp.shape(g), g.dtype)
        call.update(*state_arrays)
    for ref, w, h in directions:
        call.read(ref, w)
        call.update(h)
    results = call.run(BODY_TARGET, edge=edge, background=background)
    width = len(_FIELDS) + 1
    return ffi.chunks(results[: width * len(leaves)], width), results[width * len(leaves) :]


def _defaults(function: Any, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with ``function``'s defaults for the keyword arguments it leaves out."""
    parameters = inspect.signature(function).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    return {**defaults, **options}


def scale_and_direct(
    scaling: dict[str, Any], direction: dict[str, Any], *, kernel: bool = True
) -> optax.GradientTransformationExtraArgs:
    """``optax.chain(scale_by_automagic_came(**scaling), automagic_direction(**direction))``
    of :mod:`jaxopt_adv.automagic.body` with each matrix's two blocks in one CPU kernel
    call.

    Args:
      scaling: keyword arguments of
        :func:`~jaxopt_adv.automagic.body.scale_by_automagic_came`
        (:attr:`~jaxopt_adv.automagic.AutomagicConfig.came_options`).
      direction: keyword arguments of
        :func:`~jaxopt_adv.automagic.body.automagic_direction`
        (:attr:`~jaxopt_adv.automagic.AutomagicConfig.direction_options`), with the same
        ``warmup_steps``.
      kernel: static; ``False`` always takes the JAX blocks.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` whose state is the chain's pair of
      states; ``update`` needs ``params`` and the extra argument ``ref_grads``. Use it
      under ``jax.jit`` with the state donated, so that the kernel updates the momentum,
      the statistics and the edge history in place.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.fast.automagic_body import scale_and_direct
      >>> tx = scale_and_direct({}, {})
      >>> w, g = jnp.array([[1.0, -2.0], [3.0, 0.5]]), jnp.array([[0.5, 1.0], [-1.0, 2.0]])
      >>> u, state = tx.update(g, tx.init(w), w, ref_grads=g)
      >>> ref = scale_and_direct({}, {}, kernel=False)
      >>> bool(jnp.allclose(u, ref.update(g, ref.init(w), w, ref_grads=g)[0], rtol=1e-5))
      True

    References:
      Luo et al., "CAME: Confidence-guided Adaptive Memory Efficient Optimization",
      ACL 2023; Malviya et al., "Torque-Aware Momentum", arXiv 2412.18790; Cao et al.,
      "Grams", arXiv 2412.17107; Liang et al., "Cautious Optimizers", arXiv 2411.16085;
      Prieto et al., "Grokking at the Edge of Numerical Stability" (OrthoGrad), arXiv
      2501.04697.
    """
    scaling = _defaults(jax_scale_by_automagic_came, scaling)
    direction = _defaults(jax_automagic_direction, direction)
    if scaling["warmup_steps"] != direction["warmup_steps"]:
        raise ValueError(
            "scale_and_direct needs one warmup_steps for both blocks, got "
            f"{scaling['warmup_steps']} and {direction['warmup_steps']}"
        )
    jax_blocks = optax.chain(
        jax_scale_by_automagic_came(**scaling), jax_automagic_direction(**direction)
    )
    if not kernel:
        return jax_blocks
    separate = optax.chain(scale_by_automagic_came(**scaling), automagic_direction(**direction))
    takes_any = (
        scaling["factored"] and scaling["came_enabled"] and scaling["tam_correlation"] != "dim0"
    )
    arithmetic = {
        name: scaling[name]
        for name in ("betas", "eps", "clip_threshold", "tam_momentum", "tam_decay")
    }
    edge, background = direction["edge_suppression"], direction["background_regularization"]
    direction_values = direction_scalars(direction["edge_threshold"], direction["edge_penalty"])

    def step(updates, refs, params, state, out, new_state):
        g_leaves, treedef = jax.tree.flatten(updates)
        r_leaves = treedef.flatten_up_to(refs)
        p_leaves = treedef.flatten_up_to(params)
        old = ffi.fields_of(state[0], _FIELDS, treedef)
        (h_leaves,) = ffi.fields_of(state[1], _HISTORY, treedef)
        out_leaves = treedef.flatten_up_to(out)
        new = ffi.fields_of(new_state[0], _FIELDS, treedef)
        (new_h,) = ffi.fields_of(new_state[1], _HISTORY, treedef)
        early, beta1_t = momentum_schedule(
            state[0].count,
            scaling["warmup_steps"],
            scaling["betas"][0],
            scaling["beta1_decay"],
            scaling["beta1_floor"],
        )

        def takes(i: int) -> bool:
            g = g_leaves[i]
            return _kernel_leaf(g, [arrays[i] for arrays in old]) and _direction_leaf(
                g, r_leaves[i], p_leaves[i], h_leaves[i]
            )

        for dtype, batch in ffi.batches_by_dtype(g_leaves, takes):
            values = scaling_scalars(early, beta1_t, dtype, **arithmetic)
            values += [jnp.asarray(value, dtype) for value in direction_values]
            leaves = [(g_leaves[i], *(arrays[i] for arrays in old)) for i in batch]
            directions = [(r_leaves[i], p_leaves[i], h_leaves[i]) for i in batch]
            options = leaf_options(leaves, scaling["low_rank_emphasis"], dtype)
            results, histories = _call(
                jnp.stack(values), options, leaves, directions, edge, background
            )
            for i, (update, *arrays_i), history in zip(batch, results, histories, strict=True):
                out_leaves[i], new_h[i] = update, history
                for arrays, array in zip(new, arrays_i, strict=True):
                    arrays[i] = array
        return treedef.unflatten(out_leaves), (
            ffi.with_fields(new_state[0], _FIELDS, new, treedef),
            ffi.with_fields(new_state[1], _HISTORY, [new_h], treedef),
        )

    def update_fn(updates, state, params=None, **extra_args):
        if not takes_any or _unavailable_reason() is not None:
            return separate.update(updates, state, params, **extra_args)
        # the JAX blocks' results for every leaf (they check params and ref_grads); under
        # jax.jit XLA removes the parts of the leaves the kernel replaces
        out, new_state = jax_blocks.update(updates, state, params, **extra_args)
        refs = extra_args["ref_grads"]
        if not isinstance(updates, GroupTree):
            return step(updates, refs, params, state, out, new_state)
        # the stacks keep the JAX blocks' results (vmapped over their members)
        fields = (_FIELDS, _HISTORY)
        out_loose, new_loose = step(
            updates.loose,
            refs.loose,
            params.loose,
            tuple(loose_fields(s, f) for s, f in zip(state, fields, strict=True)),
            out.loose,
            tuple(loose_fields(s, f) for s, f in zip(new_state, fields, strict=True)),
        )
        merged = tuple(
            with_loose_fields(s, loose, f)
            for s, loose, f in zip(new_state, new_loose, fields, strict=True)
        )
        return dataclasses.replace(out, loose=out_loose), merged

    return optax.GradientTransformationExtraArgs(jax_blocks.init, update_fn)
