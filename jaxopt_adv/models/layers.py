r"""torch's basic layers as Flax NNX modules, with torch's semantics and default initialisation.

Layout: images are **NHWC** (Flax's native layout, what ``jax.lax.conv_general_dilated``
and ``nnx.Conv`` expect), features are the last axis everywhere. A torch image batch
``x_nchw`` is ``x_nchw.transpose(0, 2, 3, 1)`` here; :mod:`jaxopt_adv.interop` converts
the weights (Linear ``(out, in) -> (in, out)``, Conv2d ``OIHW -> HWIO``).

What is ours and what is Flax's:

* :class:`Linear` and :class:`Conv2d` *are* ``nnx.Linear`` / ``nnx.Conv`` (subclasses),
  built with torch's arguments (``stride``, integer ``padding``) and torch's default
  initialisation :math:`\mathcal U(-1/\sqrt{\text{fan\_in}}, 1/\sqrt{\text{fan\_in}})`
  for weight *and* bias (``kaiming_uniform_(a=sqrt(5))`` reduces to that bound), instead
  of Flax's LeCun-normal kernel and zero bias. Their matmuls run at
  ``Precision.HIGHEST``: on accelerators XLA's default float32 precision may use
  TF32/bf16 passes, torch's ``nn.Linear`` does not.
* :class:`Dropout` is ``nnx.Dropout`` itself: it already has torch's semantics (``rate``
  is the drop probability, survivors are scaled by ``1 / (1 - rate)``, identity when
  ``deterministic``). Masks come from JAX's PRNG, so they never equal torch's.
* :class:`MaxPool2d`, :class:`Flatten`, :class:`ReLU`, :class:`Softmax`,
  :class:`LogSoftmax` are small stateless modules, so that they can sit in an
  ``nnx.List`` / ``nnx.Sequential`` next to the others.

Mode switches follow NNX: ``model.train()`` / ``model.eval()`` set ``deterministic``
(Dropout) and ``use_running_average`` (:class:`~jaxopt_adv.models.BatchNorm`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = [
    "Conv2d",
    "Dropout",
    "Flatten",
    "Linear",
    "LogSoftmax",
    "MaxPool2d",
    "ReLU",
    "Softmax",
    "torch_default_init",
]

# torch.nn.Dropout's semantics already; re-exported so that the layer set is complete.
Dropout = nnx.Dropout


def torch_default_init(fan_in: int) -> nnx.Initializer:
    r"""torch's default initialiser of ``nn.Linear`` / ``nn.Conv2d`` weights and biases.

    .. math::
      w \sim \mathcal U\!\left(-\tfrac{1}{\sqrt{\text{fan\_in}}},
      \tfrac{1}{\sqrt{\text{fan\_in}}}\right)

    which is what ``kaiming_uniform_(w, a=sqrt(5))`` (weight) and the bias rule of
    ``reset_parameters`` both reduce to. Same distribution as torch, not the same numbers:
    to reproduce a torch model exactly, import its weights (:mod:`jaxopt_adv.interop`).

    Args:
      fan_in: number of inputs of one output unit (``in_features``, or
        ``in_channels * kh * kw``); ``0`` gives all zeros, as torch does.

    Returns:
      An initializer ``(key, shape, dtype) -> array``.

    Example:
      >>> import jax
      >>> w = torch_default_init(16)(jax.random.key(0), (16, 4))
      >>> bool((abs(w) <= 0.25).all())
      True
    """
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key: jax.Array, shape: Sequence[int], dtype=jnp.float32) -> jax.Array:
        # Drawn flat and reshaped: the same numbers as a shaped draw (threefry counts in
        # row-major order), but XLA:CPU compiles a multi-axis draw up to 20x slower.
        flat = jax.random.uniform(key, (math.prod(shape),), dtype, minval=-bound, maxval=bound)
        return flat.reshape(shape)

    return init


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 0 for v in pair):
        raise ValueError(f"{name} must be a non-negative int or a pair of them, got {value!r}")
    return pair


def _torch_options(
    fan_in: int, use_bias: bool, param_dtype: jnp.dtype, rngs: nnx.Rngs
) -> dict[str, Any]:
    """The keyword arguments of an ``nnx`` layer that make it torch's: the kernel and the
    bias drawn by :func:`torch_default_init` from ``fan_in``, full-precision products."""
    init = torch_default_init(fan_in)
    return {
        "use_bias": use_bias,
        "param_dtype": param_dtype,
        "precision": jax.lax.Precision.HIGHEST,
        "kernel_init": init,
        "bias_init": init,
        "rngs": rngs,
    }


class Linear(nnx.Linear):
    r"""Fully connected layer :math:`y = x W + b` initialised like ``torch.nn.Linear``.

    An ``nnx.Linear`` (kernel ``(in_features, out_features)``, the transpose of torch's
    ``weight``) whose kernel and bias are drawn from :func:`torch_default_init`.

    Args:
      in_features: input size.
      out_features: output size.
      use_bias: static; add the bias :math:`b` (torch ``bias=True``).
      param_dtype: dtype of the parameters (``jnp.float64`` needs jax x64).
      rngs: the ``nnx.Rngs`` that draws the initial parameters.

    Returns:
      A module mapping ``(..., in_features)`` to ``(..., out_features)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> layer = Linear(3, 2, rngs=nnx.Rngs(0))
      >>> layer(jnp.ones((4, 3))).shape
      (4, 2)

    References:
      mirrors ``torch.nn.Linear`` (torch 2.13).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        options = _torch_options(in_features, use_bias, param_dtype, rngs)
        super().__init__(in_features, out_features, **options)


class Conv2d(nnx.Conv):
    r"""2-D convolution on NHWC images, with ``torch.nn.Conv2d``'s arguments and init.

    .. math::
      y[n, i, j, o] = b_o + \sum_{u, v, c} x_{\text{pad}}[n, s i + u, s j + v, c]\,
      K[u, v, c, o]

    (cross-correlation, as in torch). The kernel is HWIO ``(kh, kw, in, out)``; torch's
    ``weight`` is OIHW. ``padding`` pads with zeros on both sides, as torch's integer
    ``padding`` does.

    Args:
      in_channels: input channels :math:`C_{in}`.
      out_channels: output channels :math:`C_{out}`.
      kernel_size: ``k`` or ``(kh, kw)``.
      stride: ``s`` or ``(sh, sw)``, default 1.
      padding: zeros added on each side, ``p`` or ``(ph, pw)``, default 0.
      use_bias: static; add a per-channel bias.
      param_dtype: dtype of the parameters.
      rngs: the ``nnx.Rngs`` that draws the initial parameters.

    Returns:
      A module mapping ``(N, H, W, C_in)`` to ``(N, H', W', C_out)`` with
      :math:`H' = \lfloor (H + 2 p_h - k_h) / s_h \rfloor + 1` (likewise W').

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> conv = Conv2d(1, 4, 3, padding=1, rngs=nnx.Rngs(0))
      >>> conv(jnp.ones((2, 8, 8, 1))).shape
      (2, 8, 8, 4)

    References:
      mirrors ``torch.nn.Conv2d`` (torch 2.13) without dilation and groups.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] = 1,
        padding: int | Sequence[int] = 0,
        *,
        use_bias: bool = True,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        kernel = _pair(kernel_size, "kernel_size")
        strides = _pair(stride, "stride")
        pad_h, pad_w = _pair(padding, "padding")
        options = _torch_options(in_channels * kernel[0] * kernel[1], use_bias, param_dtype, rngs)
        padding = ((pad_h, pad_h), (pad_w, pad_w))
        super().__init__(in_channels, out_channels, kernel, strides, padding=padding, **options)


class MaxPool2d(nnx.Module):
    r"""Max pooling over the H and W axes of an NHWC batch, like ``torch.nn.MaxPool2d``.

    .. math::
      y[n, i, j, c] = \max_{0 \le u < k_h,\ 0 \le v < k_w}
      x_{\text{pad}}[n, s_h i + u, s_w j + v, c]

    Padding is with :math:`-\infty` and the output size is floored (torch's
    ``ceil_mode=False``).

    Args:
      kernel_size: window ``k`` or ``(kh, kw)``.
      stride: ``s`` or ``(sh, sw)``; default ``kernel_size`` (torch's default).
      padding: implicit :math:`-\infty` padding on each side, at most half the window.

    Returns:
      A module mapping ``(N, H, W, C)`` to ``(N, H', W', C)``.

    Example:
      >>> import jax.numpy as jnp
      >>> MaxPool2d(2)(jnp.arange(16.0).reshape(1, 4, 4, 1))[0, :, :, 0]
      Array([[ 5.,  7.],
             [13., 15.]], dtype=float32)

    References:
      mirrors ``torch.nn.MaxPool2d`` (torch 2.13) without dilation and ``ceil_mode``.
    """

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        stride: int | Sequence[int] | None = None,
        padding: int | Sequence[int] = 0,
    ) -> None:
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride")
        self.padding = _pair(padding, "padding")
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size, strict=True)):
            raise ValueError(
                f"padding {padding!r} must be at most half of kernel_size {kernel_size!r}"
            )

    def __call__(self, x: jax.Array) -> jax.Array:
        (pad_h, pad_w) = self.padding
        return nnx.max_pool(
            x, self.kernel_size, strides=self.stride, padding=((pad_h, pad_h), (pad_w, pad_w))
        )


class Flatten(nnx.Module):
    r"""Flatten every axis after the batch axis, in torch's order by default.

    For an NHWC input and ``torch_order=True`` the features are laid out as torch's
    ``nn.Flatten`` lays out the NCHW tensor, :math:`(c, h, w)` row-major; a
    :class:`Linear` layer after it then takes torch's weights unchanged
    (:mod:`jaxopt_adv.interop` needs no permutation). With ``torch_order=False`` it is a
    plain reshape, :math:`(h, w, c)` order. For inputs of rank <= 2 both are the same.

    Args:
      torch_order: static; move the channel (last) axis to position 1 before flattening.

    Returns:
      A module mapping ``(N, ...)`` to ``(N, prod(...))``.

    Example:
      >>> import jax.numpy as jnp
      >>> x = jnp.arange(8.0).reshape(1, 2, 2, 2)  # NHWC
      >>> Flatten()(x)
      Array([[0., 2., 4., 6., 1., 3., 5., 7.]], dtype=float32)

    References:
      mirrors ``torch.nn.Flatten`` (``start_dim=1``) on the NCHW equivalent.
    """

    def __init__(self, *, torch_order: bool = True) -> None:
        self.torch_order = torch_order

    def __call__(self, x: jax.Array) -> jax.Array:
        if self.torch_order and x.ndim > 2:
            x = jnp.moveaxis(x, -1, 1)
        return x.reshape(x.shape[0], -1)


class ReLU(nnx.Module):
    r"""Rectified linear unit :math:`\max(0, x)` (gradient 0 at 0, as in torch).

    Example:
      >>> import jax.numpy as jnp
      >>> ReLU()(jnp.array([-1.0, 0.0, 2.0]))
      Array([0., 0., 2.], dtype=float32)
    """

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(x)


class Softmax(nnx.Module):
    r"""Softmax :math:`e^{x_i - \max x} / \sum_j e^{x_j - \max x}` along ``axis``.

    Args:
      axis: static; the class axis (default the last, torch's ``dim=1`` for ``(N, K)``).

    Example:
      >>> import jax.numpy as jnp
      >>> Softmax()(jnp.zeros((1, 4)))
      Array([[0.25, 0.25, 0.25, 0.25]], dtype=float32)
    """

    def __init__(self, axis: int = -1) -> None:
        self.axis = axis

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.softmax(x, axis=self.axis)


class LogSoftmax(nnx.Module):
    r"""Log-softmax :math:`x_i - \max x - \log \sum_j e^{x_j - \max x}` along ``axis``.

    Numerically stable for large logits (no ``log(softmax)``); feed it to
    :func:`~jaxopt_adv.models.class_nll_loss`.

    Args:
      axis: static; the class axis (default the last).

    Example:
      >>> import jax.numpy as jnp
      >>> LogSoftmax()(jnp.array([[1000.0, 1000.0]]))
      Array([[-0.6931472, -0.6931472]], dtype=float32)
    """

    def __init__(self, axis: int = -1) -> None:
        self.axis = axis

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.log_softmax(x, axis=self.axis)
