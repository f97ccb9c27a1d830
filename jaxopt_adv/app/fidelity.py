"""How closely a torch-exact optimizer tracks its ``torch.optim`` class in ``compare``.

Two measures, from the weights of seed 0 at the learning rate ``compare`` chose:

* **step deviation** (``torch step dev``, the optimizer's fidelity): torch trains the
  model; before every ``optimizer.step()`` our optimizer, carrying its own state, steps
  from torch's current weights with torch's gradients. After each step the deviation is
  ``max over leaves of max|ours - torch| / max|torch|``; the column is its largest value
  over the run. Both sides see the same numbers at every step, so this measures the
  update rule alone (float32 rounding: about 1e-7).
* **free-running loss deviation** (``free-run loss dev``): the two frameworks each train
  on their own from the same weights on the same batches; the largest relative
  difference of the two per-step loss curves. Matmul rounding differs between XLA and
  torch and grows chaotically over a run, more so at large learning rates, so this
  reads far above the step deviation and varies between machines.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np
from flax import nnx

from jaxopt_adv.app.recipes import SETTINGS, cnn_channels, make_recipe
from jaxopt_adv.datasets import Dataset
from jaxopt_adv.train.loop import batch_indices
from jaxopt_adv.train.step import split_model

__all__ = ["TORCH_TWINS", "Fidelity", "has_twin", "max_relative_deviation", "measure"]

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
    "torch.adafactor": "Adafactor",
    "torch.rprop": "Rprop",
    "torch.asgd": "ASGD",
}


class Fidelity(NamedTuple):
    """The two measures of one optimizer."""

    step_dev: float  # the largest per-step parameter deviation on shared gradients
    step_devs: np.ndarray  # one per step
    free_run_loss: np.ndarray  # torch's per-step losses, training on its own


def has_twin(name: str, model: str) -> bool:
    """Whether ``name`` is compared with a ``torch.optim`` class on ``model``."""
    return name in TORCH_TWINS and model in ("mlp", "cnn")


def max_relative_deviation(ours: np.ndarray, reference: np.ndarray) -> float:
    """``max_t |ours_t - reference_t| / |reference_t|``."""
    return float(np.max(np.abs(ours - reference) / np.maximum(np.abs(reference), 1e-12)))


def torch_kwargs(name: str, learning_rate: float) -> dict[str, Any]:
    """The torch.optim keyword arguments of ``name``'s compare settings."""
    return {"lr": learning_rate, **SETTINGS.get(name, {})}


def _torch_model(config: Any, data: Dataset, flax_model: nnx.Module):
    """The torch twin of the configured model, holding ``flax_model``'s weights."""
    import torch

    from jaxopt_adv.interop import export_torch_state_dict
    from jaxopt_adv.models.torch_twins import TorchMLP, TorchSmallCNN

    if config.model == "mlp":
        model = TorchMLP(data.x_train.shape[1], (512, 256), data.num_classes, dropout_rate=0.0)
    else:
        size = data.image_shape[0]
        model = TorchSmallCNN(1, cnn_channels(data), data.num_classes, image_size=size)
    weights = export_torch_state_dict(flax_model)
    model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in weights.items()})
    return model.train()


def _as_params(flax_model: nnx.Module, tensors: dict[str, Any]) -> Any:
    """``{torch name: tensor}`` loaded into ``flax_model``; its parameters, pure arrays."""
    from jaxopt_adv.interop import load_torch_state_dict

    arrays = {k: v.detach().numpy().copy() for k, v in tensors.items()}
    load_torch_state_dict(flax_model, arrays, strict=False)
    return nnx.as_pure(split_model(flax_model)[1])


def _deviation(ours: Any, reference: Any) -> float:
    """``max over leaves of max|ours - reference| / max|reference|``."""
    worst = 0.0
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(reference), strict=True):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        scale = max(float(np.max(np.abs(b))), 1e-30)
        worst = max(worst, float(np.max(np.abs(a - b))) / scale)
    return worst


def measure(name: str, learning_rate: float, config: Any, data: Dataset, splits: Any) -> Fidelity:
    """Train the torch twin of ``name`` at ``learning_rate`` from seed 0's weights on
    compare's batches, our optimizer stepping alongside on torch's gradients."""
    import optax
    import torch

    torch.set_num_threads(1)  # torch and XLA thread pools fight in one process
    recipe = make_recipe(name, data, config.model, len(splits.y_train), config.epochs)
    flax_model = recipe.build(0)
    model = _torch_model(config, data, flax_model)
    optimizer = getattr(torch.optim, TORCH_TWINS[name])(
        model.parameters(), **torch_kwargs(name, learning_rate)
    )
    tx = recipe.optimizer(learning_rate)
    update = jax.jit(lambda g, s, p: tx.update(g, s, p))
    opt_state = tx.init(_as_params(flax_model, dict(model.named_parameters())))
    x = torch.from_numpy(np.ascontiguousarray(splits.x_train))
    if config.model != "mlp":
        x = x.permute(0, 3, 1, 2).contiguous()  # NHWC -> NCHW
    y = torch.from_numpy(splits.y_train.astype(np.int64))
    losses, devs = [], []
    for epoch in range(config.epochs):
        for idx in batch_indices(len(x), config.batch_size, 0, epoch):
            index = torch.from_numpy(idx)
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
            loss.backward()
            named = dict(model.named_parameters())
            params = _as_params(flax_model, named)
            grads = _as_params(flax_model, {k: p.grad for k, p in named.items()})
            updates, opt_state = update(grads, opt_state, params)
            ours = optax.apply_updates(params, updates)
            optimizer.step()
            devs.append(_deviation(ours, _as_params(flax_model, dict(model.named_parameters()))))
            losses.append(loss.item())
    devs = np.asarray(devs)
    return Fidelity(float(np.max(devs)), devs, np.asarray(losses))
