"""``jaxopt_adv.localized``: the public name of :mod:`jaxopt_adv.local.localized`."""

from jaxopt_adv.local.localized import (
    LocalizedMLP,
    LocalizedState,
    advance_boundary,
    create_localized_optimizer,
    get_boundary,
    hebbian_delta,
    localized_learning,
    localized_state,
    set_boundary,
)

__all__ = [
    "LocalizedMLP",
    "LocalizedState",
    "advance_boundary",
    "create_localized_optimizer",
    "get_boundary",
    "hebbian_delta",
    "localized_learning",
    "localized_state",
    "set_boundary",
]
