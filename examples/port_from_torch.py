"""Port a PyTorch training loop to JAX and get the same numbers.

Trains the same small MLP on scikit-learn's 8x8 digits twice -- with
``torch.optim.AdamW`` and with ``jaxopt_adv.torch.adamw`` -- from identical initial
weights and identical mini-batches, and prints how far apart the two loss curves are.

  python examples/port_from_torch.py [--optimizer adamw|sgd|rmsprop|nadam] [--epochs 5]

Needs the ``examples`` extra (scikit-learn) and, for the comparison, torch.
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from sklearn.datasets import load_digits

import jaxopt_adv

HIDDEN = 32
SETTINGS = {  # jaxopt_adv factory kwargs; torch gets the same with lr/betas renamed
    "adamw": {"learning_rate": 3e-3, "weight_decay": 1e-2},
    "sgd": {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True},
    "rmsprop": {"learning_rate": 1e-3, "momentum": 0.5, "centered": True},
    "nadam": {"learning_rate": 3e-3},
}


def data(seed: int = 0):
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int32)
    order = np.random.default_rng(seed).permutation(len(x))
    split = int(0.8 * len(x))
    return (x[order[:split]], y[order[:split]]), (x[order[split:]], y[order[split:]])


def init_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "w1": (rng.normal(size=(64, HIDDEN)) / 8.0).astype(np.float32),
        "b1": np.zeros(HIDDEN, np.float32),
        "w2": (rng.normal(size=(HIDDEN, 10)) / np.sqrt(HIDDEN)).astype(np.float32),
        "b2": np.zeros(10, np.float32),
    }


def batches(n: int, batch_size: int, epochs: int, seed: int = 1):
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = rng.permutation(n)
        for i in range(0, n - batch_size + 1, batch_size):
            yield order[i : i + batch_size]


def train_jax(name, weights, train, epochs, batch_size):
    x, y = train
    opt = jaxopt_adv.get_optimizer(f"torch.{name}")(**SETTINGS[name])

    def loss_fn(p, xb, yb):
        logits = jnp.tanh(xb @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    def step(p, state, xb, yb):
        loss, grads = jax.value_and_grad(loss_fn)(p, xb, yb)
        updates, state = opt.update(grads, state, p)
        return optax.apply_updates(p, updates), state, loss

    step = jax.jit(step, donate_argnums=(0, 1))
    params = {k: jnp.asarray(v) for k, v in weights.items()}
    state = opt.init(params)
    losses = []
    for idx in batches(len(x), batch_size, epochs):
        params, state, loss = step(params, state, x[idx], y[idx])
        losses.append(float(loss))
    return params, np.array(losses)


def train_torch(name, weights, train, epochs, batch_size):
    import torch

    torch.set_num_threads(1)
    x, y = (torch.from_numpy(a) for a in train)
    params = {k: torch.tensor(v, requires_grad=True) for k, v in weights.items()}
    kwargs = dict(SETTINGS[name])
    kwargs["lr"] = kwargs.pop("learning_rate")
    cls = {"adamw": "AdamW", "sgd": "SGD", "rmsprop": "RMSprop", "nadam": "NAdam"}[name]
    opt = getattr(torch.optim, cls)(params.values(), **kwargs)
    losses = []
    for idx in batches(len(x), batch_size, epochs):
        idx = torch.from_numpy(idx)
        logits = torch.tanh(x[idx] @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]
        loss = torch.nn.functional.cross_entropy(logits, y[idx].long())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return np.array(losses)


def accuracy(params, test) -> float:
    x, y = test
    logits = jnp.tanh(x @ params["w1"] + params["b1"]) @ params["w2"] + params["b2"]
    return float(jnp.mean(jnp.argmax(logits, -1) == y))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", choices=sorted(SETTINGS), default="adamw")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    train, test = data()
    weights = init_weights()
    params, jax_losses = train_jax(args.optimizer, weights, train, args.epochs, args.batch_size)
    print(
        f"jaxopt_adv.torch.{args.optimizer}: {len(jax_losses)} steps, "
        f"final loss {jax_losses[-1]:.4f}, test accuracy {accuracy(params, test):.3f}"
    )
    try:
        torch_losses = train_torch(args.optimizer, weights, train, args.epochs, args.batch_size)
    except ImportError:
        print("torch is not installed: skipping the comparison")
        return
    deviation = np.max(np.abs(jax_losses - torch_losses) / np.abs(torch_losses))
    print(f"torch.optim:              final loss {torch_losses[-1]:.4f}")
    print(f"max relative deviation of the two loss curves: {deviation:.2e}")


if __name__ == "__main__":
    main()
