"""Small NNX models and data for the training-utility tests."""

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


class TinyNet(nnx.Module):
    """Linear -> BatchNorm -> ReLU -> Dropout -> Linear: params, batch stats and RNG state
    (``batch_norm=False``: without the BatchNorm)."""

    def __init__(
        self,
        rngs: nnx.Rngs,
        features: int = 6,
        hidden: int = 16,
        classes: int = 3,
        batch_norm: bool = True,
    ):
        self.hidden = nnx.Linear(features, hidden, rngs=rngs)
        self.norm = nnx.BatchNorm(hidden, rngs=rngs) if batch_norm else None
        self.drop = nnx.Dropout(0.25, rngs=rngs)
        self.out = nnx.Linear(hidden, classes, rngs=rngs)

    def __call__(self, x):
        h = self.hidden(x)
        if self.norm is not None:
            h = self.norm(h)
        return self.out(self.drop(nnx.relu(h)))


def make_model(seed: int = 0, batch_norm: bool = True) -> TinyNet:
    return TinyNet(nnx.Rngs(params=seed, dropout=seed + 1), batch_norm=batch_norm)


def make_data(n: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32) + (x[:, 1] > 1).astype(np.int32)
    return x, y


def loss_fn(model, batch):
    x, y = batch
    logits = model(x)
    loss = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    return loss, {"accuracy": jnp.mean(jnp.argmax(logits, -1) == y)}
