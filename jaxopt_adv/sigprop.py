"""Deprecated: SigProp's names live in :mod:`jaxopt_adv.local`.

``from jaxopt_adv.sigprop import X`` still works, with a ``DeprecationWarning``; write
``from jaxopt_adv.local import X``.
"""

from __future__ import annotations

from typing import Any

from jaxopt_adv._moved import resolve_moved

_MOVED = (
    "SigPropNet",
    "create_sigprop_optimizer",
    "sigprop_labels",
    "sigprop_local_loss",
    "sigprop_optimizer",
)


def __getattr__(name: str) -> Any:
    """Resolves an old name from :mod:`jaxopt_adv.local`, with a ``DeprecationWarning``."""
    return resolve_moved(__name__, name, ("jaxopt_adv.local",), only=_MOVED)
