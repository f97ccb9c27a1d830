"""CAME: confidence-guided adaptive memory efficient optimization (Luo et al., ACL 2023).

:func:`came` is the optimizer (``pytorch_optimizer.CAME``'s numbers), :func:`scale_by_came`
its scaling block. Automagic-CameAMP and its blocks moved to :mod:`jaxopt_adv.automagic`,
TAM/AdaTAM to :mod:`jaxopt_adv.tam`; their old names here still resolve, with a
``DeprecationWarning``.
"""

from __future__ import annotations

from typing import Any

from jaxopt_adv._moved import resolve_moved
from jaxopt_adv.came.came import ScaleByCameState, came, scale_by_came

__all__ = ["ScaleByCameState", "came", "scale_by_came"]

# the packages that took over this one's other names (Automagic-CameAMP and its blocks; TAM)
_NEW_HOMES = ("jaxopt_adv.automagic", "jaxopt_adv.tam")


def __getattr__(name: str) -> Any:
    """Resolves a name that moved out of this package, with a ``DeprecationWarning``."""
    return resolve_moved(__name__, name, _NEW_HOMES)
