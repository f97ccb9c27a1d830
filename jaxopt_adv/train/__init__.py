"""Training utilities: a jitted donated train step, an epoch loop, orbax checkpoints,
ZeRO-1 optimizer-state sharding."""

from jaxopt_adv.train.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    restore_checkpoint,
    save_checkpoint,
)
from jaxopt_adv.train.loop import History, batch_indices, fit
from jaxopt_adv.train.step import (
    TrainState,
    init_train_state,
    make_eval_step,
    make_train_step,
    merge_into,
    split_model,
)
from jaxopt_adv.train.zero import local_bytes, shard_optimizer_state, slice_shardings

__all__ = [
    "CheckpointError",
    "History",
    "TrainState",
    "batch_indices",
    "fit",
    "init_train_state",
    "latest_checkpoint",
    "local_bytes",
    "make_eval_step",
    "make_train_step",
    "merge_into",
    "restore_checkpoint",
    "save_checkpoint",
    "shard_optimizer_state",
    "slice_shardings",
    "split_model",
]
