"""Which ``torch.optim`` class a transform reproduces, and with which arguments.

:func:`torch_twin` decorates a factory of :mod:`jaxopt_adv.torch`: every transform it
builds is remembered (weakly, by its ``update`` function) with the torch class name and
the factory's bound arguments, defaults included. :mod:`jaxopt_adv.torch_state` reads
them to write torch's ``param_groups`` when it exports an optimizer state.
"""

from __future__ import annotations

import functools
import inspect
import weakref
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import optax

Factory = TypeVar("Factory", bound=Callable[..., optax.GradientTransformation])

_TWINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


class TorchTwin(NamedTuple):
    """The torch class a transform reproduces and the arguments it was built with."""

    torch_class: str  # e.g. "AdamW"
    arguments: dict[str, Any]  # the factory's arguments by name, defaults included


def torch_twin(torch_class: str) -> Callable[[Factory], Factory]:
    """Decorate a factory so that :func:`twin_of` knows what its transforms are.

    Example:
      >>> import optax
      >>> @torch_twin("SGD")
      ... def plain_sgd(learning_rate=1e-3):
      ...     return optax.sgd(learning_rate)
      >>> twin_of(plain_sgd(0.5))
      TorchTwin(torch_class='SGD', arguments={'learning_rate': 0.5})
    """

    def decorate(factory: Factory) -> Factory:
        signature = inspect.signature(factory)

        @functools.wraps(factory)
        def build(*args: Any, **kwargs: Any) -> optax.GradientTransformation:
            tx = factory(*args, **kwargs)
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            _TWINS[tx.update] = TorchTwin(torch_class, dict(bound.arguments))
            return tx

        return build  # type: ignore[return-value]

    return decorate


def twin_of(tx: optax.GradientTransformation) -> TorchTwin | None:
    """The :class:`TorchTwin` of a transform built by a decorated factory, else ``None``."""
    return _TWINS.get(tx.update)
