"""Helpers shared by the ``torch.optim.lr_scheduler`` schedules."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxopt_adv._common import check, scalar_dtype

Schedule = Callable[[chex.Numeric], jax.Array]


def check_count(value: Any, name: str, minimum: int, *, traced_ok: bool = False) -> None:
    """An integer ``>= minimum``: a Python/NumPy int, or (``traced_ok``) any array."""
    if traced_ok and isinstance(value, (jax.Array, np.ndarray)):
        return  # e.g. injected through ``optax.inject_hyperparams``
    check(
        isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum,
        f"Invalid {name} value: {value} ({name} must be an integer >= {minimum})",
    )


def as_count(count: chex.Numeric) -> tuple[jax.Array, jax.Array]:
    """``(count as an integer array, count as float)``; float64 when x64 is on."""
    k = jnp.asarray(count)
    return k, k.astype(scalar_dtype())
