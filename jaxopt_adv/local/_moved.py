"""The deprecated modules ``jaxopt_adv.sigprop`` and ``jaxopt_adv.localized``: their
names resolve to :mod:`jaxopt_adv.local`'s, with a ``DeprecationWarning``."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

HOME = "jaxopt_adv.local"


def resolve_moved(module: str, name: str, names: Sequence[str]) -> Any:
    """``jaxopt_adv.local.<name>`` for a name the deprecated ``module`` exported."""
    if name not in names:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    warnings.warn(
        f"{module}.{name} is deprecated; import it from {HOME} ({HOME}.{name})",
        DeprecationWarning,
        stacklevel=3,
    )
    from jaxopt_adv import local

    return getattr(local, name)
