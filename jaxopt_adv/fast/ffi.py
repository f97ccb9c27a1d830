"""The XLA FFI plumbing the CPU kernels share.

Every kernel family (the fused torch optimizers of :mod:`jaxopt_adv.fast.step`, CAME's
scaling in :mod:`jaxopt_adv.fast.came`, TAM's momentum in :mod:`jaxopt_adv.fast.tam`,
Automagic's mask in :mod:`jaxopt_adv.fast.lr_mask`) runs the same way: the leaves a
kernel takes are grouped by dtype, each group is cut into calls of at most
:data:`LEAVES_PER_CALL` leaves, each call passes the group's scalars and the leaves'
arrays to one ``jax.ffi.ffi_call`` whose state results alias their operands (updated in
place when the buffers are donated), and the results are written back into the leaves'
trees. :class:`Call` builds one call's operands, result types and aliases;
:func:`batches_by_dtype`, :func:`fields_of` and :func:`with_fields` are the grouping
and the write-back; :func:`with_kernel` and :func:`step_leaves` are the whole skeleton
of a transform whose leaves a kernel steps (CAME's, TAM's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

__all__ = [
    "FLOATS",
    "LEAVES_PER_CALL",
    "Call",
    "batches",
    "batches_by_dtype",
    "chunks",
    "fields_of",
    "step_leaves",
    "with_fields",
    "with_kernel",
]

# the dtypes the kernels take
FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
# XLA compiles one custom call with hundreds of aliased operands slowly (2 s for 200 Adam
# leaves, against 0.5 s in calls of up to 16); each call still splits its leaves into
# chunks for the thread pool.
LEAVES_PER_CALL = 16


class Call:
    """One custom call's operands, result types and input-output aliases, in the order
    they are added.

    Example:
      >>> import jax.numpy as jnp
      >>> call = Call([jnp.float32(0.5)])
      >>> call.update(jnp.zeros(3))  # an operand whose result aliases it
      >>> call.read(jnp.ones(3))  # an operand only
      >>> call.output((), jnp.float32)  # a result only
      >>> call.aliases, len(call.operands), [t.shape for t in call.out_types]
      ({1: 0}, 3, [(3,), ()])
    """

    def __init__(self, scalars: Sequence[jax.Array] = ()):
        self.operands: list[Any] = list(scalars)
        self.out_types: list[jax.ShapeDtypeStruct] = []
        self.aliases: dict[int, int] = {}

    def read(self, *arrays: Any) -> None:
        """Operands the kernel only reads."""
        self.operands.extend(arrays)

    def update(self, *arrays: Any) -> None:
        """Operands the kernel overwrites: each has a result of its shape and dtype that
        aliases it."""
        for array in arrays:
            self.aliases[len(self.operands)] = len(self.out_types)
            self.operands.append(array)
            self.output(jnp.shape(array), array.dtype)

    def output(self, shape: tuple[int, ...], dtype: Any) -> None:
        """A result that aliases no operand."""
        self.out_types.append(jax.ShapeDtypeStruct(shape, dtype))

    def run(self, target: str, **attributes: Any) -> list[jax.Array]:
        """The results of the custom call ``target`` with integer ``attributes``."""
        call = jax.ffi.ffi_call(
            target,
            self.out_types,
            input_output_aliases=self.aliases,
            vmap_method="sequential",
        )
        named = {name: np.int64(value) for name, value in attributes.items()}
        return list(call(*self.operands, **named))


def chunks(outputs: Sequence[Any], width: int) -> list[tuple]:
    """``outputs`` cut into consecutive tuples of ``width`` (one per leaf of a call)."""
    return [tuple(outputs[i : i + width]) for i in range(0, len(outputs), width)]


def batches_by_dtype(
    leaves: Sequence[Any], takes: Callable[[int], bool]
) -> Iterator[tuple[np.dtype, list[int]]]:
    """``(dtype, indices)`` of the leaves the kernel ``takes`` (by index), grouped by
    dtype in order of appearance and cut into calls of at most :data:`LEAVES_PER_CALL`."""
    groups: dict[np.dtype, list[int]] = {}
    for i, leaf in enumerate(leaves):
        if takes(i):
            groups.setdefault(np.dtype(leaf.dtype), []).append(i)
    for dtype, indices in groups.items():
        for batch in batches(indices):
            yield dtype, batch


def batches(items: Sequence[Any]) -> Iterator[list[Any]]:
    """``items`` in consecutive lists of at most :data:`LEAVES_PER_CALL` (one a call)."""
    for start in range(0, len(items), LEAVES_PER_CALL):
        yield list(items[start : start + LEAVES_PER_CALL])


def fields_of(state: Any, names: Sequence[str], treedef: Any) -> list[list[Any]]:
    """The leaves of each per-parameter field ``names`` of a NamedTuple ``state``
    (flattened up to the parameters' ``treedef``)."""
    return [treedef.flatten_up_to(getattr(state, name)) for name in names]


def with_fields(
    state: Any, names: Sequence[str], columns: Sequence[list[Any]], treedef: Any
) -> Any:
    """``state`` with each field of ``names`` rebuilt from its leaves in ``columns`` (the
    inverse of :func:`fields_of`)."""
    trees = {name: treedef.unflatten(leaves) for name, leaves in zip(names, columns, strict=True)}
    return state._replace(**trees)


def with_kernel(
    inner: optax.GradientTransformation,
    kernel: bool,
    unavailable: Callable[[], str | None],
    replace: Callable[..., tuple[Any, Any]],
) -> optax.GradientTransformationExtraArgs:
    """``inner`` with ``replace(updates, state, out, new_state, extra_args)`` giving the
    ``(updates, state)`` of each step from ``inner``'s own results (``out``,
    ``new_state``) where ``kernel`` is on and ``unavailable()`` is ``None``."""

    def update_fn(updates, state, params=None, **extra_args):
        # The JAX path's results for every leaf; under jax.jit XLA removes the parts of
        # the leaves the kernel replaces.
        out, new_state = inner.update(updates, state, params, **extra_args)
        if not kernel or unavailable() is not None:
            return out, new_state
        return replace(updates, state, out, new_state, extra_args)

    return optax.GradientTransformationExtraArgs(inner.init, update_fn)


def step_leaves(
    updates: Any,
    state: Any,
    out: Any,
    new_state: Any,
    fields: Sequence[str],
    takes: Callable[[Any, list[Any]], bool],
    call: Callable[[np.dtype, list[tuple]], list[tuple]],
) -> tuple[Any, Any]:
    """``out`` and ``new_state`` with the leaves the kernel ``takes(g, state arrays)``
    replaced by the kernel's: ``call(dtype, [(g, *state arrays), ...])`` runs one call
    and gives ``[(update, *new state arrays), ...]``, the state in the order of
    ``fields`` (per-parameter fields of the NamedTuple states)."""
    g_leaves, treedef = jax.tree.flatten(updates)
    old = fields_of(state, fields, treedef)
    out_leaves = treedef.flatten_up_to(out)
    new = fields_of(new_state, fields, treedef)

    def kernel_takes(i: int) -> bool:
        return takes(g_leaves[i], [arrays[i] for arrays in old])

    for dtype, batch in batches_by_dtype(g_leaves, kernel_takes):
        operands = [(g_leaves[i], *(arrays[i] for arrays in old)) for i in batch]
        for i, (update, *arrays_i) in zip(batch, call(dtype, operands), strict=True):
            out_leaves[i] = update
            for arrays, array in zip(new, arrays_i, strict=True):
                arrays[i] = array
    return treedef.unflatten(out_leaves), with_fields(new_state, fields, new, treedef)
