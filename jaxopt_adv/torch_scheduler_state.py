"""torch LR-scheduler checkpoints as the schedule counters of an optax state, and back.

An optax schedule is a function of a count kept in the optimizer's state
(``optax.ScaleByScheduleState`` inside the ``jaxopt_adv.torch`` transforms; ASGD and
Rprop read theirs at the optimizer's step), so a torch scheduler's ``last_epoch`` is that
count; ``ReduceLROnPlateau``'s counters are the fields of
:class:`jaxopt_adv.torch.ReduceLROnPlateauState`. The functions here are re-exported by
:mod:`jaxopt_adv.interop`; :mod:`jaxopt_adv.torch_state` describes ``tx`` and ``params``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jax.numpy as jnp
import optax

from jaxopt_adv import interop
from jaxopt_adv.torch.lr_scheduler import ReduceLROnPlateauState
from jaxopt_adv.torch_state import _count, _groups, _lr_at, _map_nodes, _nodes, _unwrap
from jaxopt_adv.torch_state_keys import SPECS

__all__ = ["export_torch_scheduler_state", "load_torch_scheduler_state"]


def _is_plateau(state_dict: Mapping[str, Any]) -> bool:
    return "num_bad_epochs" in state_dict and "best" in state_dict


def _base_lrs(tx: Any, state: Any, params: Any, base_lr: Any) -> list[float]:
    """Each group's lr before the plateau scales it (``base_lr`` or the factory's)."""
    groups = _groups(tx, state, params)
    if base_lr is not None:
        return [float(base_lr)] * len(groups)
    lrs = [group.twin.arguments["learning_rate"] for group in groups]
    if any(callable(lr) for lr in lrs):
        raise ValueError("the optimizer's learning rate is a schedule: pass base_lr=")
    return [float(lr) for lr in lrs]


def _plateau(state: Any) -> ReduceLROnPlateauState:
    nodes = _nodes(state, ReduceLROnPlateauState)
    if len(nodes) != 1:
        raise ValueError(
            f"a ReduceLROnPlateau state_dict needs one reduce_lr_on_plateau in the transform, "
            f"found {len(nodes)}"
        )
    return nodes[0]


def load_torch_scheduler_state(
    state_dict: Mapping[str, Any],
    tx: Any,
    opt_state: optax.OptState,
    params: Any,
    *,
    base_lr: Any = None,
) -> optax.OptState:
    """``opt_state`` with a torch scheduler's progress from its ``state_dict()``.

    A schedule's count becomes ``last_epoch`` (call this after
    :func:`jaxopt_adv.interop.load_torch_optimizer_state`, which sets it to the
    optimizer's step). For ``ReduceLROnPlateau`` the transform's
    ``reduce_lr_on_plateau`` takes ``last_epoch``, ``best``, ``num_bad_epochs``,
    ``cooldown_counter`` and the scale ``_last_lr[0] / base_lr``.

    Args:
      state_dict: ``scheduler.state_dict()``.
      tx: the transform (see :mod:`jaxopt_adv.torch_state`).
      opt_state: its state, e.g. from ``load_torch_optimizer_state``.
      params: the parameters.
      base_lr: the optimizer's lr before the plateau's reductions; default the
        factory's ``learning_rate`` (a number).

    Returns:
      The new state.

    Raises:
      ValueError: the transform has no schedule (or no ``reduce_lr_on_plateau``) to take
        the state, or ASGD's / Rprop's schedule, which follows the optimizer's step, is at
        another count than ``last_epoch``.
    """
    base, to_tree, from_tree = _unwrap(tx)
    state = to_tree(opt_state, params)
    last_epoch = int(state_dict["last_epoch"])
    if _is_plateau(state_dict):
        old = _plateau(state)
        lr = float(interop.to_numpy(state_dict["_last_lr"][0]))
        new = ReduceLROnPlateauState(
            count=jnp.asarray(last_epoch, old.count.dtype),
            scale=jnp.asarray(lr / _base_lrs(base, state, params, base_lr)[0], old.scale.dtype),
            best=jnp.asarray(float(state_dict["best"]), old.best.dtype),
            num_bad_epochs=jnp.asarray(state_dict["num_bad_epochs"], old.num_bad_epochs.dtype),
            cooldown_counter=jnp.asarray(
                state_dict["cooldown_counter"], old.cooldown_counter.dtype
            ),
        )
        state = _map_nodes(state, lambda n: new if isinstance(n, ReduceLROnPlateauState) else n)
        return from_tree(state, params)
    if _nodes(state, optax.ScaleByScheduleState):

        def at(node: Any) -> Any:
            if isinstance(node, optax.ScaleByScheduleState):
                return node._replace(count=jnp.asarray(last_epoch, node.count.dtype))
            return node

        return from_tree(_map_nodes(state, at), params)
    for group in _groups(base, state, params):
        lr = group.twin.arguments["learning_rate"]
        count = _count(state, SPECS[group.twin.torch_class])
        if not callable(lr) or count != last_epoch:
            raise ValueError(
                f"the transform has no learning-rate schedule at last_epoch={last_epoch} "
                f"(torch.optim.{group.twin.torch_class}, learning_rate={lr!r}, step {count})"
            )
    return from_tree(state, params)


def _sequential(last_epoch: int, milestones: Sequence[int]) -> list[dict[str, Any]]:
    """The sub-schedulers' ``last_epoch`` inside a ``SequentialLR`` at ``last_epoch``."""
    ends = [*milestones, None]
    subs = []
    for i, end in enumerate(ends):
        start = 0 if i == 0 else milestones[i - 1]
        if last_epoch < start:
            epoch = -1
        else:
            epoch = (last_epoch if end is None else min(last_epoch, end - 1)) - start
        subs.append({"last_epoch": epoch, "_step_count": epoch + 2})
    return subs


def export_torch_scheduler_state(
    opt_state: optax.OptState,
    tx: Any,
    params: Any,
    *,
    milestones: Sequence[int] | None = None,
) -> dict[str, Any]:
    """A torch scheduler's ``state_dict`` for the schedule in ``opt_state``.

    Load it with ``scheduler.load_state_dict`` into the scheduler built as the schedule
    was (torch's schedulers update their attributes from the dict: the counters here are
    what changes while training).

    Args:
      opt_state: the state of ``tx``.
      tx: the transform (see :mod:`jaxopt_adv.torch_state`).
      params: the parameters.
      milestones: for a ``SequentialLR``, its milestones (its sub-schedulers' counters
        are written too).

    Returns:
      ``{"last_epoch", "_step_count", "_last_lr"}`` (plus ``"_schedulers"`` with
      ``milestones``), or for ``reduce_lr_on_plateau`` ``{"last_epoch", "best",
      "num_bad_epochs", "cooldown_counter", "_last_lr"}``.

    Raises:
      ValueError: the transform's optimizer keeps no count to read.
    """
    base, to_tree, _ = _unwrap(tx)
    state = to_tree(opt_state, params)
    groups = _groups(base, state, params)
    plateaus = _nodes(state, ReduceLROnPlateauState)
    if plateaus:
        plateau = _plateau(state)
        scale = float(plateau.scale)
        return {
            "last_epoch": int(plateau.count),
            "best": float(plateau.best),
            "num_bad_epochs": int(plateau.num_bad_epochs),
            "cooldown_counter": int(plateau.cooldown_counter),
            "_last_lr": [lr * scale for lr in _base_lrs(base, state, params, None)],
        }
    schedules = _nodes(state, optax.ScaleByScheduleState)
    count = (
        int(schedules[0].count) if schedules else _count(state, SPECS[groups[0].twin.torch_class])
    )
    if count is None:
        raise ValueError("the transform keeps no count for its learning-rate schedule")
    exported: dict[str, Any] = {
        "last_epoch": count,
        "_step_count": count + 1,
        "_last_lr": [_lr_at(group.twin, count) for group in groups],
    }
    if milestones is not None:
        exported["_schedulers"] = _sequential(count, list(milestones))
    return exported
