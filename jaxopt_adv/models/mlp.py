"""The classic MNIST multilayer perceptron (784-512-256-10, ReLU, Dropout) in Flax NNX."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxopt_adv.models.layers import Dropout, Linear, ReLU

__all__ = ["MLP"]


def hidden_stack(
    in_features: int,
    hidden_features: Sequence[int],
    dropout_rate: float | None,
    *,
    param_dtype: jnp.dtype,
    rngs: nnx.Rngs,
) -> tuple[list[nnx.Module], int]:
    """``[Linear, ReLU, Dropout] * len(hidden_features)`` from ``in_features`` inputs
    (without the ``Dropout`` layers when ``dropout_rate`` is ``None``), and its output
    width."""
    layers: list[nnx.Module] = []
    width = in_features
    for hidden in hidden_features:
        layers += [Linear(width, hidden, param_dtype=param_dtype, rngs=rngs), ReLU()]
        if dropout_rate is not None:
            layers.append(Dropout(dropout_rate, rngs=rngs))
        width = hidden
    return layers, width


class MLP(nnx.Module):
    r"""Fully connected classifier: ``[Linear, ReLU, Dropout] * len(hidden), Linear``.

    .. math::
      h_0 = x, \quad h_k = \text{dropout}(\max(0, h_{k-1} W_k + b_k)), \quad
      \text{logits} = h_L W_{L+1} + b_{L+1}

    The layers live in ``self.layers`` (an ``nnx.List``) in the order of the torch
    ``nn.Sequential`` ``layers = Sequential(Linear, ReLU, Dropout, ..., Linear)``, so
    :mod:`jaxopt_adv.interop` pairs them by default and exports the keys
    ``layers.0.weight``, ``layers.3.weight``, ... that such a torch model has.
    The output is logits (no softmax); use
    ``optax.softmax_cross_entropy_with_integer_labels`` or
    :class:`~jaxopt_adv.models.LogSoftmax` + :func:`~jaxopt_adv.models.class_nll_loss`.

    Args:
      in_features: input size (784 for flattened 28x28 MNIST, 64 for 8x8 digits).
      hidden_features: sizes of the hidden layers (default ``(512, 256)``).
      num_classes: number of logits.
      dropout_rate: drop probability after each hidden ReLU (default 0.2); inactive
        after ``model.eval()``.
      param_dtype: dtype of all parameters.
      rngs: ``nnx.Rngs`` for the initial weights and the dropout masks.

    Returns:
      A module mapping ``(N, in_features)`` to ``(N, num_classes)`` logits.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> model = MLP(64, (32,), 10, rngs=nnx.Rngs(0))
      >>> model.eval()
      >>> model(jnp.ones((2, 64))).shape
      (2, 10)

    References:
      the torch twin is :class:`jaxopt_adv.models.torch_twins.TorchMLP`.
    """

    def __init__(
        self,
        in_features: int = 784,
        hidden_features: Sequence[int] = (512, 256),
        num_classes: int = 10,
        *,
        dropout_rate: float = 0.2,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        layers, width = hidden_stack(
            in_features, hidden_features, dropout_rate, param_dtype=param_dtype, rngs=rngs
        )
        layers.append(Linear(width, num_classes, param_dtype=param_dtype, rngs=rngs))
        self.layers = nnx.List(layers)

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = layer(x)
        return x
