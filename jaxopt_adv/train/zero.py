"""ZeRO-1 data parallelism: parameters replicated, the optimizer state sliced across a mesh axis.

In data-parallel training every device (every process, with ``jax.distributed``) holds
the whole model and a shard of each batch. The optimizer state is the largest part of
the memory after the model (Adam's two moments are twice it), and each device needs only
its slice of it: :func:`shard_optimizer_state` wraps any optax transform so that its
``init`` and ``update`` run on the parameters and gradients *sliced* along one mesh axis
(each leaf along its first dimension that the axis size divides; smaller leaves stay
replicated). The state then lives sliced, one ``1 / n`` of it per device, as the library's
optimizers keep their state placed like the parameters they are given; each device
computes the update of its slice, and the updates are gathered (an all-gather) into
replicated updates that ``optax.apply_updates`` adds to the replicated parameters.

The update is elementwise for most torch-exact optimizers, so the sliced computation is
the unsliced one; factored statistics (CAME's and Adafactor's row and column means) and
Muon's Newton-Schulz products reduce across slices, in another summation order (agreement
to float rounding). L-BFGS is a full-batch method: its line search can take another path
when the summation order changes (sliced, 3 float32 steps ended 2.6% apart), so it is not
one to wrap.

References:
  Rajbhandari et al., "ZeRO: Memory Optimizations Toward Training Trillion Parameter
  Models", SC 2020 (stage 1: optimizer state partitioning).
"""

from __future__ import annotations

from typing import Any

import jax
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

__all__ = ["shard_optimizer_state", "slice_shardings", "local_bytes"]


def _slice_spec(shape: tuple[int, ...], axis: str, size: int) -> P:
    """``axis`` on the first dimension of ``shape`` that ``size`` divides (no dimension: ``P()``)."""
    for dim, length in enumerate(shape):
        if length >= size and length % size == 0:
            return P(*([None] * dim), axis)
    return P()


def slice_shardings(tree: Any, mesh: Mesh, axis: str = "data") -> Any:
    """Each leaf's ``NamedSharding`` sliced along ``axis`` (see the module docstring).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> mesh = jax.make_mesh((1,), ("data",))
      >>> shardings = slice_shardings({"w": jnp.zeros((4, 3)), "s": jnp.zeros(())}, mesh)
      >>> shardings["w"].spec, shardings["s"].spec
      (P('data',), P())
    """
    if axis not in mesh.shape:
        raise ValueError(f"axis {axis!r} is not an axis of the mesh {dict(mesh.shape)}")
    size = mesh.shape[axis]
    return jax.tree.map(lambda x: NamedSharding(mesh, _slice_spec(x.shape, axis, size)), tree)


def _replicated(tree: Any, mesh: Mesh) -> Any:
    return jax.tree.map(lambda _: NamedSharding(mesh, P()), tree)


def shard_optimizer_state(
    tx: optax.GradientTransformation, mesh: Mesh, axis: str = "data"
) -> optax.GradientTransformationExtraArgs:
    """``tx`` with its state sliced along the mesh axis ``axis`` (ZeRO stage 1).

    ``init(params)`` builds the state from the parameters sliced along ``axis`` (see
    :func:`slice_shardings`), so every state leaf placed like its parameter is sliced too;
    ``update(grads, state, params)`` slices the gradients and parameters the same way,
    runs ``tx.update`` on the slices and returns the updates replicated on ``mesh``
    (an all-gather), for ``optax.apply_updates`` on replicated parameters. The values are
    ``tx``'s; only their placement differs. Extra arguments (``value=``) reach ``tx``.
    The parameters are meant to be replicated over ``mesh`` (data parallelism): the
    updates come back replicated whatever the parameters' own sharding.

    Args:
      tx: any optax transform whose state follows its parameters' sharding (every
        optimizer of this library).
      mesh: the device mesh (with ``jax.distributed``, all processes' devices); made
        with ``jax.make_mesh`` (Explicit axes).
      axis: the mesh axis the state is sliced along (the data-parallel axis).

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with ``tx``'s state structure.

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from jaxopt_adv.torch import adam
      >>> mesh = jax.make_mesh((1,), ("data",))
      >>> tx = shard_optimizer_state(adam(0.1), mesh)
      >>> params = {"w": jnp.ones((2, 3))}
      >>> updates, state = tx.update({"w": jnp.ones((2, 3))}, tx.init(params), params)
      >>> updates["w"].sharding.spec, optax.tree.get(state, "mu")["w"].sharding.spec
      (P(None, None), P('data', None))
    """
    inner = optax.with_extra_args_support(tx)

    def slices(tree: Any) -> Any:
        return jax.sharding.reshard(tree, slice_shardings(tree, mesh, axis))

    def init_fn(params: optax.Params) -> optax.OptState:
        # jitted, so that the leaves not built from a param (counts) land on the mesh,
        # replicated, rather than on one device
        with jax.set_mesh(mesh):
            return jax.jit(inner.init)(slices(params))

    def update_fn(updates, state, params=None, **extra_args):
        sliced_params = None if params is None else slices(params)
        updates, state = inner.update(slices(updates), state, sliced_params, **extra_args)
        return jax.sharding.reshard(updates, _replicated(updates, mesh)), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def local_bytes(tree: Any) -> int:
    """The bytes of ``tree``'s arrays held by this process's devices (with
    ``jax.distributed``, each process holds only its shards; a replicated leaf counts in
    full on each device holding it)."""
    return sum(
        shard.data.nbytes
        for leaf in jax.tree.leaves(tree)
        if isinstance(leaf, jax.Array)
        for shard in leaf.addressable_shards
    )
