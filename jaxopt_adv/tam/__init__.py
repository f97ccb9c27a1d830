"""Torque-aware momentum: :func:`tam` and :func:`adatam` (Malviya et al. 2024), and the
per-leaf rule :func:`torque_aware_momentum_update` that Automagic-CameAMP reuses."""

from jaxopt_adv.tam.tam import (
    CORRELATIONS,
    ScaleByAdaTamState,
    ScaleByTamState,
    adatam,
    scale_by_adatam,
    scale_by_tam,
    tam,
    torque_aware_momentum_update,
)

__all__ = [
    "CORRELATIONS",
    "ScaleByAdaTamState",
    "ScaleByTamState",
    "adatam",
    "scale_by_adatam",
    "scale_by_tam",
    "tam",
    "torque_aware_momentum_update",
]
