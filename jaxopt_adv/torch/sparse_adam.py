"""SparseAdam as ``torch.optim.SparseAdam`` computes it, on dense JAX gradients."""

from __future__ import annotations

from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from jaxopt_adv._common import (
    check_beta,
    check_positive,
    check_torch_default_dtype,
    scalar_dtype,
    torch_decay_power,
)
from jaxopt_adv.torch._chain import torch_chain
from jaxopt_adv.torch._docs import shared_arg_docs
from jaxopt_adv.torch._twin import torch_twin
from jaxopt_adv.torch.adam import zero_moments


class ScaleBySparseAdamState(NamedTuple):
    """State of :func:`scale_by_sparse_adam`."""

    count: chex.Array  # int32 scalar
    mu: optax.Updates  # torch ``exp_avg``
    nu: optax.Updates  # torch ``exp_avg_sq``


def participating(g: jax.Array, mask: Any) -> jax.Array:
    """Where an element takes part: a nonzero gradient, or ``mask`` (its leading axes
    aligned with the leaf's, so a mask of shape ``leaf.shape[:k]`` picks whole slices)."""
    active = g != 0
    if mask is None:
        return active
    mask = jnp.asarray(mask, bool)
    if mask.ndim > g.ndim:
        raise ValueError(f"mask of shape {mask.shape} has more axes than its leaf {g.shape}")
    mask = jnp.reshape(mask, mask.shape + (1,) * (g.ndim - mask.ndim))
    return active | jnp.broadcast_to(mask, g.shape)


def sparse_adam_factor(b1: Any, b2: Any, count: chex.Array, torch_default_dtype: Any) -> chex.Array:
    r"""Step ``count``'s :math:`\sqrt{1-\beta_2^t} / (1-\beta_1^t)` (shared with the fused
    CPU step, which must compute it with the same ops)."""
    t = count.astype(scalar_dtype())
    dtype = check_torch_default_dtype(torch_default_dtype)
    _, bc1 = torch_decay_power(b1, t, dtype)
    return jnp.sqrt(torch_decay_power(b2, t, dtype)[1]) / bc1


@shared_arg_docs
def scale_by_sparse_adam(
    b1: Any = 0.9, b2: Any = 0.999, eps: Any = 1e-8, *, torch_default_dtype: Any = "float32"
) -> optax.GradientTransformationExtraArgs:
    r"""SparseAdam's scaling: Adam on the participating elements only.

    An element takes part in a step where its gradient is nonzero or where the extra
    argument ``mask`` (a tree like the updates; booleans whose shape is a leading part of
    the leaf's shape, e.g. one per embedding row, or ``None``) is true. There

    .. math::
      m_t = m + (1-\beta_1)(g_t - m), \quad v_t = v + (1-\beta_2)(g_t^2 - v), \quad
      \text{out}_t = \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,\frac{m_t}{\sqrt{v_t} + \epsilon}

    and elsewhere the moments keep their values and the output is 0. ``t`` counts every
    step, as torch's ``step`` does.

    Args:
      b1: first-moment decay, in ``[0, 1)``.
      b2: second-moment decay, in ``[0, 1)``.
      eps: added to the root, ``> 0``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jaxopt_adv.torch import scale_by_sparse_adam
      >>> tx = scale_by_sparse_adam()
      >>> state = tx.init(jnp.zeros(3))
      >>> u, state = tx.update(jnp.array([2.0, 0.0, 0.0]), state, mask=jnp.array([0, 0, 1]))
      >>> u.round(4)
      Array([1., 0., 0.], dtype=float32)

    References:
      Kingma, Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
      mirrors ``torch.optim.SparseAdam`` (torch 2.13).
    """
    check_beta(b1, 0, "b1")
    check_beta(b2, 1, "b2")
    check_positive(eps, "eps", torch_name="epsilon")
    check_torch_default_dtype(torch_default_dtype)

    def init_fn(params: optax.Params) -> ScaleBySparseAdamState:
        return ScaleBySparseAdamState(jnp.zeros([], jnp.int32), *zero_moments(params))

    def update_fn(updates, state, params=None, *, mask=None, **extra_args):
        del params, extra_args
        count = optax.safe_increment(state.count)
        factor = sparse_adam_factor(b1, b2, count, torch_default_dtype)
        masks = jax.tree.map(lambda _: None, updates) if mask is None else mask

        def leaf(g, m, v, leaf_mask):
            active = participating(g, leaf_mask)
            g = g.astype(m.dtype)
            m_new = m + (g - m) * (1 - b1)
            v_new = v + (g * g - v) * (1 - b2)
            out = factor.astype(m.dtype) * (m_new / (jnp.sqrt(v_new) + eps))
            return (
                jnp.where(active, out, 0).astype(g.dtype),
                jnp.where(active, m_new, m),
                jnp.where(active, v_new, v),
            )

        leaves, treedef = jax.tree.flatten(updates)
        mask_leaves = treedef.flatten_up_to(masks)
        outs = [
            leaf(g, m, v, k)
            for g, m, v, k in zip(
                leaves,
                treedef.flatten_up_to(state.mu),
                treedef.flatten_up_to(state.nu),
                mask_leaves,
                strict=True,
            )
        ]
        out, mu, nu = (treedef.unflatten([o[i] for o in outs]) for i in range(3))
        return out, ScaleBySparseAdamState(count, mu, nu)

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


@torch_twin("SparseAdam")
@shared_arg_docs
def sparse_adam(
    learning_rate: optax.ScalarOrSchedule = 1e-3,
    b1: Any = 0.9,
    b2: Any = 0.999,
    eps: Any = 1e-8,
    *,
    maximize: bool = False,
    torch_default_dtype: Any = "float32",
) -> optax.GradientTransformationExtraArgs:
    r"""SparseAdam that reproduces ``torch.optim.SparseAdam`` step for step.

    torch's SparseAdam takes the sparse gradients of e.g. ``nn.Embedding(sparse=True)``
    and updates only the moments and parameters of the elements present in them. JAX
    gradients are dense, so here an element is present where its gradient is nonzero,
    or where the optional extra argument ``mask=`` says so (a tree like the updates of
    booleans; a leaf's mask may cover only its leading axes, e.g. one per embedding row,
    like the rows an embedding lookup touched). Every other element keeps its moments
    and its parameter exactly (see :func:`scale_by_sparse_adam`).

    Args:
      learning_rate: scalar or schedule (torch ``lr``), default ``1e-3``; ``> 0``.
      eps: added to the root, ``> 0``.

    Returns:
      An ``optax.GradientTransformationExtraArgs``; ``update`` takes ``mask=``.

    Example:
      >>> import jax.numpy as jnp
      >>> import jaxopt_adv
      >>> opt = jaxopt_adv.torch.sparse_adam(0.1)
      >>> table = jnp.ones((3, 2))  # an embedding table; row 1 was looked up
      >>> state = opt.init(table)
      >>> grads = jnp.array([[0.0, 0.0], [0.5, 0.0], [0.0, 0.0]])
      >>> updates, state = opt.update(grads, state, mask=jnp.array([False, True, False]))
      >>> round(float(updates[1, 0]), 4), int(jnp.count_nonzero(updates))
      (-0.1, 1)

    References:
      Kingma, Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015;
      mirrors ``torch.optim.SparseAdam`` (torch 2.13).
    """
    check_positive(learning_rate, "learning_rate", torch_name="learning rate")
    return torch_chain(
        scale_by_sparse_adam(b1, b2, eps, torch_default_dtype=torch_default_dtype),
        learning_rate=learning_rate,
        maximize=maximize,
    )
