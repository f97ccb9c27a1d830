"""``jaxopt-adv compare``: train one model with several optimizers on bundled real data.

For every optimizer and random seed the model (a 784-512-256-10 MLP or a small CNN, Flax
NNX) is trained with :func:`jaxopt_adv.train.fit` from initial weights and batches drawn
from that seed, then evaluated on the test split. For torch-exact optimizers, with torch
installed, one more pair of runs checks that we track torch: the same model with dropout
off (so both sides are deterministic) trained in JAX and in torch
(:mod:`jaxopt_adv.models.torch_twins`) from identical weights on identical batches; the
record keeps the largest relative deviation of the two per-step loss curves.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
import optax
from flax import nnx

from jaxopt_adv.came import AutomagicConfig
from jaxopt_adv.datasets import Dataset
from jaxopt_adv.models import MLP, SmallCNN
from jaxopt_adv.registry import describe, get_optimizer
from jaxopt_adv.train import fit
from jaxopt_adv.train.loop import batch_indices

__all__ = [
    "DEFAULT_OPTIMIZERS",
    "HYPERPARAMETERS",
    "NEEDS_MORE",
    "TORCH_TWINS",
    "CompareConfig",
    "run_compare",
]

# one optimizer of every family that trains through the standard step (and SGD)
DEFAULT_OPTIMIZERS = ("torch.sgd", "torch.adamw", "came", "gradient_correction")

# Registered optimizers that need more than gradients and the loss: where to see them.
NEEDS_MORE = {
    "fer": "takes logits, labels and sample indices: see examples/mnist_advanced.py",
    "mu_adam": "needs a muP model and its infshapes: see examples/mup_transfer.py",
    "mu_adamw": "needs a muP model and its infshapes: see examples/mup_transfer.py",
    "mu_sgd": "needs a muP model and its infshapes: see examples/mup_transfer.py",
    "sigprop": "trains a SigPropNet on its local losses: see examples/local_rules.py",
}

# Hyperparameters for training the models from scratch; anything not listed gets
# ``learning_rate=1e-3`` and its factory's defaults.
HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    # 0.05 trains faster but sits at the edge of stability, where float32 rounding
    # differences between XLA and torch grow to 1e-2 over 150 steps (5e-7 at 0.03)
    "torch.sgd": {"learning_rate": 0.03, "momentum": 0.9},
    "torch.asgd": {"learning_rate": 0.05},
    "torch.adagrad": {"learning_rate": 0.01},
    "torch.adadelta": {"learning_rate": 1.0},
    "torch.rprop": {"learning_rate": 1e-3},
    "torch.adamw": {"learning_rate": 1e-3, "weight_decay": 1e-2},
    # the LoRA preset's rank penalty (an eigendecomposition per matrix per step) is for
    # adapters, not for training a model from scratch
    "automagic_came_amp": {
        "learning_rate": 1e-3,
        "config": AutomagicConfig(lora_rank_penalty=False),
    },
}

# The torch.optim class each torch-exact optimizer is compared with.
TORCH_TWINS: dict[str, str] = {
    "torch.sgd": "SGD",
    "torch.adam": "Adam",
    "torch.adamw": "AdamW",
    "torch.adamax": "Adamax",
    "torch.nadam": "NAdam",
    "torch.radam": "RAdam",
    "torch.rmsprop": "RMSprop",
    "torch.adagrad": "Adagrad",
    "torch.adadelta": "Adadelta",
    "torch.rprop": "Rprop",
    "torch.asgd": "ASGD",
}


def torch_kwargs(settings: dict[str, Any]) -> dict[str, Any]:
    """The torch.optim keyword arguments for our settings (only ``lr`` is renamed; the
    other names in :data:`HYPERPARAMETERS` are torch's)."""
    return {("lr" if k == "learning_rate" else k): v for k, v in settings.items()}


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


def hyperparameters(name: str) -> dict[str, Any]:
    """The settings ``compare`` trains ``name`` with."""
    return dict(HYPERPARAMETERS.get(name, {"learning_rate": 1e-3}))


MLP_HIDDEN = (512, 256)  # 784-512-256-10, the classic MNIST MLP


def cnn_channels(data: Dataset) -> tuple[int, ...]:
    """Two conv blocks for 28x28 MNIST, one for 8x8 digits."""
    return (8, 16) if data.image_shape[0] >= 16 else (16,)


def make_model(config: CompareConfig, data: Dataset, seed: int, dropout: float = 0.2):
    """The configured Flax NNX model, its initial weights drawn from ``seed``."""
    rngs = nnx.Rngs(seed)
    if config.model == "mlp":
        features = data.x_train.shape[1]
        return MLP(features, MLP_HIDDEN, data.num_classes, dropout_rate=dropout, rngs=rngs)
    size = data.image_shape[0]
    return SmallCNN(1, cnn_channels(data), data.num_classes, image_size=size, rngs=rngs)


def model_inputs(config: CompareConfig, data: Dataset, x: np.ndarray) -> np.ndarray:
    """Flat rows for the MLP; NHWC images for the CNN."""
    return x if config.model == "mlp" else x.reshape(len(x), *data.image_shape, 1)


def loss_fn(model: nnx.Module, batch: tuple[jax.Array, jax.Array]):
    """Mean cross-entropy (``F.cross_entropy``) and accuracy."""
    x, y = batch
    logits = model(x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, {"accuracy": (logits.argmax(-1) == y).mean()}


def state_bytes_per_param(opt_state: Any, params: Any) -> float:
    """Optimizer-state bytes per parameter element."""
    state = sum(np.asarray(x).nbytes for x in jax.tree.leaves(opt_state))
    return state / sum(math.prod(np.shape(x)) for x in jax.tree.leaves(params))


def _fit(
    config: CompareConfig, data: Dataset, name: str, seed: int, *, dropout: float, evaluate: bool
):
    """Train the configured model with optimizer ``name``; ``(state, history)``."""
    model = make_model(config, data, seed, dropout=dropout)
    tx = get_optimizer(name)(**hyperparameters(name))
    train = (model_inputs(config, data, data.x_train), data.y_train)
    test = (model_inputs(config, data, data.x_test), data.y_test) if evaluate else None
    return fit(
        model,
        tx,
        loss_fn,
        train,
        epochs=config.epochs,
        batch_size=config.batch_size,
        seed=seed,
        eval_data=test,
        progress=config.progress and evaluate,
    )


def train_one(config: CompareConfig, data: Dataset, name: str, seed: int) -> dict[str, Any]:
    """One training run: per-epoch curves, test accuracy, epoch time, state size."""
    state, history = _fit(config, data, name, seed, dropout=0.2, evaluate=True)
    times = history.epochs["epoch_time"]
    return {
        "train_loss": history.epochs["train_loss"],
        "test_accuracy": history.epochs["eval_accuracy"],
        # the first epoch includes compilation
        "epoch_time_s": statistics.median(times[1:] if len(times) > 1 else times),
        "state_bytes_per_param": state_bytes_per_param(state.opt_state, state.params),
    }


def step_losses_jax(config: CompareConfig, data: Dataset, name: str, seed: int) -> np.ndarray:
    """Per-step training losses of the deterministic (dropout off) JAX run."""
    _, history = _fit(config, data, name, seed, dropout=0.0, evaluate=False)
    return np.asarray(history.steps["loss"])


def step_losses_torch(config: CompareConfig, data: Dataset, name: str, seed: int) -> np.ndarray:
    """Per-step training losses of the same run in torch, from the same initial weights."""
    import torch

    from jaxopt_adv.interop import export_torch_state_dict
    from jaxopt_adv.models.torch_twins import TorchMLP, TorchSmallCNN

    torch.set_num_threads(1)  # torch and XLA thread pools fight in one process
    flax_model = make_model(config, data, seed, dropout=0.0)
    if config.model == "mlp":
        model = TorchMLP(data.x_train.shape[1], MLP_HIDDEN, data.num_classes, dropout_rate=0.0)
    else:
        size = data.image_shape[0]
        model = TorchSmallCNN(1, cnn_channels(data), data.num_classes, image_size=size)
    weights = export_torch_state_dict(flax_model)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    model.train()
    optimizer_class = getattr(torch.optim, TORCH_TWINS[name])
    optimizer = optimizer_class(model.parameters(), **torch_kwargs(hyperparameters(name)))
    x = torch.from_numpy(data.x_train)
    if config.model != "mlp":
        x = x.reshape(len(x), 1, *data.image_shape)
    y = torch.from_numpy(data.y_train.astype(np.int64))
    losses = []
    for epoch in range(config.epochs):
        for idx in batch_indices(len(x), config.batch_size, seed, epoch):
            index = torch.from_numpy(idx)
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
    return np.asarray(losses)


def max_relative_deviation(ours: np.ndarray, reference: np.ndarray) -> float:
    """``max_t |ours_t - reference_t| / |reference_t|``."""
    return float(np.max(np.abs(ours - reference) / np.maximum(np.abs(reference), 1e-12)))


def run_compare(
    config: CompareConfig, data: Dataset, torch_available: bool
) -> tuple[list[dict[str, Any]], dict[str, dict[str, np.ndarray]]]:
    """Train every optimizer; return the records and the JAX/torch loss-curve pairs.

    All JAX runs happen before any torch run, so the epoch times are not disturbed by
    torch's thread pool.
    """
    records = []
    for name in config.optimizers:
        runs = [train_one(config, data, name, seed) for seed in range(config.seeds)]
        final_accuracy = [r["test_accuracy"][-1] for r in runs]
        records.append(
            {
                "optimizer": name,
                "family": describe(name).family,
                "hyperparameters": hyperparameters(name),
                "test_accuracy": float(np.mean(final_accuracy)),
                "test_accuracy_std": float(np.std(final_accuracy)),
                "final_loss": float(np.mean([r["train_loss"][-1] for r in runs])),
                "epoch_time_s": float(np.mean([r["epoch_time_s"] for r in runs])),
                "state_bytes_per_param": runs[0]["state_bytes_per_param"],
                "torch_max_rel_dev": None,
                "curves": {
                    "train_loss": np.mean([r["train_loss"] for r in runs], axis=0).tolist(),
                    "test_accuracy": np.mean([r["test_accuracy"] for r in runs], axis=0).tolist(),
                },
            }
        )
    pairs: dict[str, dict[str, np.ndarray]] = {}
    if config.torch and torch_available:
        twins = [r for r in records if r["optimizer"] in TORCH_TWINS]
        for record in twins:
            name = record["optimizer"]
            ours = step_losses_jax(config, data, name, seed=0)
            pairs[name] = {"jax": ours}
        for record in twins:
            name = record["optimizer"]
            pairs[name]["torch"] = step_losses_torch(config, data, name, seed=0)
            record["torch_max_rel_dev"] = max_relative_deviation(
                pairs[name]["jax"], pairs[name]["torch"]
            )
    return records, pairs
