"""End to end: the same model, data and optimizer in torch and in JAX give the same losses.

An MLP (dropout off) and a small CNN (BatchNorm in training mode) start from identical
weights (torch's initialisation, imported with ``jaxopt_adv.interop``) and train for 50
steps on identical mini-batches of scikit-learn's 8x8 digits with the mean cross-entropy,
once with ``torch.optim.<X>`` and once with ``jaxopt_adv.torch.<x>``. The training loss
of every step must agree to 1e-4 (float32) / 1e-9 (float64) relative; so must the
evaluation loss after the last step (the CNN in eval mode, i.e. through the running
statistics both frameworks accumulated).

Compiled with ``quick_compilation`` (``tests/helpers/quick.py``: why that is safe here).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
import torch.nn.functional as F
from flax import nnx
from sklearn.datasets import load_digits

import jaxopt_adv
from jaxopt_adv.interop import load_torch_state_dict
from jaxopt_adv.models import MLP, SmallCNN
from jaxopt_adv.models.torch_twins import TorchMLP, TorchSmallCNN
from tests.harness import precision, torch_betas

pytestmark = pytest.mark.usefixtures("quick_compilation")

torch.set_num_threads(1)

STEPS = 50
BATCH = 32
TOLERANCE = {"float32": 1e-4, "float64": 1e-9}
# name: (jaxopt_adv factory, its kwargs, torch class); torch gets lr / betas renamed
OPTIMIZERS = {
    "sgd": (jaxopt_adv.torch.sgd, {"learning_rate": 0.05, "momentum": 0.9}, torch.optim.SGD),
    "adam": (jaxopt_adv.torch.adam, {"learning_rate": 3e-3}, torch.optim.Adam),
    "adamw": (
        jaxopt_adv.torch.adamw,
        {"learning_rate": 3e-3, "b2": 0.99, "weight_decay": 0.05},
        torch.optim.AdamW,
    ),
    "rmsprop": (jaxopt_adv.torch.rmsprop, {"learning_rate": 2e-3}, torch.optim.RMSprop),
    "nadam": (jaxopt_adv.torch.nadam, {"learning_rate": 3e-3}, torch.optim.NAdam),
}


def torch_kwargs(kwargs: dict) -> dict:
    kwargs = dict(kwargs)
    kwargs["lr"] = kwargs.pop("learning_rate")
    return torch_betas(kwargs) if {"b1", "b2"} & set(kwargs) else kwargs


@functools.cache
def digits() -> tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray]:
    """float64 images (N, 8, 8), labels, the 50 training batches, a held-out index set."""
    data = load_digits()
    images = (data.images / 16.0).astype(np.float64)
    order = np.random.default_rng(0).permutation(len(images))
    batches = [order[i * BATCH : (i + 1) * BATCH] for i in range(STEPS)]
    held_out = order[STEPS * BATCH : STEPS * BATCH + 256]
    return images, data.target.astype(np.int64), batches, held_out


def as_inputs(kind: str, images: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """(torch input, JAX input): flat vectors for the MLP, NCHW / NHWC for the CNN."""
    images = images.astype(dtype)
    if kind == "mlp":
        flat = images.reshape(len(images), -1)
        return flat, flat
    return np.ascontiguousarray(images[:, None]), images[..., None]


def build(kind: str, dtype: str):
    """The torch model (seeded init), its NNX twin with the same weights, and the mode."""
    torch.manual_seed(0)
    param_dtype = jnp.dtype(dtype)
    if kind == "mlp":
        reference = TorchMLP(64, (32, 16), 10, dropout_rate=0.2)
        model = MLP(64, (32, 16), 10, dropout_rate=0.2, param_dtype=param_dtype, rngs=nnx.Rngs(0))
        reference.eval()  # dropout off: deterministic on both sides
        model.eval()
    else:
        reference = TorchSmallCNN(1, (4, 8), 10, image_size=8)
        model = SmallCNN(1, (4, 8), 10, image_size=8, param_dtype=param_dtype, rngs=nnx.Rngs(0))
        reference.train()  # BatchNorm normalises with batch statistics and updates its running ones
        model.train()
    reference.to(getattr(torch, dtype))
    load_torch_state_dict(model, reference.state_dict())
    return reference, model


@functools.partial(jax.jit, static_argnums=0)
def loss_and_grads(graphdef, params, rest, x, y):
    """Loss, gradients and the updated BatchNorm statistics of one training batch.

    Jitted once per model and dtype (``graphdef`` is static and equal across runs): the
    five optimizers reuse the compiled forward/backward pass.
    """

    def loss_fn(params, rest):
        # copy=True: fresh Variables at this trace level, which BatchNorm may update
        module = nnx.merge(graphdef, params, rest, copy=True)
        logits = module(x)
        loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
        return loss, nnx.split(module, nnx.Param, ...)[2]

    return jax.value_and_grad(loss_fn, has_aux=True)(params, rest)


@functools.partial(jax.jit, static_argnums=0)
def evaluation_loss(graphdef, state, x, y):
    logits = nnx.merge(graphdef, state, copy=True)(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()


def train_jax(model, tx, batches):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    @jax.jit
    def apply_optimizer(grads, opt_state, params):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    opt_state = tx.init(params)
    losses = []
    for x, y in batches:
        (loss, rest), grads = loss_and_grads(graphdef, params, rest, jnp.asarray(x), jnp.asarray(y))
        params, opt_state = apply_optimizer(grads, opt_state, params)
        losses.append(loss)
    return np.asarray(losses, np.float64), nnx.merge(graphdef, params, rest)


def train_torch(reference, optimizer, batches):
    losses = []
    for x, y in batches:
        optimizer.zero_grad()
        loss = F.cross_entropy(reference(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return np.asarray(losses, np.float64)


def run(kind: str, name: str, dtype: str) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Per-step training losses (JAX, torch) and the final held-out losses (JAX, torch)."""
    factory, kwargs, torch_class = OPTIMIZERS[name]
    images, labels, batch_indices, held_out = digits()
    with precision(dtype):
        reference, model = build(kind, dtype)
        torch_batches, jax_batches = [], []
        for index in batch_indices:
            x_torch, x_jax = as_inputs(kind, images[index], dtype)
            torch_batches.append((x_torch, labels[index]))
            jax_batches.append((x_jax, labels[index].astype(np.int32)))
        ours, trained = train_jax(model, factory(**kwargs), jax_batches)
        theirs = train_torch(
            reference, torch_class(reference.parameters(), **torch_kwargs(kwargs)), torch_batches
        )

        trained.eval()
        reference.eval()
        x_torch, x_jax = as_inputs(kind, images[held_out], dtype)
        y = labels[held_out]
        eval_ours = evaluation_loss(
            *nnx.split(trained), jnp.asarray(x_jax), jnp.asarray(y, np.int32)
        )
        with torch.no_grad():
            eval_theirs = F.cross_entropy(reference(torch.from_numpy(x_torch)), torch.from_numpy(y))
    return ours, theirs, float(eval_ours), eval_theirs.item()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_losses_match_torch_at_every_step(kind, name, dtype):
    ours, theirs, eval_ours, eval_theirs = run(kind, name, dtype)
    assert len(ours) == len(theirs) == STEPS
    assert theirs[-5:].mean() < 0.8 * theirs[:5].mean()  # it does train
    deviation = np.abs(ours - theirs) / np.abs(theirs)
    worst = int(np.argmax(deviation))
    assert deviation[worst] <= TOLERANCE[dtype], (
        f"step {worst + 1}: loss {ours[worst]} vs torch {theirs[worst]} "
        f"(relative {deviation[worst]:.2e})"
    )
    eval_deviation = abs(eval_ours - eval_theirs) / abs(eval_theirs)
    assert eval_deviation <= TOLERANCE[dtype], (eval_ours, eval_theirs)
