"""CAME: confidence-guided adaptive memory efficient optimization (Luo et al., ACL 2023).

:func:`came` is the optimizer (``pytorch_optimizer.CAME``'s numbers), :func:`scale_by_came`
its scaling block. Automagic-CameAMP and its blocks moved to :mod:`jaxopt_adv.automagic`,
TAM/AdaTAM to :mod:`jaxopt_adv.tam`; their old names here still resolve, with a
``DeprecationWarning``.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from jaxopt_adv.came.came import ScaleByCameState, came, scale_by_came

__all__ = ["ScaleByCameState", "came", "scale_by_came"]

_MOVED_TO_TAM = (
    "ScaleByAdaTamState",
    "ScaleByTamState",
    "adatam",
    "scale_by_adatam",
    "scale_by_tam",
    "tam",
    "torque_aware_momentum_update",
)
_MOVED_TO_AUTOMAGIC = (
    "AutomagicConfig",
    "AutomagicLrMaskState",
    "EdgeDampingState",
    "SelectiveProjectionDecayState",
    "agr",
    "automagic_came_amp",
    "automagic_lr_mask",
    "automagic_stats",
    "cautious",
    "create_full_finetune_optimizer",
    "create_lora_optimizer",
    "edge_damping",
    "edge_strength",
    "frequency_penalty",
    "full_finetune_config",
    "grams",
    "laplacian",
    "lora_config",
    "low_rank_penalty",
    "orthogonalize_update",
    "phase_of",
    "selective_projection_decay",
    "with_reference_grads",
    "with_torch_layout",
)
_MOVED = {name: "jaxopt_adv.tam" for name in _MOVED_TO_TAM} | {
    name: "jaxopt_adv.automagic" for name in _MOVED_TO_AUTOMAGIC
}


def __getattr__(name: str) -> Any:
    """Resolves a name that moved out of this package, with a ``DeprecationWarning``."""
    if name not in _MOVED:
        raise AttributeError(f"module 'jaxopt_adv.came' has no attribute {name!r}")
    home = _MOVED[name]
    warnings.warn(
        f"jaxopt_adv.came.{name} moved to {home}.{name}; the old name will be removed",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(home), name)
