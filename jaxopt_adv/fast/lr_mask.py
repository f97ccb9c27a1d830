"""Automagic's learning-rate mask with each leaf's step as one C++ pass on CPU (``lr_mask.cc``).

:func:`automagic_lr_mask` takes the arguments of
:func:`jaxopt_adv.automagic.lr_mask.automagic_lr_mask` and keeps its state. On a
single-device CPU process every non-empty leaf whose update, sign source and mask share
a float32/float64 dtype is stepped by an XLA FFI call that reads the update, the source,
the mask and the polarity once and writes the scaled update, the mask and the polarity
once (XLA compiles the same step into four whole-leaf loops and a copy of the polarity).
The scaled updates, masks and polarities are the JAX path's bit for bit; ``avg_lr`` is
summed in float64 and agrees to rounding. The spatial variance (a per-row reduction of
``ref_grads``) stays in XLA. The kernel is used once its self-check (:mod:`.selfcheck`)
has passed on this host.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_adv._common import scalar_dtype
from jaxopt_adv.automagic.lr_mask import automagic_lr_mask as jax_automagic_lr_mask
from jaxopt_adv.automagic.lr_mask import mask_bump, mask_schedule, sign_source
from jaxopt_adv.fast import ffi, selfcheck
from jaxopt_adv.grouping import GroupTree, on_loose_leaves

__all__ = ["automagic_lr_mask"]

# the state fields the kernel writes (the mean learning rate from its sums)
_FIELDS = ("lr_mask", "last_polarity", "avg_lr")

# The self-check's probes: the defaults (the sign of ``ref_grads``, warmup) and two
# non-default settings (the update's sign with the mask frozen after two steps; the sign
# of ``raw_grads`` with the spatial bump) on a float32 matrix and a 3-D leaf, three steps
# of which the last has an Inf, a -Inf and a NaN update element; the kernel must agree
# with the JAX transform to rounding and put the same non-finite values in the same
# places.
_PROBE_SHAPES = {"w": (24, 16), "c": (3, 4, 5)}
_PROBE_KWARGS: tuple[dict[str, Any], ...] = (
    {},
    {"polarity_source": "update", "warmup_steps": 2, "lr_bump": 1e-5},
    {"polarity_source": "raw", "spatial": True, "min_lr": 1e-6},
)
_PROBE_STEPS = 3
_PROBE_RTOL = 1e-4


def _probe_sign_sources(updates: dict[str, np.ndarray]) -> dict[str, Any]:
    """The probes' ``ref_grads`` and ``raw_grads``: signs that differ from the update's."""
    flipped = {k: np.flip(u, axis=-1) for k, u in updates.items()}
    return {"ref_grads": flipped, "raw_grads": {k: 0.5 - u for k, u in updates.items()}}


def _probe_mismatches() -> dict[str, str | None]:
    """The mask's self-check (:mod:`.selfcheck`): the first probe configuration whose
    kernel steps differ from the JAX transform's, or ``None``."""
    nonfinite = {("w", (2, 3)): np.inf, ("w", (5, 1)): -np.inf, ("c", (1, 2, 3)): np.nan}
    stream = selfcheck.probe_stream(_PROBE_SHAPES, _PROBE_STEPS, nonfinite)
    for kwargs in _PROBE_KWARGS:
        ours = automagic_lr_mask(**kwargs)
        theirs = automagic_lr_mask(**kwargs, kernel=False)
        if selfcheck.steps_differ(ours, theirs, stream, _PROBE_RTOL, _probe_sign_sources):
            return {selfcheck.LR_MASK: f"automagic_lr_mask {kwargs}"}
    return {selfcheck.LR_MASK: None}


def _unavailable_reason() -> str | None:
    """Why the kernel does not step leaves in this process (see :mod:`.selfcheck`)."""
    return selfcheck.unavailable(_probe_mismatches, selfcheck.LR_MASK)


def _kernel_leaf(u: Any, source: Any, mask: Any) -> bool:
    """Whether the kernel takes this leaf: not empty, and the update, the sign source and
    the mask in one float32/float64 dtype and shape."""
    dtype = np.dtype(u.dtype)
    if dtype not in ffi.FLOATS or math.prod(jnp.shape(u)) == 0:
        return False
    same = [np.dtype(x.dtype) == dtype and jnp.shape(x) == jnp.shape(u) for x in (source, mask)]
    return all(same)


def _call(scalars: list[jax.Array], leaves: list[tuple], update_source: bool) -> list[tuple]:
    """One custom call over ``leaves = [(u, source, mask, polarity, bump), ...]``; returns
    ``[(u * lr, mask, polarity, sum of lr), ...]``. The scaled update, the mask and the
    polarity alias their operands (in place where XLA can: a chain's temporaries, donated
    buffers); with ``update_source`` the sign source is ``u`` and is not passed again
    (XLA would otherwise copy ``u`` to keep it for the second operand)."""
    call = ffi.Call(scalars)
    for u, source, mask, polarity, bump in leaves:
        call.update(u)
        if not update_source:
            call.read(source)
        call.update(mask, polarity)
        call.read(bump)
        call.output((), u.dtype)
    return ffi.chunks(call.run("jaxopt_adv_lr_mask", update_source=update_source), 4)


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
    kernel: bool = True,
) -> optax.GradientTransformationExtraArgs:
    """:func:`jaxopt_adv.automagic.lr_mask.automagic_lr_mask` with each leaf's mask step in one
    CPU kernel pass.

    Same arguments, state and results (``avg_lr`` to rounding), plus ``kernel`` (static;
    ``False`` always takes the JAX path). Use it under ``jax.jit`` with the state
    donated, so that the kernel updates the mask and the polarity in place. Leaves the
    kernel does not take (a bfloat16 mask, other dtypes, empty leaves) and hosts without
    the kernels take the JAX path.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv import fast
      >>> tx = fast.automagic_lr_mask(lr=0.1, max_lr=1.0, lr_bump=0.01, polarity_source="update")
      >>> state = tx.init(jnp.zeros(2))
      >>> u, state = tx.update(jnp.array([1.0, -1.0]), state)
      >>> u.tolist()  # step 1: last polarity is False, so only g <= 0 "agrees"
      [0.09, -0.11]

    References:
      Ostris, Automagic optimizer (ai-toolkit ``toolkit/optimizers/automagic.py``);
      gesen2egee / hinablue Automagic-CameAMP (sd-scripts); parity-tested as
      :func:`jaxopt_adv.automagic.lr_mask.automagic_lr_mask` is.
    """
    inner = jax_automagic_lr_mask(
        lr,
        min_lr,
        max_lr,
        lr_bump,
        group_lr,
        warmup_steps=warmup_steps,
        spatial=spatial,
        detail_preservation=detail_preservation,
        polarity_source=polarity_source,
        persistent_schedule=persistent_schedule,
        mask_dtype=mask_dtype,
    )

    fields = (*_FIELDS, "spatial_variance") if spatial else _FIELDS

    def scalars_of(state: Any, dtype: np.dtype) -> list[jax.Array]:
        """The step's scalars as :func:`lr_mask_leaf` casts them."""
        warm, increase, ratio, _ = mask_schedule(
            state.count, state.lr_max, group_lr, warmup_steps, persistent_schedule
        )
        scalars = [jnp.asarray(value).astype(dtype) for value in (warm, increase, ratio)]
        return scalars + [jnp.asarray(min_lr, dtype), jnp.asarray(max_lr, dtype)]

    def bump_of(sv: Any, dtype: np.dtype) -> jax.Array:
        return mask_bump(lr_bump, detail_preservation, sv, dtype).reshape(-1)

    def step_leaves(updates, source, state, out, new_state):
        u_leaves, treedef = jax.tree.flatten(updates)
        sources = treedef.flatten_up_to(source)
        masks, polarities = ffi.fields_of(state, _FIELDS[:2], treedef)
        svs = treedef.flatten_up_to(state.spatial_variance) if spatial else None
        out_leaves = treedef.flatten_up_to(out)
        new = ffi.fields_of(new_state, _FIELDS, treedef)

        def takes(i: int) -> bool:
            return _kernel_leaf(u_leaves[i], sources[i], masks[i])

        for dtype, batch in ffi.batches_by_dtype(u_leaves, takes):
            operands = [
                (
                    u_leaves[i],
                    sources[i],
                    masks[i],
                    polarities[i],
                    bump_of(svs[i] if spatial else None, dtype),
                )
                for i in batch
            ]
            results_list = _call(scalars_of(state, dtype), operands, polarity_source == "update")
            for i, results in zip(batch, results_list, strict=True):
                out_leaves[i], new[0][i], new[1][i], total = results
                size = math.prod(jnp.shape(u_leaves[i]))
                new[2][i] = total.astype(scalar_dtype()) / size
        return treedef.unflatten(out_leaves), ffi.with_fields(new_state, _FIELDS, new, treedef)

    def replace(updates, state, out, new_state, extra_args):
        source = sign_source(polarity_source, spatial, updates, extra_args)
        if isinstance(updates, GroupTree):
            # the stacks keep the JAX path's results (vmapped over their members)
            return on_loose_leaves(step_leaves, fields, updates, state, out, new_state, source)
        return step_leaves(updates, source, state, out, new_state)

    return ffi.with_kernel(inner, kernel, _unavailable_reason, replace)
