"""Losses that reproduce ``torch.nn.functional`` value for value and gradient for gradient.

Each function has the torch name, argument names, defaults and ``reduction`` rules
(``'mean'``, ``'sum'``, ``'none'``; ``kl_div`` also takes ``'batchmean'``), and is a pure
JAX function: differentiable with ``jax.grad`` and jit-able (``reduction`` and
``log_target`` are static; ``beta``, ``delta``, ``label_smoothing``, ``ignore_index`` and
the weights may be traced). Where plain autodiff of the formula would not give torch's
gradient (the ``l1`` tie, the clamped binary cross-entropy), the torch rule is written in.
optax's losses are per-element and leave the reduction to the caller; the torch-specific
rules (weighted means, ``ignore_index``, label smoothing with weights, ``pos_weight``) are
here. As in torch, a ``'mean'`` over class targets that are all ignored is ``0 / 0 = nan``.

Differences from torch, all deliberate:

- Shapes are checked when the function is called: the element-wise losses raise
  ``ValueError`` when ``target`` and ``input`` shapes differ (torch broadcasts some of
  them with a warning).
- Checks that need the values (probabilities in ``[0, 1]``, class labels in range) cannot
  run under ``jit``: a bad value gives ``nan`` instead of torch's error.
- Gradients with respect to ``weight`` / ``pos_weight`` are those of the forward formula
  (torch refuses to compute them).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax.scipy.special import xlogy

from jaxopt_adv._common import (
    check,
    check_interval,
    check_nonnegative,
    is_concrete_number,
    is_static_zero,
)
from jaxopt_adv.torch._loss_common import (
    BCE_EPSILON,
    Reduction,
    abs_with_zero_slope,
    as_float,
    check_reduction,
    elementwise_weight,
    float_pair,
    reduce_loss,
)

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "huber_loss",
    "kl_div",
    "l1_loss",
    "mse_loss",
    "nll_loss",
    "smooth_l1_loss",
]

_LOG_FLOOR = -100.0  # torch clamps each log of the binary cross-entropy at -100


# ----------------------------------------------------------------- regression losses


def mse_loss(input: Any, target: Any, reduction: Reduction = "mean") -> jax.Array:
    r"""Mean squared error, as ``torch.nn.functional.mse_loss``.

    .. math::
      \ell_i = (x_i - y_i)^2

    Args:
      input: predictions :math:`x`.
      target: targets :math:`y`, same shape as ``input`` (gradients flow to it too).
      reduction: static; ``'mean'`` (over all elements), ``'sum'`` or ``'none'``.

    Returns:
      The reduced loss, or the per-element loss for ``reduction='none'``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch.functional import mse_loss
      >>> float(mse_loss(jnp.array([1.0, 2.0]), jnp.array([0.0, 0.0])))
      2.5

    References:
      ``torch.nn.functional.mse_loss`` (torch 2.13).

    Warning:
      torch broadcasts ``input`` and ``target`` of different shapes (with a warning);
      this raises ``ValueError``. ``optax.losses.l2_loss`` is half of this loss.
    """
    check_reduction(reduction)
    input, target = float_pair(input, target)
    return reduce_loss(jnp.square(input - target), reduction)


def l1_loss(input: Any, target: Any, reduction: Reduction = "mean") -> jax.Array:
    r"""Mean absolute error, as ``torch.nn.functional.l1_loss``.

    .. math::
      \ell_i = |x_i - y_i|, \qquad \partial \ell_i / \partial x_i = \operatorname{sign}(x_i - y_i)

    The slope at a tie :math:`x_i = y_i` is 0, as in torch (``jax.grad(jnp.abs)(0.0)`` is 1).

    Args:
      input: predictions :math:`x`.
      target: targets :math:`y`, same shape as ``input`` (gradients flow to it too).
      reduction: static; ``'mean'``, ``'sum'`` or ``'none'``.

    Returns:
      The reduced loss, or the per-element loss for ``reduction='none'``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxopt_adv.torch.functional import l1_loss
      >>> x, y = jnp.array([1.0, 2.0]), jnp.array([1.0, 0.0])
      >>> float(l1_loss(x, y))
      1.0
      >>> jax.grad(l1_loss)(x, y)
      Array([0. , 0.5], dtype=float32)

    References:
      ``torch.nn.functional.l1_loss`` (torch 2.13).

    Warning:
      Shapes must match (torch broadcasts with a warning).
    """
    check_reduction(reduction)
    input, target = float_pair(input, target)
    return reduce_loss(abs_with_zero_slope(input - target), reduction)


def smooth_l1_loss(
    input: Any, target: Any, reduction: Reduction = "mean", beta: Any = 1.0
) -> jax.Array:
    r"""Smooth L1 loss, as ``torch.nn.functional.smooth_l1_loss``.

    .. math::
      \ell_i = \begin{cases} 0.5\, d_i^2 / \beta & |d_i| < \beta \\
      |d_i| - 0.5\, \beta & \text{otherwise} \end{cases}, \qquad d_i = x_i - y_i

    ``beta = 0`` is the L1 loss (torch switches to ``l1_loss``; the formula above already
    gives it, with slope 0 at ties). It equals ``huber_loss(delta=beta) / beta``.

    Args:
      input: predictions :math:`x`.
      target: targets :math:`y`, same shape as ``input`` (gradients flow to it too).
      reduction: static; ``'mean'``, ``'sum'`` or ``'none'``.
      beta: threshold :math:`\beta \ge 0` between the quadratic and linear zones; may be
        traced.

    Returns:
      The reduced loss, or the per-element loss for ``reduction='none'``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch.functional import smooth_l1_loss
      >>> x, y = jnp.array([0.5, 3.0]), jnp.zeros(2)
      >>> smooth_l1_loss(x, y, reduction="none")
      Array([0.125, 2.5  ], dtype=float32)

    References:
      Girshick, "Fast R-CNN", ICCV 2015; mirrors ``torch.nn.functional.smooth_l1_loss``
      (torch 2.13).

    Warning:
      ``optax.losses.huber_loss(delta=beta)`` is ``beta`` times this loss, and ``nan`` at
      ``beta = 0`` once divided by ``beta``.
    """
    check_reduction(reduction)
    check_nonnegative(beta, "beta", allow_inf=True)  # torch accepts inf
    input, target = float_pair(input, target)
    d = input - target
    abs_d = abs_with_zero_slope(d)
    # A safe divisor keeps the unused quadratic branch (and its gradient) finite at beta=0.
    safe_beta = jnp.where(beta > 0, beta, 1.0).astype(d.dtype)
    loss = jnp.where(abs_d < beta, 0.5 * d * d / safe_beta, abs_d - 0.5 * beta)
    return reduce_loss(loss.astype(d.dtype), reduction)


def huber_loss(
    input: Any, target: Any, reduction: Reduction = "mean", delta: Any = 1.0
) -> jax.Array:
    r"""Huber loss, as ``torch.nn.functional.huber_loss``.

    .. math::
      \ell_i = \begin{cases} 0.5\, d_i^2 & |d_i| < \delta \\
      \delta\, (|d_i| - 0.5\, \delta) & \text{otherwise} \end{cases}, \qquad d_i = x_i - y_i

    Args:
      input: predictions :math:`x`.
      target: targets :math:`y`, same shape as ``input`` (gradients flow to it too).
      reduction: static; ``'mean'``, ``'sum'`` or ``'none'``.
      delta: threshold :math:`\delta > 0`; may be traced.

    Returns:
      The reduced loss, or the per-element loss for ``reduction='none'``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch.functional import huber_loss
      >>> x, y = jnp.array([0.5, 3.0]), jnp.zeros(2)
      >>> huber_loss(x, y, reduction="none", delta=2.0)
      Array([0.125, 4.   ], dtype=float32)

    References:
      Huber, "Robust Estimation of a Location Parameter", Ann. Math. Statist. 1964;
      mirrors ``torch.nn.functional.huber_loss`` (torch 2.13).
    """
    check_reduction(reduction)
    check_interval(delta, "delta", 0.0, math.inf, low_open=True)
    input, target = float_pair(input, target)
    d = input - target
    abs_d = jnp.abs(d)  # its slope at 0 is never used: the quadratic branch holds there
    loss = jnp.where(abs_d < delta, 0.5 * d * d, delta * (abs_d - 0.5 * delta))
    return reduce_loss(loss.astype(d.dtype), reduction)


# ----------------------------------------------------------------- binary losses


def _log_one_minus(p: jax.Array) -> jax.Array:
    """``log(1 - p)`` as accurately as torch's ``log1p(-p)``.

    XLA's float64 ``log1p`` is up to 2.7e-14 off (relative) for arguments in
    ``(-0.5, -0.3)``; from ``p = 0.25`` on, ``1 - p`` rounds by at most 1.1e-16 (it is exact
    from 0.5), so ``log(1 - p)`` is correctly rounded to a few ulps there.
    """
    return jnp.where(p < 0.25, jnp.log1p(-p), jnp.log(1 - p))


@jax.custom_vjp
def _clamped_binary_cross_entropy(p: jax.Array, y: jax.Array) -> jax.Array:
    """``-(y max(log p, -100) + (1 - y) max(log1p(-p), -100))``, element-wise."""
    log_p = jnp.maximum(jnp.log(p), _LOG_FLOOR)
    log_1mp = jnp.maximum(_log_one_minus(p), _LOG_FLOOR)
    return -(y * log_p + (1 - y) * log_1mp)


def _clamped_bce_fwd(p: jax.Array, y: jax.Array) -> tuple[jax.Array, tuple]:
    return _clamped_binary_cross_entropy(p, y), (p, y)


def _clamped_bce_bwd(residuals: tuple, g: jax.Array) -> tuple[jax.Array, jax.Array]:
    p, y = residuals
    # torch's slope, not the clamped formula's: finite (+-1e12 at most) at p = 0 and 1.
    floor = jnp.asarray(BCE_EPSILON, p.dtype)
    grad_p = g * (p - y) / jnp.maximum(p * (1 - p), floor)
    # torch's target slope is -logit(p), unclamped: +inf at p = 0, -inf at p = 1.
    grad_y = -g * jnp.log(p / (1 - p))
    return grad_p, grad_y


_clamped_binary_cross_entropy.defvjp(_clamped_bce_fwd, _clamped_bce_bwd)


def binary_cross_entropy(
    input: Any, target: Any, weight: Any = None, reduction: Reduction = "mean"
) -> jax.Array:
    r"""Binary cross-entropy on probabilities, as ``torch.nn.functional.binary_cross_entropy``.

    .. math::
      \ell_i = -w_i \left[ y_i \max(\log p_i, -100) + (1 - y_i) \max(\operatorname{log1p}(-p_i), -100) \right]

    with torch's gradients (a custom VJP), not those of the clamped formula:

    .. math::
      \frac{\partial \ell_i}{\partial p_i} = w_i \frac{p_i - y_i}{\max(p_i (1 - p_i), \epsilon)},
      \qquad \frac{\partial \ell_i}{\partial y_i} = -w_i \log \frac{p_i}{1 - p_i}

    where :math:`\epsilon` is the float32 number nearest ``1e-12`` (9.99999996e-13), in
    float64 too. So :math:`p \in \{0, 1\}` gives a finite loss (100 per element at most)
    and a finite input gradient, while the target gradient is infinite there, as in torch.

    Args:
      input: probabilities :math:`p \in [0, 1]`.
      target: targets :math:`y` (usually in ``[0, 1]``), same shape as ``input``.
      weight: optional rescaling :math:`w`, broadcastable to ``input``'s shape.
      reduction: static; ``'mean'``, ``'sum'`` or ``'none'``.

    Returns:
      The reduced loss, or the per-element loss for ``reduction='none'``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from jaxopt_adv.torch.functional import binary_cross_entropy
      >>> p, y = jnp.array([0.0, 0.5]), jnp.array([1.0, 1.0])
      >>> binary_cross_entropy(p, y, reduction="none")
      Array([100.      ,   0.693147], dtype=float32)
      >>> jax.grad(binary_cross_entropy)(p, y)
      Array([-5.e+11, -1.e+00], dtype=float32)

    References:
      ``torch.nn.functional.binary_cross_entropy`` (torch 2.13, ATen's CPU kernels).

    Warning:
      torch raises when a probability is outside ``[0, 1]``; a value check cannot run
      under ``jit``, so this returns ``nan`` there. ``jax.grad`` of the clamped formula is
      ``nan`` at ``p in {0, 1}``. Gradients with respect to ``weight`` (the unweighted
      loss) exist here; torch refuses to compute them.
    """
    check_reduction(reduction)
    input, target = float_pair(input, target)
    loss = _clamped_binary_cross_entropy(input, target)
    weight = elementwise_weight(weight, input.shape, "weight", input.dtype)
    if weight is not None:
        loss = weight * loss
    return reduce_loss(loss, reduction)


def binary_cross_entropy_with_logits(
    input: Any,
    target: Any,
    weight: Any = None,
    reduction: Reduction = "mean",
    pos_weight: Any = None,
) -> jax.Array:
    r"""Sigmoid + binary cross-entropy, as ``torch.nn.functional.binary_cross_entropy_with_logits``.

    .. math::
      \ell_i = w_i \left[ (1 - y_i)\, x_i - (1 + (q_c - 1)\, y_i) \log \sigma(x_i) \right]
      = -w_i \left[ q_c\, y_i \log \sigma(x_i) + (1 - y_i) \log \sigma(-x_i) \right]

    with :math:`\log \sigma` evaluated stably (logits of +-1000 are fine) and
    :math:`q_c` the ``pos_weight`` of the element's class (the last axis).

    Args:
      input: logits :math:`x`.
      target: targets :math:`y` (usually in ``[0, 1]``), same shape as ``input``
        (gradients flow to it too).
      weight: optional rescaling :math:`w`, broadcastable to ``input``'s shape.
      reduction: static; ``'mean'``, ``'sum'`` or ``'none'``.
      pos_weight: optional weight :math:`q` of the positive term, broadcastable to
        ``input``'s shape (a vector of length ``input.shape[-1]`` weighs classes).

    Returns:
      The reduced loss, or the per-element loss for ``reduction='none'``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch.functional import binary_cross_entropy_with_logits
      >>> x, y = jnp.array([0.0, 2.0]), jnp.array([1.0, 0.0])
      >>> binary_cross_entropy_with_logits(x, y, reduction="none", pos_weight=jnp.array(3.0))
      Array([2.0794415, 2.126928 ], dtype=float32)

    References:
      ``torch.nn.functional.binary_cross_entropy_with_logits`` (torch 2.13).

    Warning:
      ``optax.losses.sigmoid_binary_cross_entropy`` matches without ``pos_weight`` but has
      no such argument. Gradients with respect to ``weight`` and ``pos_weight`` exist here;
      torch refuses to compute them.
    """
    check_reduction(reduction)
    input, target = float_pair(input, target)
    weight = elementwise_weight(weight, input.shape, "weight", input.dtype)
    pos_weight = elementwise_weight(pos_weight, input.shape, "pos_weight", input.dtype)
    log_sigmoid = jax.nn.log_sigmoid(input)  # stable: softplus through logaddexp
    if pos_weight is not None:
        log_sigmoid = (1 + (pos_weight - 1) * target) * log_sigmoid
    loss = (1 - target) * input - log_sigmoid
    if weight is not None:
        loss = weight * loss
    return reduce_loss(loss, reduction)


# --------------------------------------------------------------- classification losses


def _class_weight(weight: Any, num_classes: int, dtype: Any) -> Any:
    if weight is None:
        return None
    weight = jnp.asarray(weight, dtype)
    check(
        weight.shape == (num_classes,),
        f"weight shape {weight.shape} must be ({num_classes},): one weight per class",
    )
    return weight


def _rows(x: jax.Array) -> jax.Array:
    """``(N, C, d1, ...)`` -> ``(N d1 ..., C)``: one row of class scores per element.

    ``(C,)`` (torch's unbatched input) becomes one row. Working on rows keeps every
    class-axis operation two-dimensional, whatever the input's rank.
    """
    if x.ndim == 1:
        return x[None]
    return jnp.moveaxis(x, 1, -1).reshape(-1, x.shape[1])


def _element_shape(input: jax.Array) -> tuple[int, ...]:
    """Shape of the per-element loss: ``input``'s shape without the class axis."""
    return input.shape[:1] + input.shape[2:] if input.ndim > 1 else ()


def _check_class_target(input: jax.Array, target: jax.Array) -> None:
    """An integer target of shape ``(N, d1, ...)`` for ``(N, C, d1, ...)`` (``()`` for ``(C,)``)."""
    check(input.ndim >= 1, f"input must have a class axis; got shape {input.shape}")
    expected = _element_shape(input)
    check(
        jnp.issubdtype(target.dtype, jnp.integer),
        f"class-index target must have an integer dtype; got {target.dtype}",
    )
    check(
        target.shape == expected,
        f"target shape {target.shape} must be {expected} for input shape {input.shape} "
        "(class axis 1)",
    )


def _pick_classes(
    log_probs: jax.Array, target: jax.Array, weight: Any, ignore_index: Any
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Weighted negative log-likelihood per row, its class weight, and the kept mask.

    ``log_probs`` is ``(M, C)``, ``target`` ``(M,)``. Ignored rows get loss 0 and weight
    0; a label outside ``[0, C)`` that is not ``ignore_index`` gets ``nan`` (torch raises
    an ``IndexError``). The label is selected with a one-hot mask and ``where`` (exact,
    and safe next to ``-inf`` log-probabilities of other classes).
    """
    keep = target != ignore_index
    one_hot = jnp.where(keep, target, -1)[:, None] == jnp.arange(log_probs.shape[1])
    bad_label = keep & ~jnp.any(one_hot, axis=1)
    picked = jnp.sum(jnp.where(one_hot, log_probs, 0), axis=1)
    picked = jnp.where(bad_label, jnp.nan, picked)
    per_class = jnp.ones((), log_probs.dtype) if weight is None else weight
    class_weight = jnp.sum(jnp.where(one_hot, per_class, 0), axis=1)  # 0 where ignored
    return -(class_weight * picked), class_weight, keep


def _class_reduce(
    loss: jax.Array, divisor: Any, reduction: str, shape: tuple[int, ...]
) -> jax.Array:
    """Sum of the per-row ``loss``, divided by ``divisor`` for ``'mean'``; or reshaped."""
    if reduction == "mean":
        return jnp.sum(loss) / divisor
    if reduction == "sum":
        return jnp.sum(loss)
    return loss.reshape(shape)


def nll_loss(
    input: Any,
    target: Any,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
) -> jax.Array:
    r"""Negative log-likelihood, as ``torch.nn.functional.nll_loss``.

    .. math::
      \ell_i = -w_{y_i}\, x_{i, y_i}\ \ (0 \text{ where } y_i = \text{ignore\_index}),
      \qquad \text{mean} = \sum_i \ell_i \Big/ \sum_{i\ \text{kept}} w_{y_i}

    Args:
      input: log-probabilities of shape ``(N, C)``, ``(N, C, d1, d2, ...)`` (class axis
        1) or unbatched ``(C,)``.
      target: integer class indices of shape ``(N,)``, ``(N, d1, d2, ...)`` or ``()``.
      weight: optional class weights of shape ``(C,)``.
      ignore_index: static or traced label whose elements are left out of the loss and
        of the mean's divisor.
      reduction: static; ``'mean'`` (the weighted mean above), ``'sum'`` or ``'none'``.

    Returns:
      The reduced loss, or the per-element loss (shape of ``target``) for
      ``reduction='none'``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch.functional import nll_loss
      >>> log_probs = jnp.log(jnp.array([[0.5, 0.5], [0.2, 0.8]]))
      >>> float(nll_loss(log_probs, jnp.array([0, 1]), weight=jnp.array([1.0, 3.0])))
      0.3406
      >>> float(nll_loss(log_probs, jnp.array([-100, -100])))  # all ignored: 0 / 0
      nan

    References:
      ``torch.nn.functional.nll_loss`` (torch 2.13).

    Warning:
      With ``reduction='mean'`` and every element ignored, the loss is ``0 / 0 = nan``
      (as in torch; the gradient is 0). A label outside ``[0, C)`` gives ``nan`` instead
      of torch's ``IndexError``.
    """
    check_reduction(reduction)
    input, target = as_float(input), jnp.asarray(target)
    _check_class_target(input, target)
    rows = _rows(input)
    weight = _class_weight(weight, rows.shape[1], input.dtype)
    nll, class_weight, _ = _pick_classes(rows, target.reshape(-1), weight, ignore_index)
    return _class_reduce(nll, jnp.sum(class_weight), reduction, _element_shape(input))


def cross_entropy(
    input: Any,
    target: Any,
    weight: Any = None,
    ignore_index: int = -100,
    reduction: Reduction = "mean",
    label_smoothing: Any = 0.0,
) -> jax.Array:
    r"""Softmax cross-entropy, as ``torch.nn.functional.cross_entropy``.

    With :math:`\log p_{ic}` the log-softmax of ``input`` over the class axis (axis 1, or
    0 for an unbatched ``(C,)`` input), :math:`C` classes and :math:`\varepsilon` the
    label smoothing:

    Class-index targets:

    .. math::
      \ell_i = (1 - \varepsilon)\, (-w_{y_i} \log p_{i y_i})
      + \frac{\varepsilon}{C} \sum_c (-w_c \log p_{ic}), \qquad
      \text{mean} = \sum_i \ell_i \Big/ \sum_{i\ \text{kept}} w_{y_i}

    with :math:`\ell_i = 0` for ignored elements (also their smoothing term) and
    :math:`w = 1` without ``weight``, so the unweighted mean is over the kept elements.

    Probability targets (a float ``target`` of ``input``'s shape):

    .. math::
      \ell_i = -\sum_c w_c\, \tilde y_{ic} \log p_{ic}, \qquad
      \tilde y = (1 - \varepsilon)\, y + \varepsilon / C, \qquad
      \text{mean} = \sum_i \ell_i / N

    where :math:`N` counts the batch elements (``input.size / C``), whatever the weights.

    Args:
      input: logits of shape ``(N, C)``, ``(N, C, d1, d2, ...)`` or unbatched ``(C,)``.
      target: integer class indices of shape ``(N,)``, ``(N, d1, d2, ...)`` or ``()``;
        or float class probabilities of ``input``'s shape (gradients flow to them).
      weight: optional class weights of shape ``(C,)``.
      ignore_index: label left out of the loss and of the mean's divisor (class-index
        targets only; torch rejects ``ignore_index >= 0`` with probability targets).
      reduction: static; ``'mean'``, ``'sum'`` or ``'none'``.
      label_smoothing: :math:`\varepsilon \in [0, 1]`; may be traced.

    Returns:
      The reduced loss, or the per-element loss (``input``'s shape without the class
      axis) for ``reduction='none'``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch.functional import cross_entropy
      >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]])
      >>> float(cross_entropy(logits, jnp.array([0, 2]), label_smoothing=0.1))
      0.3276
      >>> float(cross_entropy(logits, jnp.array([0, -100]), weight=jnp.array([2.0, 1.0, 1.0])))
      0.1698

    References:
      Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR
      2016 (label smoothing); mirrors ``torch.nn.functional.cross_entropy`` (torch 2.13).

    Warning:
      With ``reduction='mean'`` and every element ignored, the loss is ``0 / 0 = nan``
      (as in torch; the gradient is 0). ``optax.losses.softmax_cross_entropy_with_integer_labels``
      gives ``nan`` for the label -100 and knows no class weights; a plain mean of
      weighted losses is not torch's weighted mean. A class label outside ``[0, C)``
      gives ``nan`` instead of torch's ``IndexError``.
    """
    check_reduction(reduction)
    check_interval(label_smoothing, "label_smoothing", 0.0, 1.0)
    input, target = as_float(input), jnp.asarray(target)
    check(input.ndim >= 1, f"input must have a class axis; got shape {input.shape}")
    probability_target = jnp.issubdtype(target.dtype, jnp.floating)
    if probability_target:
        check(
            target.shape == input.shape,
            f"probability target shape {target.shape} must equal input shape {input.shape}",
        )
        if is_concrete_number(ignore_index):
            check(
                ignore_index < 0,
                f"ignore_index={ignore_index} is not supported for probability targets "
                "(torch rejects ignore_index >= 0 for floating point targets)",
            )
    else:
        _check_class_target(input, target)
    shape = _element_shape(input)
    log_probs = jax.nn.log_softmax(_rows(input), axis=1)  # (M, C)
    num_classes = log_probs.shape[1]
    weight = _class_weight(weight, num_classes, input.dtype)

    if probability_target:
        target = _rows(target).astype(log_probs.dtype)
        target = target * (1 - label_smoothing) + label_smoothing / num_classes
        weighted = target * log_probs if weight is None else target * weight * log_probs
        loss = -jnp.sum(weighted, axis=1)
        return _class_reduce(loss, loss.size, reduction, shape)  # mean: over the M elements

    nll, class_weight, keep = _pick_classes(log_probs, target.reshape(-1), weight, ignore_index)
    total_weight = jnp.sum(class_weight)
    if is_static_zero(label_smoothing):
        return _class_reduce(nll, total_weight, reduction, shape)
    all_classes = log_probs if weight is None else weight * log_probs
    smooth = jnp.where(keep, -jnp.sum(all_classes, axis=1), 0)
    loss = (1 - label_smoothing) * nll + (label_smoothing / num_classes) * smooth
    # A traced smoothing of 0 must not turn an infinite smoothing term into nan.
    loss = jnp.where(label_smoothing == 0, nll, loss)
    return _class_reduce(loss, total_weight, reduction, shape)


def kl_div(
    input: Any,
    target: Any,
    reduction: Literal["mean", "batchmean", "sum", "none"] = "mean",
    log_target: bool = False,
) -> jax.Array:
    r"""Kullback-Leibler divergence, as ``torch.nn.functional.kl_div``.

    ``input`` holds log-probabilities :math:`x`; ``target`` holds probabilities :math:`y`
    (or log-probabilities :math:`z` with ``log_target=True``):

    .. math::
      \ell_i = \operatorname{xlogy}(y_i, y_i) - y_i x_i \quad\text{or}\quad
      \ell_i = e^{z_i} (z_i - x_i)

    so an element with :math:`y_i = 0` adds 0 (torch's convention), and a negative
    :math:`y_i` gives ``nan``. Gradients match torch's, including its target gradient
    at :math:`y_i = 0`, which is ``nan`` (the ``0 / 0`` of the ``xlogy`` derivative).

    Args:
      input: log-probabilities :math:`x`.
      target: probabilities :math:`y` (or log-probabilities :math:`z`), same shape as
        ``input`` (gradients flow to it too).
      reduction: static; ``'mean'`` (over **all elements**, torch's default),
        ``'batchmean'`` (sum divided by ``input.shape[0]``, the KL divergence per sample;
        the plain sum for a 0-d input), ``'sum'`` or ``'none'``.
      log_target: static; whether ``target`` holds log-probabilities.

    Returns:
      The reduced loss, or the per-element loss for ``reduction='none'``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch.functional import kl_div
      >>> log_q = jnp.log(jnp.array([[0.5, 0.5], [0.9, 0.1]]))
      >>> p = jnp.array([[1.0, 0.0], [0.5, 0.5]])
      >>> float(kl_div(log_q, p, reduction="batchmean"))
      0.6020

    References:
      Kullback and Leibler, "On Information and Sufficiency", Ann. Math. Statist. 1951;
      mirrors ``torch.nn.functional.kl_div`` (torch 2.13).

    Warning:
      ``'mean'`` divides by the number of elements, not the batch size (torch warns about
      it): ``'batchmean'`` is the KL divergence. Shapes must match (torch broadcasts).
    """
    check_reduction(reduction, ("mean", "batchmean", "sum", "none"))
    input, target = float_pair(input, target)
    if log_target:
        loss = jnp.exp(target) * (target - input)
    else:
        loss = xlogy(target, target) - target * input
    if reduction == "batchmean":
        total = jnp.sum(loss)
        return total / input.shape[0] if input.ndim > 0 else total
    return reduce_loss(loss, reduction)
