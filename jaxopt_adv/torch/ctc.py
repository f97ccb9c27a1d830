"""Connectionist temporal classification, as ``torch.nn.functional.ctc_loss`` computes it."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_adv._common import check
from jaxopt_adv.torch._loss_common import Reduction, check_reduction

__all__ = ["ctc_loss"]


def _logaddexp(*terms: jax.Array) -> jax.Array:
    """``log(sum(exp(terms)))`` that is ``-inf`` with a zero (not ``nan``) slope when
    every term is ``-inf`` (states no path reaches)."""
    stacked = jnp.stack(terms)
    top = jax.lax.stop_gradient(jnp.max(stacked, axis=0))
    top = jnp.where(jnp.isfinite(top), top, 0.0)
    total = jnp.sum(jnp.exp(stacked - top), axis=0)
    reached = total > 0
    return jnp.where(reached, jnp.log(jnp.where(reached, total, 1.0)) + top, -jnp.inf)


def _padded_targets(targets: jax.Array, target_lengths: jax.Array) -> jax.Array:
    """``(N, S)`` targets from torch's padded ``(N, S)`` or concatenated ``(sum S_n,)`` form."""
    if targets.ndim == 2:
        return targets
    width = max(int(targets.shape[0]), 1)
    lengths = (
        np.asarray(target_lengths) if not isinstance(target_lengths, jax.core.Tracer) else None
    )
    if lengths is not None:
        width = max(int(lengths.max(initial=0)), 1)
    offsets = jnp.cumsum(target_lengths) - target_lengths
    index = jnp.clip(offsets[:, None] + jnp.arange(width), 0, max(targets.shape[0] - 1, 0))
    return jnp.take(targets, index) if targets.shape[0] else jnp.zeros_like(index)


def _negative_log_likelihood(
    log_probs: jax.Array,
    labels: jax.Array,
    input_lengths: jax.Array,
    target_lengths: jax.Array,
    blank: int,
) -> jax.Array:
    """``-log p(labels | log_probs)`` per sample by the forward (alpha) recursion, in log
    space over time with ``lax.scan``; ``log_probs`` is ``(T, N, C)``."""
    batch, width = labels.shape
    states = 2 * width + 1
    extended = jnp.full((batch, states), blank, labels.dtype).at[:, 1::2].set(labels)
    skip = jnp.zeros((batch, states), bool)
    skip = skip.at[:, 2:].set((extended[:, 2:] != blank) & (extended[:, 2:] != extended[:, :-2]))
    neg_inf = jnp.asarray(-jnp.inf, log_probs.dtype)

    def emit(lp_t: jax.Array) -> jax.Array:
        return jnp.take_along_axis(lp_t, extended, axis=1)

    first = emit(log_probs[0])
    start = jnp.arange(states) < jnp.where(target_lengths > 0, 2, 1)[:, None]
    alpha0 = jnp.where(start, first, neg_inf)

    def step(alpha: jax.Array, inputs: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, None]:
        lp_t, t = inputs
        shift1 = jnp.pad(alpha, ((0, 0), (1, 0)), constant_values=-jnp.inf)[:, :-1]
        shift2 = jnp.pad(alpha, ((0, 0), (2, 0)), constant_values=-jnp.inf)[:, :-2]
        shift2 = jnp.where(skip, shift2, neg_inf)
        new = _logaddexp(alpha, shift1, shift2) + emit(lp_t)
        return jnp.where((t < input_lengths)[:, None], new, alpha), None

    times = jnp.arange(1, log_probs.shape[0])
    alpha, _ = jax.lax.scan(step, alpha0, (log_probs[1:], times))
    last = 2 * target_lengths
    end = jnp.take_along_axis(alpha, last[:, None], axis=1)[:, 0]
    before = jnp.take_along_axis(alpha, jnp.maximum(last - 1, 0)[:, None], axis=1)[:, 0]
    before = jnp.where(target_lengths > 0, before, neg_inf)
    return -_logaddexp(end, before)


def ctc_loss(
    log_probs: Any,
    targets: Any,
    input_lengths: Any,
    target_lengths: Any,
    blank: int = 0,
    reduction: Reduction = "mean",
    zero_infinity: bool = False,
) -> jax.Array:
    r"""CTC loss (Graves et al., ICML 2006), as ``torch.nn.functional.ctc_loss``.

    :math:`\ell_n = -\log \sum_{\pi \in \mathcal{B}^{-1}(y_n)} \prod_t p_{t, \pi_t}` over
    the first ``input_lengths[n]`` frames, by the forward recursion in log space
    (``lax.scan`` over time). ``'mean'`` divides each :math:`\ell_n` by its target length
    (at least 1), then averages over the batch, as torch does.

    The gradient with respect to ``log_probs`` is torch's: the derivative of the loss
    *plus* ``exp(log_probs)`` on the frames used. That is the gradient with respect to
    the logits when ``log_probs = log_softmax(logits)`` (the intended use; chained through
    ``jax.nn.log_softmax`` it is the true gradient of the logits), not the derivative
    with respect to un-normalised log-probabilities.

    Args:
      log_probs: ``(T, N, C)`` log-probabilities (or unbatched ``(T, C)``).
      targets: padded ``(N, S)`` labels, or the ``(sum S_n,)`` concatenation (or ``(S,)``
        unbatched); never ``blank``.
      input_lengths: ``(N,)`` frames used per sample, ``<= T`` (a scalar unbatched).
      target_lengths: ``(N,)`` labels per sample (a scalar unbatched).
      blank: static blank class index.
      reduction: static; ``'mean'``, ``'sum'`` or ``'none'``.
      zero_infinity: static; an impossible alignment (infinite loss) gives loss 0 and
        gradient 0 instead of ``inf``.

    Returns:
      The reduced loss, or the per-sample loss for ``reduction='none'``.

    References:
      Graves, Fernández, Gomez, Schmidhuber, "Connectionist temporal classification",
      ICML 2006; ``torch.nn.functional.ctc_loss`` (torch 2.13).
    """
    check_reduction(reduction)
    log_probs = jnp.asarray(log_probs)
    if not isinstance(input_lengths, jax.core.Tracer):  # NumPy: not staged inside a jit
        check(
            bool(np.all(np.asarray(input_lengths) <= log_probs.shape[0])),
            f"ctc_loss: Expected input_lengths to have value at most {log_probs.shape[0]}",
        )
    targets, input_lengths, target_lengths = (
        jnp.asarray(x) for x in (targets, input_lengths, target_lengths)
    )
    unbatched = log_probs.ndim == 2
    check(
        log_probs.ndim in (2, 3),
        f"ctc_loss: log_probs must be (T, N, C) or (T, C), got shape {log_probs.shape}",
    )
    if unbatched:
        log_probs, targets = log_probs[:, None], targets[None]
        input_lengths, target_lengths = input_lengths[None], target_lengths[None]
    classes, batch = log_probs.shape[2], log_probs.shape[1]
    check(0 <= blank < classes, f"ctc_loss: blank must be in label range, got {blank}")
    check(
        input_lengths.shape == (batch,) and target_lengths.shape == (batch,),
        f"ctc_loss: input_lengths and target_lengths must have shape ({batch},), got "
        f"{input_lengths.shape} and {target_lengths.shape}",
    )
    check(targets.ndim in (1, 2), f"ctc_loss: targets must be 1-D or 2-D, got {targets.shape}")
    labels = _padded_targets(targets, target_lengths)
    nll = _negative_log_likelihood(log_probs, labels, input_lengths, target_lengths, blank)
    used = jnp.arange(log_probs.shape[0])[:, None] < input_lengths
    # torch's backward adds exp(log_probs) on used frames: a term of value 0 with that slope.
    probs = jnp.exp(log_probs)
    extra = jnp.where(used[..., None], probs - jax.lax.stop_gradient(probs), 0.0)
    nll = nll + jnp.sum(extra, axis=(0, 2))
    if zero_infinity:
        nll = jnp.where(jnp.isinf(nll), jnp.zeros_like(nll), nll)
    if reduction == "mean":
        divisor = jnp.maximum(target_lengths, 1).astype(nll.dtype)
        return jnp.mean(nll / divisor)
    if reduction == "sum":
        return jnp.sum(nll)
    return nll[0] if unbatched else nll
