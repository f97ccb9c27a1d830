"""What the torch losses share: ``reduction``, the input / target / weight checks and the
reductions (:mod:`jaxopt_adv.torch.functional`, :mod:`jaxopt_adv.torch.losses`,
:mod:`jaxopt_adv.torch.ctc`)."""

from __future__ import annotations

from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_adv._common import check

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS = ("mean", "sum", "none")
# ATen's loss kernels floor p(1 - p) with the float literal ``1e-12``: a float32 number
# (9.99999996e-13), used as is for float64 tensors too.
BCE_EPSILON = np.float32(1e-12)


def check_reduction(reduction: str, allowed: tuple[str, ...] = REDUCTIONS) -> None:
    """A ``ValueError`` naming ``reduction`` unless it is one of ``allowed``."""
    check(
        reduction in allowed,
        f"{reduction!r} is not a valid value for reduction (reduction must be one of {allowed})",
    )


def as_float(x: Any) -> jax.Array:
    """``x`` as an array of an inexact dtype (integer and bool targets become floats)."""
    x = jnp.asarray(x)
    return x if jnp.issubdtype(x.dtype, jnp.inexact) else x.astype(float)


def float_pair(input: Any, target: Any) -> tuple[jax.Array, jax.Array]:
    """``input`` and ``target`` of equal shapes, in the dtype of the floating one(s).

    Integer or bool targets (0/1 labels) take the input's dtype, so they never promote a
    float32 loss to float64 under x64.
    """
    input, target = jnp.asarray(input), jnp.asarray(target)
    check(
        input.shape == target.shape,
        f"target shape {target.shape} must equal input shape {input.shape} "
        "(torch broadcasts some losses with a warning; jaxopt_adv raises)",
    )
    floats = [x.dtype for x in (input, target) if jnp.issubdtype(x.dtype, jnp.inexact)]
    dtype = jnp.result_type(*floats) if floats else jnp.result_type(float)
    return input.astype(dtype), target.astype(dtype)


def elementwise_weight(weight: Any, shape: tuple[int, ...], name: str, dtype: Any) -> Any:
    """``weight`` as an array that broadcasts to ``shape`` (``None`` stays ``None``)."""
    if weight is None:
        return None
    weight = jnp.asarray(weight, dtype)
    try:
        broadcast = jnp.broadcast_shapes(weight.shape, shape)
    except ValueError:
        broadcast = None
    check(
        broadcast == tuple(shape),
        f"{name} shape {weight.shape} must broadcast to the input shape {tuple(shape)}",
    )
    return weight


def reduce_loss(loss: jax.Array, reduction: str) -> jax.Array:
    """torch's ``'mean'``, ``'sum'`` or ``'none'`` of an element-wise loss."""
    if reduction == "mean":
        return jnp.mean(loss)
    if reduction == "sum":
        return jnp.sum(loss)
    return loss


def abs_with_zero_slope(x: jax.Array) -> jax.Array:
    """``|x|`` whose derivative is ``sign(x)``: 0 at 0 like torch (``jnp.abs`` gives 1)."""
    return x * jnp.sign(x)
