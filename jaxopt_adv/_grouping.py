"""Per-leaf maps whose traced program grows with distinct leaf shapes, not leaves.

A model repeats a few parameter shapes hundreds of times (a LoRA adapter: every layer's
``down`` and ``up`` matrices). :func:`~jaxopt_adv._common.tree_map_multi` traces the
per-leaf function once per leaf, so trace and compile time grow with the leaf count.
:func:`tree_map_grouped` has the same contract but traces it once per group of leaves
that share (shape, dtype, sharding) in every argument: the group's leaves are stacked,
the function is ``jax.vmap``-ed over the stack, and the results are split back. The
price is one copy of each stacked input and output per step (measure it against the
compile time saved); a leaf alone in its group is mapped directly, without a copy.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

__all__ = ["group_key", "tree_map_grouped"]


def _is_array(value: Any) -> bool:
    return isinstance(value, jax.Array | jax.ShapeDtypeStruct) or hasattr(value, "aval")


def group_key(values: Sequence[Any]) -> Hashable | None:
    """What leaves must share to go through one vmapped call; ``None``: map it alone.

    Arrays are keyed by (shape, dtype, sharding); other values (a per-leaf option such
    as a bool or a string) by their value when hashable. A value that is neither makes
    the leaf its own group.
    """
    key = []
    for value in values:
        if _is_array(value):
            aval = jax.typeof(value)
            key.append(("array", aval.shape, aval.dtype, getattr(aval, "sharding", None)))
        elif value is None or isinstance(value, Hashable):
            key.append(("static", type(value), value))
        else:
            return None
    return tuple(key)


def _call_stacked(fn: Callable[..., tuple], n_out: int, rows: list[tuple]) -> list[tuple]:
    """``[fn(*row) for row in rows]`` through one ``jax.vmap`` over the stacked rows."""
    first = rows[0]
    array_at = [i for i, value in enumerate(first) if _is_array(value)]

    def one(*arrays: jax.Array) -> tuple:
        args = list(first)
        for i, array in zip(array_at, arrays, strict=True):
            args[i] = array
        return tuple(fn(*args))

    stacked = [jnp.stack([row[i] for row in rows]) for i in array_at]
    outputs = jax.vmap(one)(*stacked)
    if len(outputs) != n_out:
        raise ValueError(f"fn returned {len(outputs)} values, expected n_out={n_out}")
    return [tuple(out[j] for out in outputs) for j in range(len(rows))]


def tree_map_grouped(fn: Callable[..., tuple], n_out: int, tree: Any, *rest: Any) -> tuple:
    """:func:`~jaxopt_adv._common.tree_map_multi` traced once per group of like leaves.

    ``fn`` must treat each leaf alone (no reduction across leaves inside it) and return
    an ``n_out``-tuple of arrays. Leaves whose arguments share (shape, dtype, sharding)
    — and equal non-array arguments — go through one ``jax.vmap``-ed call over their
    stack; the results are the per-leaf calls' up to the rounding of batched
    reductions.

    Example:
      >>> import jax.numpy as jnp
      >>> tree = {f"w{i}": jnp.full((2, 3), float(i)) for i in range(4)}
      >>> doubled, total = tree_map_grouped(lambda x: (2 * x, x.sum()), 2, tree)
      >>> float(total["w3"])
      18.0
    """
    leaves, treedef = jax.tree.flatten(tree)
    others = [treedef.flatten_up_to(r) for r in rest]
    if not leaves:
        return tuple(treedef.unflatten([]) for _ in range(n_out))
    rows = list(zip(leaves, *others, strict=True))
    groups: dict[Hashable, list[int]] = {}
    for index, row in enumerate(rows):
        key = group_key(row)
        groups.setdefault(("alone", index) if key is None else key, []).append(index)
    results: list[tuple | None] = [None] * len(rows)
    for members in groups.values():
        if len(members) == 1:
            results[members[0]] = tuple(fn(*rows[members[0]]))
            continue
        outs = _call_stacked(fn, n_out, [rows[i] for i in members])
        for index, out in zip(members, outs, strict=True):
            results[index] = out
    return tuple(treedef.unflatten(list(col)) for col in zip(*results, strict=True))
