"""``jaxopt-adv compare``: train one model with every optimizer on bundled real data.

A fixed, class-balanced tenth of the training set is held out for validation; the rest
trains. Every optimizer trains through what it needs (:mod:`jaxopt_adv.app.recipes`),
dropout off, with mini-batches that are a pure function of ``(seed, epoch)``.

Runs of one optimizer train together in one compiled program, ``jax.vmap`` over the
members ``(seed, learning rate)``: every seed of the comparison at once, and with
``--tune`` first a grid of learning rates (7 points a factor ``sqrt(10)`` apart around
the optimizer's rate in :data:`TUNED_LEARNING_RATES`, or ``--lr-grid``) from the same
initial weights on the same batches (seed 0). When the default grid's best rate is at
one of its ends, the grid grows by two rates past that end (at most twice), as careful
tuning does; a ``--lr-grid`` is never extended. The rate with the lowest final
validation loss is then trained on the other seeds (the grid's member is seed 0's run).
Without ``--tune`` each optimizer trains at its rate in :data:`TUNED_LEARNING_RATES`.

For torch-exact optimizers with torch installed, :mod:`jaxopt_adv.app.fidelity` measures
how closely we track ``torch.optim`` (the ``torch step dev`` and ``free-run loss dev``
columns).
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxopt_adv.app.recipes import Recipe, family, make_recipe
from jaxopt_adv.datasets import Dataset, _split_per_class
from jaxopt_adv.train.loop import batch_indices
from jaxopt_adv.train.step import split_model

__all__ = [
    "DEFAULT_OPTIMIZERS",
    "GRID_POINTS",
    "GridRun",
    "Member",
    "TUNED_LEARNING_RATES",
    "CompareConfig",
    "Splits",
    "Trainer",
    "lr_grid",
    "run_compare",
    "split_data",
]

# one optimizer of every family that trains through the standard step (and SGD)
DEFAULT_OPTIMIZERS = ("torch.sgd", "torch.adamw", "came", "gradient_correction")
GRID_POINTS = 7
GRID_FACTOR = math.sqrt(10.0)  # between neighbouring points of the default grid
GRID_EXTENSIONS = 2  # at most, each by EXTENSION_POINTS rates past the grid's best end
EXTENSION_POINTS = 2
VALIDATION_FRACTION = 0.1

# The learning rate of each optimizer found by
#   jaxopt-adv compare --optimizers all --tune --seeds 3 --epochs 5   (mnist5k, MLP)
# (the rate with the lowest validation loss in its grid); rerun that command and copy
# each record's "learning_rate" here after changing a recipe or a default.
TUNED_LEARNING_RATES: dict[str, float] = {
    "adatam": 0.000316,
    "automagic_came_amp": 0.00316,
    "came": 0.000316,
    "fast.adatam": 0.000316,  # the kernel twins: their algorithm's rate (same steps)
    "fast.came": 0.000316,
    "fast.tam": 0.3,
    "fer": 0.01,
    "gradient_correction": 0.01,
    "localized_learning": 0.0949,
    "mu_adam": 0.00316,
    "mu_adamw": 0.00316,
    "mu_sgd": 0.3,
    "sigprop": 0.00999,
    "tam": 0.3,
    "torch.adadelta": 0.316,
    "torch.adafactor": 0.316,
    "torch.adagrad": 0.0316,
    "torch.adam": 0.01,
    "torch.adamax": 0.02,
    "torch.adamw": 0.00999,
    "torch.asgd": 0.5,
    "torch.lbfgs": 1.0,
    "torch.muon": 0.00632,
    "torch.nadam": 0.00632,
    "torch.radam": 0.01,
    "torch.rmsprop": 0.00316,
    "torch.rprop": 0.00316,
    "torch.sgd": 0.3,
    "torch.sparse_adam": 0.00316,
}
DEFAULT_LEARNING_RATE = 1e-3  # an optimizer registered after the table was made


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """What ``jaxopt-adv compare`` runs (the command-line flags)."""

    optimizers: Sequence[str] = DEFAULT_OPTIMIZERS
    data: str = "mnist5k"
    model: str = "mlp"
    epochs: int = 5
    seeds: int = 2
    batch_size: int = 128
    torch: bool = True
    progress: bool = True
    tune: bool = False
    lr_grid: Sequence[float] | None = None  # None: GRID_POINTS around each default


def default_learning_rate(name: str) -> float:
    """The rate ``compare`` trains ``name`` with when it does not tune."""
    return TUNED_LEARNING_RATES.get(name, DEFAULT_LEARNING_RATE)


def lr_grid(center: float, points: int = GRID_POINTS) -> list[float]:
    """``points`` learning rates a factor ``sqrt(10)`` apart, centred on ``center``."""
    offsets = np.arange(points) - (points - 1) / 2
    return [float(center * GRID_FACTOR**k) for k in offsets]


class Splits(NamedTuple):
    """Model inputs and labels of the training, validation and test splits."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def split_data(data: Dataset, model: str) -> Splits:
    """Hold out a fixed class-balanced tenth of the training set for validation; flat
    rows for the MLP, NHWC images for the CNN."""
    train, val = _split_per_class(data.x_train, data.y_train, VALIDATION_FRACTION, seed=0)

    def inputs(x: np.ndarray) -> np.ndarray:
        return x if model == "mlp" else x.reshape(len(x), *data.image_shape, 1)

    return Splits(
        inputs(data.x_train[train]),
        data.y_train[train],
        inputs(data.x_train[val]),
        data.y_train[val],
        inputs(data.x_test),
        data.y_test,
    )


class Member(NamedTuple):
    """One run of a vmapped program."""

    seed: int
    learning_rate: float


@dataclasses.dataclass
class GridRun:
    """The curves of the members of one program (axis 0: epoch or step, axis 1: member)."""

    members: list[Member]
    train_loss: np.ndarray  # epoch means
    step_loss: np.ndarray
    val_loss: np.ndarray
    val_accuracy: np.ndarray
    test_accuracy: np.ndarray
    epoch_time_s: float  # wall time of an epoch of the whole program, compilation excluded
    state_bytes_per_param: float


def _accuracy(logits: jax.Array, y: jax.Array) -> jax.Array:
    return (logits.argmax(-1) == y).mean()


class Trainer:
    """Train one optimizer's :class:`~jaxopt_adv.app.recipes.Recipe`, many runs per program.

    The compiled programs (initialisation, epoch, evaluation) depend only on the number
    of members, so every seed and every learning rate of the same count reuses them.
    """

    def __init__(self, recipe: Recipe, splits: Splits, epochs: int, batch_size: int) -> None:
        self.recipe, self.splits, self.epochs, self.batch_size = recipe, splits, epochs, batch_size
        self.graphdef = split_model(recipe.build(0))[0]
        self._arrays = tuple(jnp.asarray(a) for a in splits)
        self._init = jax.jit(jax.vmap(self._init_one))
        self._epoch = jax.jit(
            jax.vmap(self._epoch_one, in_axes=(0, 0, 0, None, None, None)), donate_argnums=0
        )
        self._evaluate = jax.jit(jax.vmap(self._evaluate_one, in_axes=(0, None, None, None, None)))

    def initial(self, seed: int) -> tuple[Any, Any]:
        """(params, rest) of the model built from the seed, pure arrays."""
        model = self.recipe.build(seed)
        _, params, rest = split_model(model)
        return nnx.as_pure(self.recipe.prepare(params)), nnx.as_pure(rest)

    def _init_one(self, params: Any, rest: Any, lr: jax.Array) -> tuple[Any, Any, Any]:
        return params, rest, self.recipe.optimizer(lr).init(params)

    def _objective(self, params: Any, rest: Any, opt_state: Any, batch: tuple):
        model = nnx.merge(self.graphdef, params, rest)
        loss, aux = self.recipe.loss(model, opt_state, batch)
        return loss, (aux, nnx.as_pure(split_model(model)[2]))

    def _epoch_one(self, carry, lr, order, epoch, x, y):
        tx = self.recipe.optimizer(lr)
        params, rest, opt_state = carry
        carry = (params, rest, self.recipe.at_epoch_start(opt_state, epoch))

        def step(carry, idx):
            params, rest, opt_state = carry
            batch = (x[idx], y[idx], idx, epoch)
            objective = jax.value_and_grad(self._objective, has_aux=True)
            (loss, (aux, new_rest)), grads = objective(params, rest, opt_state, batch)

            def value_fn(p: Any) -> jax.Array:
                return self._objective(p, rest, opt_state, batch)[0]

            extra = self.recipe.extra_args(loss, aux, batch, value_fn)
            updates, opt_state = tx.update(grads, opt_state, params, **extra)
            return (optax.apply_updates(params, updates), new_rest, opt_state), loss

        return jax.lax.scan(step, carry, order)

    def _evaluate_one(self, carry, x_val, y_val, x_test, y_test):
        params, rest, _ = carry
        model = nnx.merge(self.graphdef, params, rest)
        model.eval()
        val_logits = self.recipe.logits(model, x_val)
        val_loss = optax.softmax_cross_entropy_with_integer_labels(val_logits, y_val).mean()
        test_logits = self.recipe.logits(model, x_test)
        return val_loss, _accuracy(val_logits, y_val), _accuracy(test_logits, y_test)

    def _orders(self, members: Sequence[Member], epoch: int) -> np.ndarray:
        n = len(self.splits.y_train)
        if self.recipe.full_batch:
            return np.broadcast_to(np.arange(n), (len(members), 1, n))
        return np.stack([batch_indices(n, self.batch_size, m.seed, epoch) for m in members])

    def run(self, members: Sequence[Member]) -> GridRun:
        """Train every member for the configured epochs, all in one program; their curves
        (validation and test after every epoch)."""
        starts = [self.initial(m.seed) for m in members]
        params, rest = jax.tree.map(lambda *a: jnp.stack(a), *starts)
        lrs = jnp.asarray([m.learning_rate for m in members], jnp.float32)
        carry = self._init(params, rest, lrs)
        x, y, x_val, y_val, x_test, y_test = self._arrays
        curves: dict[str, list[np.ndarray]] = {}
        times = []
        for epoch in range(self.epochs):
            start = time.perf_counter()
            order = jnp.asarray(self._orders(members, epoch))
            carry, losses = self._epoch(carry, lrs, order, epoch, x, y)
            evaluated = self._evaluate(carry, x_val, y_val, x_test, y_test)
            losses, evaluated = jax.device_get((losses, evaluated))
            times.append(time.perf_counter() - start)
            for key, value in zip(
                ("step_loss", "train_loss", "val_loss", "val_accuracy", "test_accuracy"),
                (losses.T, losses.mean(axis=1), *evaluated),
                strict=True,
            ):
                curves.setdefault(key, []).append(np.asarray(value, np.float64))
        one_state = jax.tree.map(lambda a: a[0], carry[2])
        return GridRun(
            members=list(members),
            train_loss=np.stack(curves["train_loss"]),
            step_loss=np.concatenate(curves["step_loss"]),
            val_loss=np.stack(curves["val_loss"]),
            val_accuracy=np.stack(curves["val_accuracy"]),
            test_accuracy=np.stack(curves["test_accuracy"]),
            epoch_time_s=statistics.median(times[1:] if len(times) > 1 else times),
            state_bytes_per_param=state_bytes_per_param(one_state, carry[0]) * len(members),
        )


def state_bytes_per_param(opt_state: Any, params: Any) -> float:
    """Optimizer-state bytes per parameter element (``params`` may be stacked)."""
    state = sum(np.asarray(x).nbytes for x in jax.tree.leaves(opt_state))
    return state / sum(math.prod(np.shape(x)) for x in jax.tree.leaves(params))


def best_index(val_loss: np.ndarray) -> int:
    """The member with the lowest final validation loss (non-finite: never)."""
    final = np.where(np.isfinite(val_loss[-1]), val_loss[-1], np.inf)
    return int(np.argmin(final))


def grid_extension(grid: Sequence[float], best: int) -> list[float]:
    """:data:`EXTENSION_POINTS` rates past the end of the ascending ``grid`` where its best
    member ``best`` lies, at the grid's spacing there; none when ``best`` is inside."""
    if best == 0:
        factor = grid[0] / grid[1]
    elif best == len(grid) - 1:
        factor = grid[-1] / grid[-2]
    else:
        return []
    return [float(grid[best] * factor**k) for k in range(1, EXTENSION_POINTS + 1)]


def merge_runs(first: GridRun, second: GridRun) -> GridRun:
    """The two programs' members as one run, in ascending learning rate."""
    members = first.members + second.members
    order = np.argsort([m.learning_rate for m in members], kind="stable")
    keys = ("train_loss", "step_loss", "val_loss", "val_accuracy", "test_accuracy")
    curves = {k: np.concatenate([getattr(first, k), getattr(second, k)], axis=1) for k in keys}
    return GridRun(
        members=[members[i] for i in order],
        **{k: v[:, order] for k, v in curves.items()},
        epoch_time_s=first.epoch_time_s + second.epoch_time_s,
        state_bytes_per_param=first.state_bytes_per_param,
    )


def tune(trainer: Trainer, grid: Sequence[float], extend: bool) -> tuple[GridRun, int]:
    """Seed 0 trained at every rate of the ascending ``grid``, the grid extended past its
    best end while ``extend`` (at most :data:`GRID_EXTENSIONS` times); the run and the
    number of extensions."""
    run = trainer.run([Member(0, lr) for lr in grid])
    extensions = 0
    while extend and extensions < GRID_EXTENSIONS:
        rates = [m.learning_rate for m in run.members]
        more = grid_extension(rates, best_index(run.val_loss))
        if not more:
            break
        run = merge_runs(run, trainer.run([Member(0, lr) for lr in more]))
        extensions += 1
    return run, extensions


def _select(run: GridRun, index: int) -> dict[str, np.ndarray]:
    keys = ("train_loss", "step_loss", "val_loss", "val_accuracy", "test_accuracy")
    return {k: getattr(run, k)[:, index] for k in keys}


def train_optimizer(
    name: str, config: CompareConfig, data: Dataset, splits: Splits, say: Callable[[str], None]
) -> tuple[dict[str, Any], np.ndarray]:
    """Tune (optionally) and train ``name``; its record and seed 0's per-step losses."""
    recipe = make_recipe(name, data, config.model, len(splits.y_train), config.epochs)
    trainer = Trainer(recipe, splits, config.epochs, config.batch_size)
    tuning = None
    start = time.perf_counter()
    if config.tune:
        default_grid = config.lr_grid is None
        grid = sorted(lr_grid(default_learning_rate(name)) if default_grid else config.lr_grid)
        tuning, extensions = tune(trainer, grid, extend=default_grid)
        grid = [m.learning_rate for m in tuning.members]
        best = best_index(tuning.val_loss)
        chosen, runs = grid[best], [_select(tuning, best)]
        seeds = range(1, config.seeds)
    else:
        chosen, runs, seeds = default_learning_rate(name), [], range(config.seeds)
    timing = tuning
    if len(seeds):
        final = trainer.run([Member(seed, chosen) for seed in seeds])
        runs += [_select(final, i) for i in range(len(seeds))]
        timing = final
    assert timing is not None  # at least one seed
    test = [r["test_accuracy"][-1] for r in runs]
    record: dict[str, Any] = {
        "optimizer": name,
        "family": family(name),
        "learning_rate": chosen,
        "tuned": config.tune,
        "test_accuracy": float(np.mean(test)),
        "test_accuracy_std": float(np.std(test)),
        "val_accuracy": float(np.mean([r["val_accuracy"][-1] for r in runs])),
        "final_loss": float(np.mean([r["train_loss"][-1] for r in runs])),
        # one member's share of an epoch of its vmapped program
        "epoch_time_s": timing.epoch_time_s / len(timing.members),
        "state_bytes_per_param": timing.state_bytes_per_param,
        "torch_step_dev": None,
        "torch_free_run_dev": None,
        "wall_time_s": time.perf_counter() - start,
        "curves": {
            key: np.mean([r[key] for r in runs], axis=0).tolist()
            for key in ("train_loss", "val_accuracy", "test_accuracy")
        },
    }
    if tuning is not None:
        record["lr_grid"] = grid
        record["grid_extensions"] = extensions
        record["grid_val_loss"] = [_finite_or_none(v) for v in tuning.val_loss[-1]]
        record["grid_val_accuracy"] = tuning.val_accuracy[-1].tolist()
    say(
        f"{name}: {100 * record['test_accuracy']:.2f}% at lr {chosen:.3g} "
        f"({record['wall_time_s']:.0f} s)"
    )
    return record, runs[0]["step_loss"]


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN or infinity."""
    return float(value) if np.isfinite(value) else None


def run_compare(
    config: CompareConfig, data: Dataset, torch_available: bool
) -> tuple[list[dict[str, Any]], dict[str, dict[str, np.ndarray]]]:
    """Train every optimizer; the records (best test accuracy first, the best marked) and
    the per-step JAX/torch loss curves of the torch-exact ones.

    All JAX runs happen before any torch run, so the epoch times are not disturbed by
    torch's thread pool.
    """
    from jaxopt_adv.app import fidelity

    splits = split_data(data, config.model)
    records, jax_steps = [], {}

    def say(line: str) -> None:
        if config.progress:
            print(line, flush=True)

    for name in config.optimizers:
        record, steps = train_optimizer(name, config, data, splits, say)
        records.append(record)
        jax_steps[name] = steps
    pairs: dict[str, dict[str, np.ndarray]] = {}
    if config.torch and torch_available:
        for record in records:
            name = record["optimizer"]
            if fidelity.has_twin(name, config.model):
                result = fidelity.measure(name, record["learning_rate"], config, data, splits)
                record["torch_step_dev"] = result.step_dev
                record["torch_free_run_dev"] = fidelity.max_relative_deviation(
                    jax_steps[name], result.free_run_loss
                )
                pairs[name] = {"jax": jax_steps[name], "torch": result.free_run_loss}
    records.sort(key=lambda r: -r["test_accuracy"])
    for record in records:
        record["best"] = record["test_accuracy"] == records[0]["test_accuracy"]
    return records, pairs
