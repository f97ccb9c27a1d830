"""More losses of ``torch.nn.functional``: margin, embedding, likelihood and triplet losses.

The companions of :mod:`jaxopt_adv.torch.functional`, with the same conventions: torch's
names, argument names, defaults and ``reduction`` rules (``'mean'``, ``'sum'``,
``'none'``; static), values *and gradients* equal to torch's, pure and jit-able. The
deprecated ``size_average`` / ``reduce`` arguments are left out. Where torch's hinge
(``clamp_min``) or ``if z > 0`` would meet a tie, the torch side of the tie is written in
(``jnp.maximum`` splits the slope in two).

Differences from torch, all deliberate: shape errors are ``ValueError`` at call time;
checks that need the values (``var >= 0`` of :func:`gaussian_nll_loss`, class labels in
range) run only on concrete arrays, not under ``jit``; :func:`poisson_nll_loss` with
``full=True`` has a finite ``target`` gradient at zero counts (torch's is ``nan``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_adv._common import check
from jaxopt_adv.torch import _loss_common as common
from jaxopt_adv.torch.ctc import ctc_loss

__all__ = [
    "cosine_embedding_loss",
    "ctc_loss",
    "gaussian_nll_loss",
    "hinge_embedding_loss",
    "margin_ranking_loss",
    "multi_margin_loss",
    "multilabel_margin_loss",
    "multilabel_soft_margin_loss",
    "pairwise_distance",
    "poisson_nll_loss",
    "soft_margin_loss",
    "triplet_margin_loss",
    "triplet_margin_with_distance_loss",
]


# --------------------------------------------------------------------------- helpers


def _hinge(z: jax.Array) -> jax.Array:
    """``clamp_min(z, 0)`` with torch's slope at ``z == 0`` (1, where ``jnp.maximum`` gives 1/2)."""
    return jnp.where(z >= 0, z, jnp.zeros_like(z))


def _positive_part(z: jax.Array) -> jax.Array:
    """``z if z > 0 else 0`` as ATen's margin kernels write it (slope 0 at ``z == 0``)."""
    return jnp.where(z > 0, z, jnp.zeros_like(z))


def _is_concrete(x: Any) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _labels(target: Any, name: str = "target") -> jax.Array:
    target = jnp.asarray(target)
    if not jnp.issubdtype(target.dtype, jnp.integer):
        raise TypeError(f"{name} must hold integer class labels, got dtype {target.dtype}")
    return target


# ------------------------------------------------------------ margin and embedding


def margin_ranking_loss(
    input1: Any, input2: Any, target: Any, margin: Any = 0.0, reduction: common.Reduction = "mean"
) -> jax.Array:
    r"""Margin ranking loss, as ``torch.nn.functional.margin_ranking_loss``.

    .. math::
      \ell_i = \max(0,\ -y_i (x^{(1)}_i - x^{(2)}_i) + \text{margin})

    Args:
      input1, input2: the two scores, same shape.
      target: :math:`y = \pm 1`, same shape.
      margin: the margin (may be traced).
      reduction: static; ``'mean'``, ``'sum'`` or ``'none'``.

    Returns:
      The reduced loss, or the per-element loss for ``reduction='none'``.

    References:
      ``torch.nn.functional.margin_ranking_loss`` (torch 2.13).
    """
    common.check_reduction(reduction)
    input1, input2 = common.float_pair(input1, input2)
    check(
        jnp.shape(target) == input1.shape,
        f"margin_ranking_loss: target shape {jnp.shape(target)} must equal the input "
        f"shape {input1.shape}",
    )
    target = jnp.asarray(target).astype(input1.dtype)
    return common.reduce_loss(_hinge(-target * (input1 - input2) + margin), reduction)


def hinge_embedding_loss(
    input: Any, target: Any, margin: Any = 1.0, reduction: common.Reduction = "mean"
) -> jax.Array:
    r"""Hinge embedding loss, as ``torch.nn.functional.hinge_embedding_loss``.

    .. math::
      \ell_i = [y_i \ne -1]\, x_i + [y_i \ne 1]\, \max(0, \text{margin} - x_i)

    (torch's exact rule: a label other than :math:`\pm 1` adds both terms.)

    Args:
      input: distances :math:`x`.
      target: labels :math:`y = \pm 1`, same shape.
      margin: the margin (may be traced).
      reduction: static; ``'mean'``, ``'sum'`` or ``'none'``.

    Returns:
      The reduced loss, or the per-element loss for ``reduction='none'``.

    References:
      ``torch.nn.functional.hinge_embedding_loss`` (torch 2.13).
    """
    common.check_reduction(reduction)
    input, target = common.float_pair(input, target)
    zeros = jnp.zeros_like(input)
    margin_term = jnp.where(target != 1, _hinge(margin - input), zeros)
    self_term = jnp.where(target != -1, input, zeros)
    return common.reduce_loss(margin_term + self_term, reduction)


def soft_margin_loss(input: Any, target: Any, reduction: common.Reduction = "mean") -> jax.Array:
    r"""Soft margin loss, as ``torch.nn.functional.soft_margin_loss``.

    .. math::
      \ell_i = \log(1 + e^{-y_i x_i})

    Computed as torch does (``log1p(exp(.))``, no overflow guard: large margins of the
    wrong sign give ``inf`` in both).

    Args:
      input: scores :math:`x`.
      target: :math:`y = \pm 1`, same shape.
      reduction: static; ``'mean'``, ``'sum'`` or ``'none'``.

    Returns:
      The reduced loss, or the per-element loss for ``reduction='none'``.

    References:
      ``torch.nn.functional.soft_margin_loss`` (torch 2.13).
    """
    common.check_reduction(reduction)
    input, target = common.float_pair(input, target)
    return common.reduce_loss(jnp.log1p(jnp.exp(-input * target)), reduction)


def cosine_embedding_loss(
    input1: Any, input2: Any, target: Any, margin: Any = 0.0, reduction: common.Reduction = "mean"
) -> jax.Array:
    r"""Cosine embedding loss, as ``torch.nn.functional.cosine_embedding_loss``.

    .. math::
      \cos_i = \frac{\langle a_i, b_i\rangle}{\sqrt{(\|a_i\|^2 + \epsilon)(\|b_i\|^2 + \epsilon)}},
      \qquad \ell_i = \begin{cases} 1 - \cos_i & y_i = 1 \\
      \max(0, \cos_i - \text{margin}) & y_i = -1 \\ 0 & \text{otherwise}\end{cases}

    with torch's :math:`\epsilon = 10^{-12}` (the float32 literal).

    Args:
      input1, input2: ``(N, D)`` embeddings (or unbatched ``(D,)``).
      target: ``(N,)`` labels :math:`\pm 1` (a scalar for unbatched inputs).
      margin: the margin for dissimilar pairs (may be traced).
      reduction: static; ``'mean'``, ``'sum'`` or ``'none'``.

    Returns:
      The reduced loss, or the per-pair loss for ``reduction='none'``.

    References:
      ``torch.nn.functional.cosine_embedding_loss`` (torch 2.13).
    """
    common.check_reduction(reduction)
    input1, input2 = common.float_pair(input1, input2)
    target = jnp.asarray(target)
    check(
        input1.ndim in (1, 2) and target.ndim == input1.ndim - 1,
        f"cosine_embedding_loss: expected (N, D) inputs with an (N,) target or (D,) inputs "
        f"with a scalar target, got inputs {input1.shape} and target {target.shape}",
    )
    check(
        target.shape == input1.shape[:-1],
        f"cosine_embedding_loss: target shape {target.shape} must be {input1.shape[:-1]}",
    )
    eps = jnp.asarray(common.BCE_EPSILON, input1.dtype)
    product = jnp.sum(input1 * input2, axis=-1)
    square1 = jnp.sum(input1 * input1, axis=-1) + eps
    square2 = jnp.sum(input2 * input2, axis=-1) + eps
    cos = product / jnp.sqrt(square1 * square2)
    zeros = jnp.zeros_like(cos)
    loss = jnp.where(target == 1, 1 - cos, zeros) + jnp.where(
        target == -1, _hinge(cos - margin), zeros
    )
    return common.reduce_loss(loss, reduction)


# ------------------------------------------------------------------ likelihoods


def poisson_nll_loss(
    input: Any,
    target: Any,
    log_input: bool = True,
    full: bool = False,
    eps: Any = 1e-8,
    reduction: common.Reduction = "mean",
) -> jax.Array:
    r"""Poisson negative log-likelihood, as ``torch.nn.functional.poisson_nll_loss``.

    .. math::
      \ell_i = e^{x_i} - y_i x_i \ \ (\texttt{log\_input}) \quad\text{or}\quad
      x_i - y_i \log(x_i + \text{eps})

    plus, with ``full``, Stirling's term :math:`y \log y - y + \tfrac12 \log(2\pi y)` where
    :math:`y > 1`. With ``full``, torch's gradient with respect to ``target`` is ``nan``
    at :math:`y = 0` (``0 \cdot \log 0`` behind its mask); here it is the slope of the
    loss.

    Args:
      input: the log-rate (``log_input=True``) or the rate.
      target: counts :math:`y`, same shape (gradients flow to it too).
      log_input: static; whether ``input`` is the log of the rate.
      full: static; add Stirling's approximation of :math:`\log y!`.
      eps: added to the rate before its log when ``log_input=False`` (may be traced).
      reduction: static; ``'mean'``, ``'sum'`` or ``'none'``.

    Returns:
      The reduced loss, or the per-element loss for ``reduction='none'``.

    References:
      ``torch.nn.functional.poisson_nll_loss`` (torch 2.13).
    """
    common.check_reduction(reduction)
    input, target = common.float_pair(input, target)
    if log_input:
        loss = jnp.exp(input) - target * input
    else:
        loss = input - target * jnp.log(input + eps)
    if full:
        large = target > 1
        safe = jnp.where(large, target, jnp.ones_like(target))
        stirling = safe * jnp.log(safe) - safe + 0.5 * jnp.log(2 * math.pi * safe)
        loss = loss + jnp.where(large, stirling, jnp.zeros_like(stirling))
    return common.reduce_loss(loss, reduction)


def _gaussian_var(var: Any, input: jax.Array) -> jax.Array:
    """``var`` shaped to broadcast against ``input`` by torch's rules, checked."""
    if isinstance(var, (int, float)) and not isinstance(var, bool):
        check(var >= 0, "gaussian_nll_loss: var has negative entry/entries")
        return jnp.full(input.shape, var, input.dtype)
    if _is_concrete(var):  # NumPy: jnp ops on a constant are traced inside a jit
        check(
            bool(np.all(np.asarray(var) >= 0)), "gaussian_nll_loss: var has negative entry/entries"
        )
    var = common.as_float(var).astype(input.dtype)
    if var.shape == input.shape:
        return var
    if var.shape == input.shape[:-1]:
        return var[..., None]
    mismatched = [v for i, v in zip(input.shape, var.shape, strict=False) if i != v]
    check(
        var.ndim == input.ndim and sum(mismatched) == 1,
        f"gaussian_nll_loss: var is of incorrect size {var.shape} for input {input.shape}",
    )
    return var


def gaussian_nll_loss(
    input: Any,
    target: Any,
    var: Any,
    full: bool = False,
    eps: Any = 1e-6,
    reduction: common.Reduction = "mean",
) -> jax.Array:
    r"""Gaussian negative log-likelihood, as ``torch.nn.functional.gaussian_nll_loss``.

    .. math::
      \ell_i = \tfrac12\big(\log \max(v_i, \text{eps}) + (x_i - y_i)^2 / \max(v_i, \text{eps})\big)
      \ (+\ \tfrac12 \log 2\pi \text{ with } \texttt{full})

    As in torch the clamp at ``eps`` is invisible to the gradient: the slope with respect
    to ``var`` is that of the formula at the clamped value, also where :math:`v_i <`
    ``eps``.

    Args:
      input: means :math:`x`.
      target: samples :math:`y`, same shape (gradients flow to it too).
      var: variances, shaped as ``input``, as ``input`` without its last axis, or with a
        single axis of size 1 (torch's homoscedastic cases); or a Python float.
      full: static; add the constant.
      eps: the variance floor (may be traced).
      reduction: static; ``'mean'``, ``'sum'`` or ``'none'``.

    Returns:
      The reduced loss, or the per-element loss for ``reduction='none'``.

    Raises:
      ValueError: for negative concrete variances or a ``var`` of the wrong size.

    References:
      ``torch.nn.functional.gaussian_nll_loss`` (torch 2.13).
    """
    common.check_reduction(reduction)
    input, target = common.float_pair(input, target)
    var = _gaussian_var(var, input)
    var = var + jax.lax.stop_gradient(jnp.maximum(var, eps) - var)
    loss = 0.5 * (jnp.log(var) + (input - target) ** 2 / var)
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    return common.reduce_loss(loss, reduction)


# ---------------------------------------------------------------- multi-class margins


def multilabel_soft_margin_loss(
    input: Any, target: Any, weight: Any = None, reduction: common.Reduction = "mean"
) -> jax.Array:
    r"""Multi-label one-versus-all logistic loss, as ``torch.nn.functional.multilabel_soft_margin_loss``.

    .. math::
      \ell_n = -\frac1C \sum_c w_c \big(y_{nc} \log\sigma(x_{nc}) + (1 - y_{nc}) \log\sigma(-x_{nc})\big)

    Args:
      input: ``(N, C)`` logits (or ``(C,)``).
      target: 0/1 (or soft) labels, same shape (gradients flow to it too).
      weight: optional per-class weights broadcasting to ``input``.
      reduction: static; ``'mean'`` (over samples), ``'sum'`` or ``'none'``.

    Returns:
      The reduced loss, or the per-sample loss for ``reduction='none'``.

    References:
      ``torch.nn.functional.multilabel_soft_margin_loss`` (torch 2.13).
    """
    common.check_reduction(reduction)
    input, target = common.float_pair(input, target)
    weight = common.elementwise_weight(weight, input.shape, "weight", input.dtype)
    loss = -(target * jax.nn.log_sigmoid(input) + (1 - target) * jax.nn.log_sigmoid(-input))
    if weight is not None:
        loss = loss * weight
    loss = jnp.sum(loss, axis=-1) / input.shape[-1]
    return common.reduce_loss(loss, reduction)


def multilabel_margin_loss(
    input: Any, target: Any, reduction: common.Reduction = "mean"
) -> jax.Array:
    r"""Multi-label hinge loss, as ``torch.nn.functional.multilabel_margin_loss``.

    ``target`` lists each sample's classes, ended by the first ``-1``:

    .. math::
      \ell_n = \frac1C \sum_{j \in Y_n} \sum_{i \notin Y_n} \max(0,\ 1 - x_{n, j} + x_{n, i})

    (a class listed twice counts twice, as in torch).

    Args:
      input: ``(N, C)`` scores (or ``(C,)``).
      target: integer labels, same shape, padded with ``-1``.
      reduction: static; ``'mean'``, ``'sum'`` or ``'none'``.

    Returns:
      The reduced loss, or the per-sample loss for ``reduction='none'``.

    References:
      ``torch.nn.functional.multilabel_margin_loss`` (torch 2.13).
    """
    common.check_reduction(reduction)
    input = common.as_float(input)
    target = _labels(target)
    check(
        input.ndim in (1, 2) and target.shape == input.shape,
        f"multilabel_margin_loss: expected (N, C) or (C,) input and a target of the same "
        f"shape, got input {input.shape} and target {target.shape}",
    )
    classes = input.shape[-1]
    listed = jnp.cumprod(target != -1, axis=-1).astype(bool)  # before the first -1
    label = jnp.where(listed, target, 0)
    one_hot = (label[..., :, None] == jnp.arange(classes)) & listed[..., :, None]
    is_target = jnp.any(one_hot, axis=-2)
    target_score = jnp.take_along_axis(input, label, axis=-1)
    z = 1 - target_score[..., :, None] + input[..., None, :]  # [..., listed j, class i]
    keep = listed[..., :, None] & ~is_target[..., None, :]
    loss = jnp.sum(jnp.where(keep, _positive_part(z), 0), axis=(-2, -1)) / classes
    return common.reduce_loss(loss, reduction)


def multi_margin_loss(
    input: Any,
    target: Any,
    p: int = 1,
    margin: Any = 1.0,
    weight: Any = None,
    reduction: common.Reduction = "mean",
) -> jax.Array:
    r"""Multi-class hinge loss, as ``torch.nn.functional.multi_margin_loss``.

    .. math::
      \ell_n = \frac1C \sum_{i \ne y_n} w_{y_n} \max(0,\ \text{margin} - x_{n, y_n} + x_{n, i})^p

    Args:
      input: ``(N, C)`` scores (or ``(C,)``).
      target: ``(N,)`` integer labels (a scalar for ``(C,)``).
      p: static; 1 or 2.
      margin: the margin (may be traced).
      weight: optional ``(C,)`` class weights.
      reduction: static; ``'mean'``, ``'sum'`` or ``'none'``.

    Returns:
      The reduced loss, or the per-sample loss for ``reduction='none'``.

    References:
      ``torch.nn.functional.multi_margin_loss`` (torch 2.13).
    """
    common.check_reduction(reduction)
    check(p in (1, 2), f"multi_margin_loss: only p == 1 and p == 2 supported, got p={p}")
    input = common.as_float(input)
    target = _labels(target)
    check(
        input.ndim in (1, 2) and target.shape == input.shape[:-1],
        f"multi_margin_loss: expected (N, C) input with (N,) target or (C,) input with a "
        f"scalar target, got input {input.shape} and target {target.shape}",
    )
    classes = input.shape[-1]
    if weight is not None:
        weight = jnp.asarray(weight, input.dtype)
        check(
            weight.shape == (classes,),
            f"multi_margin_loss: weight shape {weight.shape} must be ({classes},)",
        )
    target_score = jnp.take_along_axis(input, target[..., None], axis=-1)
    z = _positive_part(margin - target_score + input)
    h = z if p == 1 else z * z
    if weight is not None:
        h = h * weight[target][..., None]
    others = target[..., None] != jnp.arange(classes)
    loss = jnp.sum(jnp.where(others, h, 0), axis=-1) / classes
    return common.reduce_loss(loss, reduction)


# --------------------------------------------------------------------------- triplet


def pairwise_distance(
    x1: Any, x2: Any, p: Any = 2.0, eps: Any = 1e-6, keepdim: bool = False
) -> jax.Array:
    r"""``torch.nn.functional.pairwise_distance``: :math:`\|x_1 - x_2 + \text{eps}\|_p` over the last axis.

    Args:
      x1, x2: arrays broadcasting together.
      p: static norm order ``> 0``, or ``inf``.
      eps: added to the difference (may be traced).
      keepdim: static; keep the reduced axis.

    Returns:
      The distances.
    """
    x1, x2 = jnp.asarray(x1), jnp.asarray(x2)
    dtype = jnp.result_type(x1, x2, float)
    d = jnp.abs(x1.astype(dtype) - x2.astype(dtype) + eps)
    if math.isinf(p):
        return jnp.max(d, axis=-1, keepdims=keepdim)
    if p == 1:
        return jnp.sum(d, axis=-1, keepdims=keepdim)
    if p == 2:
        return jnp.sqrt(jnp.sum(d * d, axis=-1, keepdims=keepdim))
    return jnp.sum(d**p, axis=-1, keepdims=keepdim) ** (1.0 / p)


def _triplet(
    distance: Callable[[jax.Array, jax.Array], jax.Array],
    anchor: Any,
    positive: Any,
    negative: Any,
    margin: Any,
    swap: bool,
    reduction: str,
) -> jax.Array:
    anchor, positive, negative = (common.as_float(x) for x in (anchor, positive, negative))
    check(
        anchor.ndim == positive.ndim == negative.ndim,
        f"triplet_margin_loss: anchor, positive and negative must have the same number of "
        f"dimensions, got {anchor.shape}, {positive.shape} and {negative.shape}",
    )
    dist_pos = distance(anchor, positive)
    dist_neg = distance(anchor, negative)
    if swap:
        dist_neg = jnp.minimum(dist_neg, distance(positive, negative))
    return common.reduce_loss(_hinge(margin + dist_pos - dist_neg), reduction)


def triplet_margin_loss(
    anchor: Any,
    positive: Any,
    negative: Any,
    margin: Any = 1.0,
    p: Any = 2.0,
    eps: Any = 1e-6,
    swap: bool = False,
    reduction: common.Reduction = "mean",
) -> jax.Array:
    r"""Triplet margin loss, as ``torch.nn.functional.triplet_margin_loss``.

    .. math::
      \ell_n = \max(0,\ \text{margin} + d(a_n, p_n) - d(a_n, n_n)), \qquad
      d(x, y) = \|x - y + \text{eps}\|_p

    With ``swap`` (Balntas et al., BMVC 2016), :math:`d(a_n, n_n)` becomes
    :math:`\min(d(a_n, n_n), d(p_n, n_n))`.

    Args:
      anchor, positive, negative: ``(N, D)`` embeddings (or ``(D,)``).
      margin: the margin (may be traced).
      p: static norm order ``> 0``.
      eps: added to each difference (may be traced).
      swap: static; use the distance swap.
      reduction: static; ``'mean'``, ``'sum'`` or ``'none'``.

    Returns:
      The reduced loss, or the per-triplet loss for ``reduction='none'``.

    References:
      ``torch.nn.functional.triplet_margin_loss`` (torch 2.13).
    """
    common.check_reduction(reduction)
    check(p > 0, f"triplet_margin_loss: p must be > 0, got {p}")

    def distance(x: jax.Array, y: jax.Array) -> jax.Array:
        return pairwise_distance(x, y, p, eps)

    return _triplet(distance, anchor, positive, negative, margin, swap, reduction)


def triplet_margin_with_distance_loss(
    anchor: Any,
    positive: Any,
    negative: Any,
    *,
    distance_function: Callable[[jax.Array, jax.Array], jax.Array] | None = None,
    margin: Any = 1.0,
    swap: bool = False,
    reduction: common.Reduction = "mean",
) -> jax.Array:
    r"""Triplet loss with any distance, as ``torch.nn.functional.triplet_margin_with_distance_loss``.

    :func:`triplet_margin_loss` with :math:`d` = ``distance_function`` (default
    :func:`pairwise_distance`, as torch's ``torch.pairwise_distance``).

    Args:
      anchor, positive, negative: embeddings.
      distance_function: ``(x, y) -> distances`` (a JAX function).
      margin: must be ``> 0`` (torch's rule).
      swap: static; use the distance swap.
      reduction: static; ``'mean'``, ``'sum'`` or ``'none'``.

    Returns:
      The reduced loss, or the per-triplet loss for ``reduction='none'``.

    References:
      ``torch.nn.functional.triplet_margin_with_distance_loss`` (torch 2.13).
    """
    common.check_reduction(reduction)
    if _is_concrete(margin):
        check(bool(np.all(np.asarray(margin) > 0)), f"margin must be greater than 0, got {margin}")
    distance = pairwise_distance if distance_function is None else distance_function
    return _triplet(distance, anchor, positive, negative, margin, swap, reduction)
