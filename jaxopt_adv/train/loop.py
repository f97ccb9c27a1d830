"""An epoch loop for Flax NNX models: shuffled mini-batches, progress bar, history,
gradient accumulation, clipping, evaluation and resumable checkpoints.

Batches are a pure function of ``(seed, epoch)``, and the checkpoint holds the step, the
parameters, the optimizer state and the model's RNG state, so a run resumed from a
checkpoint continues bit for bit as the uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx
from flax.nnx.filterlib import Filter
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from jaxopt_adv.fast import FusedOptimizer
from jaxopt_adv.train.checkpoint import latest_checkpoint, restore_checkpoint, save_checkpoint
from jaxopt_adv.train.step import (
    LossFn,
    TrainState,
    init_train_state,
    make_eval_step,
    make_train_step,
    merge_into,
    split_model,
)


@dataclasses.dataclass
class History:
    """Metrics of a run: one value per step, and one per epoch (means over the epoch)."""

    steps: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    epochs: dict[str, list[float]] = dataclasses.field(default_factory=dict)

    def record_step(self, metrics: dict[str, Any]) -> None:
        _append(self.steps, metrics)

    def record_epoch(self, metrics: dict[str, Any]) -> None:
        _append(self.epochs, metrics)


def _append(table: dict[str, list[float]], values: dict[str, Any]) -> None:
    for key, value in values.items():
        table.setdefault(key, []).append(float(value))


def batch_indices(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The epoch's shuffled mini-batches (the last partial batch is dropped)."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    return [order[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def _eval_batches(data: Sequence[np.ndarray], batch_size: int) -> Iterator[tuple]:
    n = len(data[0])
    for i in range(0, n, batch_size):
        yield tuple(a[i : i + batch_size] for a in data)


def fit(
    model: nnx.Module,
    tx: optax.GradientTransformation | FusedOptimizer,
    loss_fn: LossFn,
    train_data: Sequence[np.ndarray],
    *,
    epochs: int = 1,
    batch_size: int = 32,
    seed: int = 0,
    eval_data: Sequence[np.ndarray] | None = None,
    accumulate_steps: int = 1,
    clip: optax.GradientTransformation | None = None,
    learning_rate: optax.ScalarOrSchedule | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    max_steps: int | None = None,
    progress: bool = True,
    wrt: Filter = nnx.Param,
) -> tuple[TrainState, History]:
    """Train ``model`` in place on ``train_data`` for ``epochs`` epochs.

    Args:
      model: a Flax NNX model (put it in train mode; evaluation switches a copy to eval).
      tx: the optimizer: an optax transform, or a
        :class:`jaxopt_adv.fast.FusedOptimizer` (one fused pass per leaf on CPU; not
        combinable with ``clip`` or ``accumulate_steps``).
      loss_fn: ``loss_fn(model, batch) -> (loss, aux)`` with ``batch`` a tuple of arrays
        sliced from ``train_data`` and ``aux`` a dict of scalar metrics.
      train_data: arrays with a common first (example) axis, e.g. ``(x, y)``.
      epochs: number of passes over the data.
      batch_size: examples per step (the last partial batch of an epoch is dropped).
      seed: shuffling seed; batches depend only on ``(seed, epoch)``.
      eval_data: optional arrays evaluated with ``loss_fn`` after every epoch.
      accumulate_steps: average gradients over this many steps per update
        (``optax.MultiSteps``).
      clip: optional transform applied to the gradients first (e.g.
        ``jaxopt_adv.torch.clip_grad_norm(1.0)``, or ``optax.clip_by_global_norm``).
      learning_rate: scalar or schedule, only to report ``lr`` in the history.
      checkpoint_dir: where to write checkpoints ``step_<n>`` (none when ``None``).
      checkpoint_every: save every this many steps (and at the end) when a
        ``checkpoint_dir`` is given.
      resume: continue from the latest checkpoint in ``checkpoint_dir`` if there is one.
      max_steps: stop after this many steps in total (counting resumed ones).
      progress: show a progress bar (rich) on the terminal.
      wrt: which variables to train (default every ``nnx.Param``; ``nnx.LoRAParam`` for
        LoRA adapters only, the rest stays frozen).

    Returns:
      ``(state, history)``: the final ``TrainState`` (also written back into ``model``)
      and the per-step and per-epoch metrics.
    """
    if epochs < 0 or batch_size < 1 or accumulate_steps < 1:
        raise ValueError(
            f"need epochs >= 0, batch_size >= 1 and accumulate_steps >= 1; got {epochs}, "
            f"{batch_size} and {accumulate_steps}"
        )
    n = len(train_data[0])
    if any(len(a) != n for a in train_data):
        raise ValueError("train_data arrays must share their first (example) axis")
    steps_per_epoch = n // batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size {batch_size} is larger than the {n} training examples")

    if isinstance(tx, FusedOptimizer) and (clip is not None or accumulate_steps > 1):
        raise TypeError(
            "a fused optimizer (jaxopt_adv.fast.fused) cannot be wrapped for clip= or "
            "accumulate_steps=; pass its optax transform (.tx) instead"
        )
    if clip is not None:
        tx = optax.chain(clip, tx)
    if accumulate_steps > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=accumulate_steps)
    graphdef = split_model(model, wrt)[0]
    state = init_train_state(model, tx, wrt)
    if resume and checkpoint_dir is not None:
        latest = latest_checkpoint(checkpoint_dir)
        if latest is not None:
            state = restore_checkpoint(latest, state)
    train_step = make_train_step(graphdef, loss_fn, tx, learning_rate=learning_rate, wrt=wrt)
    eval_step = make_eval_step(graphdef, loss_fn) if eval_data is not None else None

    total = (
        epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    )
    step = int(state.step)
    history = History()
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    columns += [TimeElapsedColumn(), TextColumn("{task.fields[status]}")]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("train", total=total, completed=step, status="")
        for epoch in range(step // steps_per_epoch, epochs):
            if step >= total:
                break
            epoch_start, epoch_metrics = time.perf_counter(), {}
            for idx in batch_indices(n, batch_size, seed, epoch)[step % steps_per_epoch :]:
                start = time.perf_counter()
                state, metrics = train_step(state, tuple(a[idx] for a in train_data))
                metrics = jax.device_get(metrics)
                metrics["step_time"] = time.perf_counter() - start
                history.record_step(metrics)
                _append(epoch_metrics, metrics)
                step += 1
                bar.update(task, advance=1, status=f"epoch {epoch + 1} loss {metrics['loss']:.4f}")
                if checkpoint_dir is not None and checkpoint_every and step % checkpoint_every == 0:
                    _save(checkpoint_dir, state, step)
                if step >= total:
                    break
            summary = {f"train_{k}": np.mean(v) for k, v in epoch_metrics.items()}
            summary["epoch_time"] = time.perf_counter() - epoch_start
            if eval_step is not None:
                summary.update(_evaluate(eval_step, state, eval_data, batch_size))
            history.record_epoch(summary)
    if checkpoint_dir is not None and step > 0:
        _save(checkpoint_dir, state, step)
    merge_into(model, state)
    return state, history


def _save(directory: str | os.PathLike, state: TrainState, step: int) -> None:
    path = Path(directory) / f"step_{step:08d}"
    if not path.exists():
        save_checkpoint(path, state)


def _evaluate(eval_step, state: TrainState, data: Sequence[np.ndarray], batch_size: int):
    """Example-weighted means of the eval metrics, as ``eval_<name>``."""
    sums: dict[str, float] = {}
    count = 0
    for batch in _eval_batches(data, batch_size):
        size = len(batch[0])
        for key, value in jax.device_get(eval_step(state, batch)).items():
            sums[key] = sums.get(key, 0.0) + float(value) * size
        count += size
    return {f"eval_{k}": v / count for k, v in sums.items()}
