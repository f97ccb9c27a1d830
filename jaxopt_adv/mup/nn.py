r"""The model side of muP in Flax NNX: readout layer, one-time init rescale, attention scale.

muP is a property of the *model and* the optimizer. With the muP optimizers of
:mod:`jaxopt_adv.mup.optim` a model must also

1. end in a :class:`MuReadout`: ``logits = W (x * output_mult / m_in) + b``;
2. rescale, **once**, right after initialisation, the hidden biases and the readout's
   weight and bias by :math:`\sqrt{m_{in}}` (:func:`mup_rescale_init`), turning the
   standard (torch) initialisation into muP's;
3. scale attention scores by :math:`1/d` instead of :math:`1/\sqrt d`
   (:func:`mup_attention_scale`, :func:`mup_dot_product_attention`).

At every width multiplier 1 all three are the identity, so the base model *is* the
standard-parametrised model. :class:`MuMLP` puts them together for an MLP.

References:
  Yang et al., "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot
  Hyperparameter Transfer", NeurIPS 2021 (arXiv 2203.03466); mirrors ``mup.layer`` and
  ``mup.shape.set_base_shapes(rescale_params=True)`` (``mup==1.0.0``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxopt_adv._common import check
from jaxopt_adv.models.layers import Linear
from jaxopt_adv.models.mlp import hidden_stack
from jaxopt_adv.mup.infshape import InfShape, paths_and_leaves

__all__ = [
    "MuMLP",
    "MuReadout",
    "mup_attention_scale",
    "mup_dot_product_attention",
    "mup_rescale_init",
]

_KERNEL_NAMES = ("kernel", "weight")  # Flax, torch


def _check_positive(value: float, name: str) -> None:
    check(value > 0, f"Invalid {name} value: {value} ({name} must be > 0)")


class MuReadout(Linear):
    r"""muP's output layer: a :class:`~jaxopt_adv.models.Linear` on a width-rescaled input.

    .. math::
      y = \Big(\frac{\text{output\_mult} \cdot x}{m_{in}}\Big) W + b

    Initialised like ``torch.nn.Linear`` (or to zeros with ``zero_init``); call
    :func:`mup_rescale_init` once on fresh parameters to multiply ``W`` and ``b`` by
    :math:`\sqrt{m_{in}}`, as ``mup.set_base_shapes`` does. An ``nnx.Linear`` subclass,
    so :mod:`jaxopt_adv.interop` loads torch ``MuReadout`` weights into it.

    Args:
      in_features: input size (a width).
      out_features: output size (finite: classes, vocabulary).
      width_mult: static; :math:`m_{in}` = ``in_features / base in_features``, ``> 0``.
      output_mult: static; the tunable output multiplier (mup's ``output_mult``).
      zero_init: static; start ``W`` and ``b`` at zero (mup's ``readout_zero_init``).
      use_bias: static; add the bias.
      param_dtype: dtype of the parameters.
      rngs: the ``nnx.Rngs`` that draws the initial parameters.

    Returns:
      A module mapping ``(..., in_features)`` to ``(..., out_features)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> layer = MuReadout(256, 2, width_mult=4.0, use_bias=False, rngs=nnx.Rngs(0))
      >>> layer.kernel[...] = jnp.full((256, 2), 0.01)
      >>> layer(jnp.full((1, 256), 0.1))  # 0.064 (0.256 in SP, without the 1/4)
      Array([[0.064, 0.064]], dtype=float32)

    References:
      Yang et al., "Tensor Programs V", NeurIPS 2021; mirrors ``mup.MuReadout``.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        width_mult: float = 1.0,
        output_mult: float = 1.0,
        zero_init: bool = False,
        use_bias: bool = True,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        _check_positive(width_mult, "width_mult")
        super().__init__(
            in_features, out_features, use_bias=use_bias, param_dtype=param_dtype, rngs=rngs
        )
        if zero_init:
            self.kernel[...] = jnp.zeros_like(self.kernel[...])
            if use_bias:
                self.bias[...] = jnp.zeros_like(self.bias[...])
        self.width_mult = float(width_mult)
        self.output_mult = output_mult

    def __call__(self, x: jax.Array) -> jax.Array:
        return super().__call__(self.output_mult * x / self.width_mult)


def _rescale(leaf: Any, factor: float) -> Any:
    if isinstance(leaf, nnx.Variable):
        return leaf.replace(leaf[...] * factor)
    return leaf * factor


def _bias_factor(path: str, infshapes_by_path: dict[str, InfShape]) -> float:
    """``sqrt(m_in)`` of the kernel next to a bias (1.0 when there is none)."""
    parent = path.rpartition("/")[0]
    for name in _KERNEL_NAMES:
        kernel = infshapes_by_path.get(f"{parent}/{name}" if parent else name)
        if kernel is not None and len(kernel.dims) >= 2:
            return math.sqrt(kernel.fan_in_mult)
    return 1.0


def mup_rescale_init(params: Any, infshapes: Any) -> Any:
    r"""muP's one-time initialisation rescale (``mup.set_base_shapes(rescale_params=True)``).

    For freshly initialised parameters (standard, torch-style ``1/fan_in`` init):

    * every ``bias`` next to a ``kernel`` (or ``weight``) is multiplied by
      :math:`\sqrt{m_{in}}` of that kernel (hidden biases; input-layer biases have
      :math:`m_{in} = 1`);
    * every parameter with role ``"output"`` (the :class:`MuReadout` kernel) is
      multiplied by :math:`\sqrt{m}`; its bias by the rule above.

    Warning:
      **Not idempotent.** Apply it exactly once, to a freshly initialised model, before
      training; never to restored checkpoints or to weights imported from a torch model
      that ``set_base_shapes`` has already rescaled. At width multiplier 1 it is the
      identity.

    Args:
      params: the parameters (a pytree of arrays, or an ``nnx.State`` of Variables).
      infshapes: their :class:`~jaxopt_adv.mup.InfShape`\ s
        (:func:`~jaxopt_adv.mup.infer_infshapes`).

    Returns:
      The rescaled parameters, shaped like ``params`` (``nnx.update(model, result)``
      writes them back into an NNX model).

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from jaxopt_adv.mup import MuMLP, infer_infshapes, mup_rescale_init
      >>> base = nnx.state(MuMLP(8, (16, 16), 3, rngs=nnx.Rngs(0)), nnx.Param)
      >>> model = MuMLP(8, (64, 64), 3, width_mult=4.0, rngs=nnx.Rngs(0))
      >>> params = nnx.state(model, nnx.Param)
      >>> before = params["layers"][4]["kernel"][...]
      >>> nnx.update(model, mup_rescale_init(params, infer_infshapes(base, params)))
      >>> bool(jnp.allclose(model.layers[4].kernel[...], 2.0 * before))
      True

    References:
      Yang et al., "Tensor Programs V", NeurIPS 2021; ``mup.layer.MuReadout.
      _rescale_parameters`` and ``mup.layer.rescale_linear_bias``.
    """
    shape_paths, shapes, _ = paths_and_leaves(infshapes)
    by_path = dict(zip(shape_paths, shapes, strict=True))
    paths, leaves, treedef = paths_and_leaves(params)
    missing = sorted(set(paths) - set(by_path))
    check(not missing, f"no infshape for parameters {missing}")
    rescaled = []
    for path, leaf in zip(paths, leaves, strict=True):
        infshape = by_path[path]
        factor = math.sqrt(infshape.width_mult) if infshape.role == "output" else 1.0
        if path.rpartition("/")[2] == "bias":
            factor *= _bias_factor(path, by_path)
        rescaled.append(leaf if factor == 1.0 else _rescale(leaf, factor))
    return treedef.unflatten(rescaled)


def mup_attention_scale(head_dim: int, base_head_dim: int = 64) -> float:
    r"""muP's attention-score factor :math:`\sqrt{d_0}/d` (instead of :math:`1/\sqrt d`).

    Scores :math:`q \cdot k / d` keep their scale as the head dimension :math:`d` grows
    (queries and keys become correlated during training); the constant
    :math:`\sqrt{d_0}` makes it equal to the standard :math:`1/\sqrt{d_0}` at the base
    head dimension, e.g. mup's ``8/d`` for :math:`d_0 = 64`.

    Args:
      head_dim: :math:`d`, the per-head query/key size, ``> 0``.
      base_head_dim: :math:`d_0`, the head size the hyperparameters were tuned at.

    Returns:
      The factor multiplying :math:`q \cdot k`.

    Example:
      >>> mup_attention_scale(64), mup_attention_scale(256)
      (0.125, 0.03125)

    References:
      Yang et al., "Tensor Programs V", NeurIPS 2021, section 4 (attention ``1/d``).
    """
    _check_positive(head_dim, "head_dim")
    _check_positive(base_head_dim, "base_head_dim")
    return math.sqrt(base_head_dim) / head_dim


def mup_dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    *args: Any,
    base_head_dim: int = 64,
    **kwargs: Any,
) -> jax.Array:
    r"""``nnx.dot_product_attention`` with muP's :func:`mup_attention_scale` scores.

    A drop-in ``attention_fn`` for ``nnx.MultiHeadAttention`` (bind ``base_head_dim``
    with ``functools.partial``): the query is multiplied by
    :math:`\sqrt{d}\cdot\sqrt{d_0}/d` before Flax divides it by :math:`\sqrt d`. At
    :math:`d = d_0` it is exactly ``nnx.dot_product_attention``.

    Args:
      query: ``(..., q_len, heads, d)``.
      key: ``(..., kv_len, heads, d)``.
      value: ``(..., kv_len, heads, d_v)``.
      *args: passed to ``nnx.dot_product_attention``.
      base_head_dim: static; :math:`d_0`.
      **kwargs: passed to ``nnx.dot_product_attention`` (mask, dropout, ...).

    Returns:
      ``(..., q_len, heads, d_v)``.

    Example:
      >>> import jax.numpy as jnp
      >>> q = k = v = jnp.ones((1, 3, 2, 16))
      >>> mup_dot_product_attention(q, k, v, base_head_dim=16).shape
      (1, 3, 2, 16)
    """
    head_dim = query.shape[-1]
    factor = mup_attention_scale(head_dim, base_head_dim) * math.sqrt(head_dim)
    return nnx.dot_product_attention(query * factor, key, value, *args, **kwargs)


class MuMLP(nnx.Module):
    r"""A muP multilayer perceptron: ``[Linear, ReLU] * len(hidden)``, then :class:`MuReadout`.

    .. math::
      h_0 = x, \quad h_k = \max(0, h_{k-1} W_k + b_k), \quad
      \text{logits} = \text{MuReadout}(h_L)

    The layers live in ``self.layers`` (an ``nnx.List``) in the order of the torch
    ``nn.Sequential(Linear, ReLU, ..., MuReadout)``, so :mod:`jaxopt_adv.interop` pairs
    them by default. Initialised like torch; apply :func:`mup_rescale_init` once for
    muP's initialisation. With ``width_mult=1`` it is the standard-parametrised MLP.

    Args:
      in_features: input size (finite).
      hidden_features: the hidden widths.
      num_classes: number of logits (finite).
      width_mult: static; the readout's :math:`m_{in}` = ``hidden_features[-1]`` over
        its base width.
      output_mult: static; the readout's output multiplier.
      readout_zero_init: static; start the readout at zero.
      param_dtype: dtype of the parameters.
      rngs: ``nnx.Rngs`` for the initial weights.

    Returns:
      A module mapping ``(N, in_features)`` to ``(N, num_classes)`` logits.

    Example:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> model = MuMLP(8, (64, 64), 3, width_mult=4.0, rngs=nnx.Rngs(0))
      >>> model(jnp.ones((2, 8))).shape
      (2, 3)

    References:
      Yang et al., "Tensor Programs V", NeurIPS 2021 (the MLP of ``mup``'s examples).
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: Sequence[int],
        num_classes: int,
        *,
        width_mult: float = 1.0,
        output_mult: float = 1.0,
        readout_zero_init: bool = False,
        param_dtype: jnp.dtype = jnp.float32,
        rngs: nnx.Rngs,
    ) -> None:
        layers, width = hidden_stack(
            in_features, hidden_features, None, param_dtype=param_dtype, rngs=rngs
        )
        readout = MuReadout(
            width,
            num_classes,
            width_mult=width_mult,
            output_mult=output_mult,
            zero_init=readout_zero_init,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.layers = nnx.List([*layers, readout])

    def __call__(self, x: jax.Array) -> jax.Array:
        for layer in self.layers:
            x = layer(x)
        return x
