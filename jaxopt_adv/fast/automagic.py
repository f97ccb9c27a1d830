"""Automagic-CameAMP's scaling with each matrix's step as one C++ kernel call on CPU
(``automagic.cc``).

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
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxopt_adv.automagic.body import momentum_schedule
from jaxopt_adv.automagic.body import scale_by_automagic_came as jax_scale_by_automagic_came
from jaxopt_adv.fast import ffi, selfcheck
from jaxopt_adv.grouping import GroupTree, on_loose_leaves

__all__ = ["scale_by_automagic_came"]

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
    b1, b2, b3 = betas
    eps1, eps2 = eps

    def replace(updates, state, out, new_state, extra_args):
        del extra_args
        early, beta1_t = momentum_schedule(state.count, warmup_steps, b1, beta1_decay, beta1_floor)

        def call(dtype: np.dtype, leaves: list[tuple]) -> list[tuple]:
            bt = beta1_t.astype(dtype)
            values = (early, bt, 1 - bt, b2, 1 - b2, b3, 1 - b3, eps1, eps2, clip_threshold)
            values += (tam_momentum, 1 - tam_decay)
            scalars = [jnp.asarray(value).astype(dtype) for value in values]
            # per leaf: TAM's emphasis (2-D leaves only) and whether s has one value per row
            options = jnp.stack(
                [
                    jnp.asarray(value, dtype)
                    for g, *_, s in leaves
                    for value in (
                        low_rank_emphasis if jnp.ndim(g) == 2 else 1.0,
                        jnp.ndim(s) == jnp.ndim(g),
                    )
                ]
            )
            return _call(scalars, options, leaves)

        def step(updates, state, out, new_state):
            return ffi.step_leaves(updates, state, out, new_state, _FIELDS, _kernel_leaf, call)

        if isinstance(updates, GroupTree):
            # the stacks keep the JAX path's results (vmapped over their members: faster
            # than one kernel call a member, see benchmarks/RESULTS.md)
            return on_loose_leaves(step, _FIELDS, updates, state, out, new_state)
        return step(updates, state, out, new_state)

    return ffi.with_kernel(inner, kernel and takes_any, _unavailable_reason, replace)
