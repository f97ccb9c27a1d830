"""A small convolutional classifier, Conv-BN-ReLU-MaxPool blocks then Linear, in Flax NNX."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import nnx

from jaxopt_adv.models.batchnorm import BatchNorm
from jaxopt_adv.models.layers import Conv2d, Flatten, Linear, MaxPool2d, ReLU

__all__ = ["SmallCNN"]


class SmallCNN(nnx.Module):
    r"""``[Conv2d(3x3, pad 1, no bias), BatchNorm, ReLU, MaxPool2d(2)] * k, Flatten, Linear``.

    Input NHWC ``(N, image_size, image_size, in_channels)``; each block keeps the spatial
    size through the convolution and halves it (floor) in the pooling, so the classifier
    sees ``channels[-1] * s * s`` features with ``s = image_size // 2**len(channels)``
    (7 for 28x28 MNIST, 2 for 8x8 digits with two blocks). :class:`Flatten` uses torch's
    ``(c, h, w)`` order, so the classifier's weights are torch's.

    The convolutions have no bias: the BatchNorm after them subtracts the batch mean, so a
    bias there has a zero gradient in exact arithmetic and only rounding noise in practice.
    Adam-like optimizers divide that noise by its own root mean square and turn it into
    real steps, which differ between frameworks (and show up in the running means, i.e.
    in eval mode). ``BatchNorm``'s ``bias`` is the shift.

    The blocks live in ``self.features`` (an ``nnx.List``), then ``self.flatten`` and
    ``self.classifier``, mirroring the torch model with ``features = Sequential(...)``,
    ``flatten = Flatten()``, ``classifier = Linear(...)``
    (:class:`jaxopt_adv.models.torch_twins.TorchSmallCNN`).

    Args:
      in_channels: input channels (1 for grey images).
      channels: output channels of each block, default ``(8, 16)``.
      num_classes: number of logits.
      image_size: height = width of the input (28 or 8 in the project; any size that
        stays >= 1 after the poolings).
      param_dtype: dtype of the parameters and BatchNorm statistics.
      rngs: ``nnx.Rngs`` for the initial weights.

    Returns:
      A module mapping ``(N, H, W, C)`` to ``(N, num_classes)`` logits; in training mode
      (the default; ``model.eval()`` to switch) it updates the BatchNorm statistics.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> model = SmallCNN(1, (4, 8), 10, image_size=8, rngs=nnx.Rngs(0))
      >>> model(jnp.ones((2, 8, 8, 1))).shape
      (2, 10)
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: Sequence[int] = (8, 16),
        num_classes: int = 10,
        *,
        image_size: int = 28,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        size = image_size
        for _ in channels:
            size //= 2
        if not channels or size < 1:
            raise ValueError(
                f"image_size {image_size} is too small for {len(channels)} pooling blocks"
            )
        layers: list[nnx.Module] = []
        width = in_channels
        for out in channels:
            layers += [
                Conv2d(
                    width, out, 3, padding=1, use_bias=False, param_dtype=param_dtype, rngs=rngs
                ),
                BatchNorm(out, param_dtype=param_dtype),
                ReLU(),
                MaxPool2d(2),
            ]
            width = out
        self.features = nnx.List(layers)
        self.flatten = Flatten()
        self.classifier = Linear(
            width * size * size, num_classes, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.features:
            x = layer(x)
        return self.classifier(self.flatten(x))
