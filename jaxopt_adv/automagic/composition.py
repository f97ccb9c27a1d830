"""Composition helpers for the CAME / Automagic-CameAMP family.

Several blocks need a gradient other than the ``updates`` flowing through the chain:
direction control compares the update's sign with the (processed) gradient, selective
projection decay needs the raw gradient. :func:`with_reference_grads` runs a
pre-processing chain, then a body chain that receives the processed gradient as the
extra argument ``ref_grads`` and the raw gradient as ``raw_grads``. :func:`phase_of`
turns a step counter into the four training phases with traced arithmetic, so one
compilation covers every phase.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax.numpy as jnp
import optax

EARLY, LATE, STABLE, MATURE = 0, 1, 2, 3


def with_reference_grads(
    pre: optax.GradientTransformation,
    body: optax.GradientTransformation,
    *,
    step_of: Callable[[Any], chex.Array] | None = None,
) -> optax.GradientTransformationExtraArgs:
    """``body(pre(g))`` where ``body`` also gets ``ref_grads=pre(g)`` and ``raw_grads=g``.

    Args:
      pre: gradient pre-processing (e.g. AGR and penalties); ``optax.identity()`` for none.
      body: the optimizer body; its blocks read ``ref_grads`` / ``raw_grads`` as needed.
      step_of: optional function of the body's state returning its step counter (the
        steps taken before this one); ``pre`` then also gets it as the extra argument
        ``step``, so pre-processing can be gated by step without a counter of its own.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with state ``(pre_state, body_state)``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> from jaxopt_adv.automagic.composition import with_reference_grads
      >>> tx = with_reference_grads(optax.scale(2.0), optax.identity())
      >>> u, _ = tx.update(jnp.ones(2), tx.init(jnp.zeros(2)))
      >>> u
      Array([2., 2.], dtype=float32)
    """
    pre = optax.with_extra_args_support(pre)
    body = optax.with_extra_args_support(body)

    def init_fn(params: optax.Params) -> tuple[Any, Any]:
        return pre.init(params), body.init(params)

    def update_fn(updates, state, params=None, **extra_args):
        extra_args = {k: v for k, v in extra_args.items() if k not in ("ref_grads", "raw_grads")}
        pre_args = dict(extra_args)
        if step_of is not None:
            pre_args["step"] = step_of(state[1])
        processed, pre_state = pre.update(updates, state[0], params, **pre_args)
        out, body_state = body.update(
            processed, state[1], params, ref_grads=processed, raw_grads=updates, **extra_args
        )
        return out, (pre_state, body_state)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def phase_of(count: chex.Array, warmup_steps: int) -> chex.Array:
    """The training phase of step ``t = count + 1`` (torch counts from 1).

    ``EARLY`` for ``t < w // 2``, ``LATE`` for ``t < w``, ``STABLE`` for ``t < 2 w``,
    ``MATURE`` after; ``w = warmup_steps`` is static, ``count`` may be traced.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.automagic.composition import phase_of
      >>> phase_of(jnp.arange(0, 12, 2), 4)
      Array([0, 1, 2, 2, 3, 3], dtype=int32)
    """
    if warmup_steps < 1:
        raise ValueError(f"warmup_steps must be >= 1, got {warmup_steps}")
    t = jnp.asarray(count, jnp.int32) + 1
    w = warmup_steps
    return jnp.select([t < w // 2, t < w, t < 2 * w], [EARLY, LATE, STABLE], MATURE).astype(
        jnp.int32
    )
