"""Names that moved to another package: the deprecated modules and package attributes
(``jaxopt_adv.sigprop``, ``jaxopt_adv.localized``, the Automagic and TAM names of
``jaxopt_adv.came``) resolve them here, with a ``DeprecationWarning``."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable, Collection, Sequence
from typing import Any


def resolve_moved(
    module: str, name: str, homes: Sequence[str], only: Collection[str] | None = None
) -> Any:
    """``<home>.<name>`` from the first of ``homes`` whose ``__all__`` has ``name``, for an
    old name of ``module`` (restricted to ``only`` when given); called from ``module``'s
    ``__getattr__``, so the warning points at the caller's line.

    Raises:
      AttributeError: ``module`` never had ``name``.
    """
    if only is None or name in only:
        for home in homes:
            package = importlib.import_module(home)
            if name in package.__all__:
                warnings.warn(
                    f"{module}.{name} is deprecated; import it from {home} ({home}.{name})",
                    DeprecationWarning,
                    stacklevel=3,
                )
                return getattr(package, name)
    raise AttributeError(f"module {module!r} has no attribute {name!r}")


def moved_getattr(module: str, home: str, origin: str) -> Callable[[str], Any]:
    """The ``__getattr__`` of a deprecated module ``module`` whose names are those of
    ``origin.__all__``, now imported from the package ``home``."""

    def getattr_(name: str) -> Any:
        only = importlib.import_module(origin).__all__
        return resolve_moved(module, name, (home,), only=only)

    getattr_.__doc__ = f"Resolves an old name from :mod:`{home}`, with a ``DeprecationWarning``."
    return getattr_
