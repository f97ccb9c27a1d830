r"""Batch normalisation with torch's semantics, and a channel-wise affine layer.

Why not ``nnx.BatchNorm``? It computes the same normalisation but keeps different running
statistics (checked against flax 0.12.8's source and numerically in
``tests/models/test_batchnorm.py``):

* momentum convention: nnx's ``momentum`` is the weight of the *old* value,
  :math:`r \leftarrow m r + (1 - m) s` (default 0.99); torch's is the weight of the
  *new* one, :math:`r \leftarrow (1 - m) r + m s` (default 0.1);
* running variance: nnx averages the *biased* batch variance; torch the *unbiased* one,
  :math:`\sigma^2_B \cdot n / (n - 1)`. No nnx momentum compensates this;
* nnx computes the batch variance as :math:`E[x^2] - E[x]^2` by default
  (``use_fast_variance``); torch, and this module, as :math:`E[(x - E x)^2]`;
* nnx keeps the running statistics in float32 whatever ``param_dtype`` is.

:class:`BatchNorm` below is torch's rule; its variables are named as nnx's (``scale``,
``bias``, ``mean``, ``var``), so :mod:`jaxopt_adv.interop` treats both alike.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

__all__ = ["BatchNorm", "ChannelwiseScaling"]


class BatchNorm(nnx.Module):
    r"""Batch normalisation over all axes but the last, as ``torch.nn.BatchNorm1d/2d``.

    Training (``use_running_average=False``), with :math:`n` values per channel:

    .. math::
      \mu_B = \tfrac1n \sum x, \quad \sigma^2_B = \tfrac1n \sum (x - \mu_B)^2, \quad
      y = \frac{x - \mu_B}{\sqrt{\sigma^2_B + \epsilon}}\,\gamma + \beta

      r_\mu \leftarrow (1 - m)\, r_\mu + m\, \mu_B, \quad
      r_{\sigma^2} \leftarrow (1 - m)\, r_{\sigma^2} + m\, \tfrac{n}{n - 1}\, \sigma^2_B

    Evaluation (``use_running_average=True``) normalises with :math:`r_\mu, r_{\sigma^2}`
    and updates nothing. Gradients flow through :math:`\mu_B, \sigma^2_B` in training,
    as in torch.

    Layout: channels last, ``(N, C)`` (torch ``BatchNorm1d``), ``(N, L, C)`` (torch
    ``(N, C, L)``) or NHWC images (torch ``BatchNorm2d`` on NCHW).

    Args:
      num_features: number of channels :math:`C`.
      momentum: torch's momentum :math:`m \in [0, 1]`, weight of the *new* batch
        statistic (default 0.1). ``nnx.BatchNorm(momentum=0.9)`` is ``m = 0.1`` here.
      eps: :math:`\epsilon > 0` added to the variance (default ``1e-5``).
      affine: static; learn :math:`\gamma` (``scale``, ones) and :math:`\beta` (``bias``,
        zeros). Without it, :math:`\gamma = 1, \beta = 0` (a plain
        normalisation, which a :class:`ChannelwiseScaling` may follow).
      use_running_average: static default of the mode; ``model.train()`` sets ``False``,
        ``model.eval()`` ``True``; the call argument overrides it.
      param_dtype: dtype of :math:`\gamma, \beta` and of the running statistics.

    Returns:
      A module mapping an array to one of the same shape; in training it also updates
      the ``nnx.BatchStat`` variables ``mean`` and ``var`` (zeros and ones at first).

    Example:
      >>> import jax.numpy as jnp
      >>> bn = BatchNorm(1)
      >>> y = bn(jnp.array([[1.0], [2.0], [3.0]]))
      >>> bn.mean[...], bn.var[...]  # 0.1 * 2, 0.9 + 0.1 * 1 (unbiased variance 1)
      (Array([0.2], dtype=float32), Array([1.], dtype=float32))

    References:
      Ioffe & Szegedy, "Batch Normalization: Accelerating Deep Network Training by
      Reducing Internal Covariate Shift", ICML 2015; mirrors ``torch.nn.BatchNorm2d``
      (torch 2.13) with ``track_running_stats=True``.

    Warning:
      torch's ``momentum=None`` (cumulative moving average) is not supported, so there is
      no ``num_batches_tracked`` counter; :func:`jaxopt_adv.interop.export_torch_state_dict`
      writes 0 for it.
    """

    def __init__(
        self,
        num_features: int,
        *,
        momentum: float = 0.1,
        eps: float = 1e-5,
        affine: bool = True,
        use_running_average: bool = False,
        param_dtype: jnp.dtype = jnp.float32,
    ) -> None:
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"Invalid momentum value: {momentum} (momentum must be in [0, 1])")
        if not eps > 0.0:
            raise ValueError(f"Invalid eps value: {eps} (eps must be > 0)")
        self.num_features = num_features
        self.momentum = momentum
        self.eps = eps
        self.affine = affine
        self.use_running_average = use_running_average
        shape = (num_features,)
        self.scale = nnx.Param(jnp.ones(shape, param_dtype)) if affine else nnx.data(None)
        self.bias = nnx.Param(jnp.zeros(shape, param_dtype)) if affine else nnx.data(None)
        self.mean = nnx.BatchStat(jnp.zeros(shape, param_dtype))
        self.var = nnx.BatchStat(jnp.ones(shape, param_dtype))

    def __call__(self, x: jax.Array, use_running_average: bool | None = None) -> jax.Array:
        if use_running_average is None:
            use_running_average = self.use_running_average
        if x.shape[-1] != self.num_features:
            raise ValueError(f"expected {self.num_features} channels (last axis), got {x.shape}")
        # Statistics in at least float32 (bf16 inputs), float64 stays float64.
        compute_dtype = jnp.promote_types(x.dtype, jnp.float32)
        xc = x.astype(compute_dtype)
        axes = tuple(range(x.ndim - 1))
        if use_running_average:
            mean = self.mean[...].astype(compute_dtype)
            var = self.var[...].astype(compute_dtype)
        else:
            n = math.prod(x.shape[:-1])
            if n < 2:
                raise ValueError(
                    f"Expected more than 1 value per channel when training, got input {x.shape}"
                )
            mean = jnp.mean(xc, axis=axes)
            var = jnp.mean(jnp.square(xc - mean), axis=axes)  # biased: used to normalise
            m = self.momentum
            stat_dtype = self.mean[...].dtype
            self.mean[...] = jax.lax.stop_gradient(
                (1 - m) * self.mean[...] + m * mean.astype(stat_dtype)
            )
            self.var[...] = jax.lax.stop_gradient(
                (1 - m) * self.var[...] + m * (var * (n / (n - 1))).astype(stat_dtype)
            )
        y = (xc - mean) * jax.lax.rsqrt(var + self.eps)
        out_dtype = x.dtype
        if self.affine:
            y = y * self.scale[...] + self.bias[...]
            out_dtype = jnp.result_type(x.dtype, self.scale[...].dtype)
        return y.astype(out_dtype)

    def set_view(self, use_running_average: bool | None = None) -> None:
        """Used by ``nnx.view``: switch between batch and running statistics."""
        if use_running_average is not None:
            self.use_running_average = use_running_average


class ChannelwiseScaling(nnx.Module):
    r"""A learnable per-channel affine map :math:`y = \gamma \odot x + \beta` (last axis).

    The ``ChannelwiseScaling`` of from-scratch NumPy networks: after a :class:`BatchNorm`
    with ``affine=False`` it makes the pair equal to one ``BatchNorm(affine=True)``
    (torch's BatchNorm with ``weight`` and ``bias``). :mod:`jaxopt_adv.interop` maps its
    ``scale``/``bias`` to a torch ``weight``/``bias`` pair of shape ``(C,)``.

    Args:
      num_features: number of channels :math:`C`.
      param_dtype: dtype of :math:`\gamma` (``scale``, ones) and :math:`\beta`
        (``bias``, zeros).

    Returns:
      A module mapping ``(..., C)`` to ``(..., C)``.

    Example:
      >>> import jax.numpy as jnp
      >>> layer = ChannelwiseScaling(2)
      >>> layer.scale[...] = jnp.array([2.0, 3.0])
      >>> layer(jnp.ones((1, 2)))
      Array([[2., 3.]], dtype=float32)
    """

    def __init__(self, num_features: int, *, param_dtype: jnp.dtype = jnp.float32) -> None:
        self.num_features = num_features
        self.scale = nnx.Param(jnp.ones((num_features,), param_dtype))
        self.bias = nnx.Param(jnp.zeros((num_features,), param_dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        return x * self.scale[...] + self.bias[...]
