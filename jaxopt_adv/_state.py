"""Finding and replacing one transform's NamedTuple state inside an optimizer state.

An optimizer state is a tree: ``optax.chain`` nests tuples, ``optax.inject_hyperparams``
puts the inner state under ``inner_state``, ``optax.MultiSteps`` under
``inner_opt_state``, and so on. :func:`find_state` and :func:`replace_state` reach the
one state of a given class wherever it sits (with ``optax.tree_utils``), so code that
reads or edits a block's state does not depend on how the block was composed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optax

__all__ = ["find_state", "replace_state"]


def _is_instance(cls: type) -> Callable[[Any, Any], bool]:
    return lambda path, value: isinstance(value, cls)


def find_state(state: Any, cls: type, hint: str = "") -> Any:
    """The one ``cls`` NamedTuple inside ``state`` (``state`` itself if it is one).

    Args:
      state: an optimizer state (any nesting of chains and wrappers).
      cls: the NamedTuple class of the state sought.
      hint: appended to the error when there is none (how to build such a state).

    Returns:
      The ``cls`` instance.

    Raises:
      ValueError: when ``state`` holds no ``cls`` or more than one.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> tx = optax.inject_hyperparams(optax.adam)(learning_rate=0.1)
      >>> find_state(tx.init(jnp.zeros(2)), optax.ScaleByAdamState).mu
      Array([0., 0.], dtype=float32)
    """
    found = optax.tree_utils.tree_get_all_with_path(state, cls.__name__, _is_instance(cls))
    if not found:
        raise ValueError(f"no {cls.__name__} in this optimizer state{hint}")
    if len(found) > 1:
        raise ValueError(f"{cls.__name__} occurs {len(found)} times in this optimizer state")
    return found[0][1]


def replace_state(state: Any, cls: type, **fields: Any) -> Any:
    """``state`` with the given fields of its one ``cls`` NamedTuple replaced.

    Raises:
      ValueError: as :func:`find_state`.
      TypeError: a name in ``fields`` is not a field of ``cls``.

    Example:
      >>> import jax.numpy as jnp, optax
      >>> state = optax.chain(optax.scale_by_adam(), optax.scale(-0.1)).init(jnp.zeros(2))
      >>> state = replace_state(state, optax.ScaleByAdamState, mu=jnp.ones(2))
      >>> state[0].mu
      Array([1., 1.], dtype=float32)
    """
    unknown = sorted(set(fields) - set(cls._fields))
    if unknown:
        raise TypeError(f"{cls.__name__} has no field {', '.join(unknown)}")
    new = find_state(state, cls)._replace(**fields)
    return optax.tree_utils.tree_set(state, _is_instance(cls), **{cls.__name__: new})
