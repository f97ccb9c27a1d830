"""Training utilities: a jitted donated train step, an epoch loop, orbax checkpoints."""

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

__all__ = [
    "CheckpointError",
    "History",
    "TrainState",
    "batch_indices",
    "fit",
    "init_train_state",
    "latest_checkpoint",
    "make_eval_step",
    "make_train_step",
    "merge_into",
    "restore_checkpoint",
    "save_checkpoint",
    "split_model",
]
