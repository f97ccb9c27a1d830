r"""Two criteria as pure functions: class NLL on log-probabilities, and MSE.

Both reduce by the mean, as torch's default ``reduction="mean"`` does. They are plain
functions, not modules: a loss has no state, and ``jax.grad`` differentiates it directly
(what a hand-written ``Criterion.backward`` computes, ``jax.grad`` gives).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

__all__ = ["class_nll_loss", "mse_loss"]


def class_nll_loss(log_probs: jax.Array, labels: jax.Array) -> jax.Array:
    r"""Negative log-likelihood of integer labels under log-probabilities, averaged.

    .. math::
      \ell = -\frac1N \sum_{i=1}^N \log p_{i, y_i}

    With ``log_probs = log_softmax(logits)`` this is the cross-entropy,
    ``optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()``.

    Args:
      log_probs: ``(N, K)`` log-probabilities (a :class:`~jaxopt_adv.models.LogSoftmax`
        output).
      labels: ``(N,)`` integer classes in ``[0, K)``.

    Returns:
      The scalar mean NLL.

    Example:
      >>> import jax.numpy as jnp
      >>> log_probs = jnp.log(jnp.array([[0.5, 0.5], [0.25, 0.75]]))
      >>> class_nll_loss(log_probs, jnp.array([0, 1]))  # -(log .5 + log .75) / 2
      Array(0.4904146, dtype=float32)

    References:
      mirrors ``torch.nn.functional.nll_loss`` (``reduction="mean"``, no weights).
    """
    if log_probs.ndim != 2 or labels.shape != log_probs.shape[:1]:
        raise ValueError(
            f"expected log_probs (N, K) and labels (N,), got {log_probs.shape} and {labels.shape}"
        )
    picked = jnp.take_along_axis(log_probs, labels[:, None].astype(jnp.int32), axis=1)
    return -jnp.mean(picked)


def mse_loss(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    r"""Mean squared error over all elements.

    .. math::
      \ell = \frac1M \sum_{j=1}^M (\hat y_j - y_j)^2

    Args:
      predictions: any shape.
      targets: the same shape as ``predictions``.

    Returns:
      The scalar mean of the squared differences.

    Example:
      >>> import jax.numpy as jnp
      >>> mse_loss(jnp.array([1.0, 2.0]), jnp.array([0.0, 0.0]))
      Array(2.5, dtype=float32)

    References:
      mirrors ``torch.nn.functional.mse_loss`` (``reduction="mean"``).
    """
    if predictions.shape != targets.shape:
        raise ValueError(
            f"predictions {predictions.shape} and targets {targets.shape} differ in shape"
        )
    return jnp.mean(jnp.square(predictions - targets))
