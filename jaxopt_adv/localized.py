"""Deprecated: localized learning's names live in :mod:`jaxopt_adv.local`.

``from jaxopt_adv.localized import X`` still works, with a ``DeprecationWarning``; write
``from jaxopt_adv.local import X``.
"""

from __future__ import annotations

from typing import Any

from jaxopt_adv._moved import resolve_moved

_MOVED = (
    "LocalizedMLP",
    "LocalizedState",
    "advance_boundary",
    "create_localized_optimizer",
    "get_boundary",
    "hebbian_delta",
    "localized_learning",
    "localized_state",
    "set_boundary",
)


def __getattr__(name: str) -> Any:
    """Resolves an old name from :mod:`jaxopt_adv.local`, with a ``DeprecationWarning``."""
    return resolve_moved(__name__, name, ("jaxopt_adv.local",), only=_MOVED)
