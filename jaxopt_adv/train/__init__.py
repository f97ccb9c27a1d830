"""Training utilities: a jitted donated train step, an epoch loop, orbax checkpoints,
ZeRO-1 optimizer-state sharding."""

from jaxopt_adv.train import step
from jaxopt_adv.train.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from jaxopt_adv.train.loop import History, batch_indices, fit
from jaxopt_adv.train.step import *  # noqa: F403 (as step.__all__ lists them)
from jaxopt_adv.train.zero import local_bytes, shard_optimizer_state, slice_shardings

__all__ = [
    "CheckpointError",
    "History",
    "batch_indices",
    "fit",
    "latest_checkpoint",
    "local_bytes",
    "restore_checkpoint",
    "save_checkpoint",
    "shard_optimizer_state",
    "slice_shardings",
    *step.__all__,
]
