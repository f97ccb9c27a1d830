"""Helpers shared by the ``torch.optim.lr_scheduler`` schedules."""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

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


# (k, lr) -> lr: how a torch scheduler moves the group's lr at its step k (k = 0: the
# step its constructor takes)
StepMap = Callable[[jax.Array, jax.Array], jax.Array]


class TorchRule(NamedTuple):
    """How the torch scheduler behind a schedule of this package moves the lr.

    :func:`~jaxopt_adv.torch.lr_compose.chained_scheduler` and
    :func:`~jaxopt_adv.torch.lr_compose.sequential_lr` read it (:func:`rule_of`) to
    reproduce torch's composition; optax schedules carry none.
    """

    torch_class: str  # e.g. "LambdaLR", for messages
    step: StepMap | None  # None: the scheduler sets the lr to its own value (it overwrites)
    product: bool = True  # its value is the base lr times the product of its step factors
    # sequential_lr after a milestone: (count since the milestone, lr before it) -> lr;
    # None: the schedule's own value; a string: why torch fails there
    restart: StepMap | str | None = None


def with_rule(schedule: Schedule, rule: TorchRule) -> Schedule:
    """``schedule``, tagged with how its torch scheduler moves the lr."""
    schedule.torch_rule = rule  # type: ignore[attr-defined]
    return schedule


def rule_of(schedule: Schedule) -> TorchRule | None:
    """The :class:`TorchRule` of a schedule of this package, ``None`` for others."""
    rule = getattr(schedule, "torch_rule", None)
    return rule if isinstance(rule, TorchRule) else None


def scaling(torch_class: str, factor: Callable[[jax.Array], Any], **kwargs: Any) -> TorchRule:
    """The rule of a chainable scheduler whose step multiplies the lr by ``factor(k)``
    (k = 0 included), as torch writes it: ``group["lr"] * factor``."""

    def step(k, lr):
        return lr * jnp.asarray(factor(k), lr.dtype)

    return TorchRule(torch_class, step, **kwargs)
