r"""MNIST: SigProp and localized (Hebbian) learning against backprop with the same base optimizer.

On the bundled MNIST subset (``jaxopt_adv.datasets``, 4,000 training and 1,000 test
images), the classic MLP widths (784-512-256-10, ReLU, no dropout), batches of 128 (the
last partial batch dropped), for each seed:

* Backprop Adam: ``jaxopt_adv.torch.adam(1e-3)`` on ``LocalizedMLP`` with no localized layer;
* SigProp (Adam): ``SigPropNet`` (signal generator 784/10 -> 512, one block 512 -> 256,
  head) with ``sigprop_optimizer(1e-3, 1e-3, 0.9)`` and v14 local losses; no gradient
  crosses a block;
* Backprop SGD: ``jaxopt_adv.torch.sgd(1e-2, momentum=0.9)``;
* Localized (SGD), k=1: ``create_localized_optimizer`` (Oja, hebbian_lr 1e-4) around that
  SGD; all layers learn by SGD for the first 80% of the epochs (``--switch``), then the first hidden
  layer switches to the Hebbian rule (a static schedule set with ``set_boundary``) and
  the backward pass stops after it.

Printed: final test accuracy (mean +- std over the seeds), the difference from the
backprop row with the same base, and the training time per step (median over steps
after the first epoch).

``--dataset digits`` (scikit-learn's 8x8 digits, 64 inputs) runs the same comparison in
seconds (the tests use it).

  python examples/local_rules.py [--epochs 10] [--seeds 3] [--dataset mnist5k]
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxopt_adv.datasets import DATASETS, load_dataset
from jaxopt_adv.local import (
    LocalizedMLP,
    SigPropNet,
    create_localized_optimizer,
    set_boundary,
    sigprop_optimizer,
)
from jaxopt_adv.torch import adam, sgd

HIDDEN = [512, 256]


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def backprop(
    base: optax.GradientTransformation, seed: int, inputs: int
) -> tuple[nnx.Module, Callable]:
    model = LocalizedMLP(inputs, HIDDEN, 10, rngs=nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, base, wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(lambda m: cross_entropy(m(x)[0], y))(model)
        optimizer.update(model, grads)
        return loss

    return model, lambda x, y, epoch: step(model, optimizer, x, y)


def sigprop(seed: int, inputs: int) -> tuple[nnx.Module, Callable]:
    model = SigPropNet(inputs, HIDDEN, 10, rngs=nnx.Rngs(seed))
    optimizer = nnx.Optimizer(model, sigprop_optimizer(1e-3, 1e-3, 0.9), wrt=nnx.Param)

    @nnx.jit
    def step(model, optimizer, x, y):
        loss, grads = nnx.value_and_grad(lambda m: m.loss(x, y))(model)
        optimizer.update(model, grads)
        return loss

    return model, lambda x, y, epoch: step(model, optimizer, x, y)


def localized(seed: int, inputs: int, switch_epoch: int) -> tuple[Callable, Callable]:
    """SGD everywhere before ``switch_epoch``, then the first hidden layer Hebbian (static
    schedule: the paper moves layers to localized learning as training progresses)."""
    model = LocalizedMLP(inputs, HIDDEN, 10, rngs=nnx.Rngs(seed))
    tx = create_localized_optimizer(model, 1e-2, 1e-4, num_localized=0)
    graphdef, params = nnx.split(model)
    carry = {"params": params, "opt_state": tx.init(params)}

    @functools.partial(jax.jit, static_argnames="num_localized")
    def step(params, opt_state, x, y, num_localized):
        def loss_fn(params):
            logits, activations = nnx.merge(graphdef, params)(x, num_localized=num_localized)
            return cross_entropy(logits, y), activations

        (loss, activations), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = tx.update(
            grads, opt_state, params, activations=activations, value=loss
        )
        return optax.apply_updates(params, updates), opt_state, loss

    def train_step(x, y, epoch):
        num_localized = int(epoch >= switch_epoch)
        opt_state = set_boundary(carry["opt_state"], num_localized)
        carry["params"], carry["opt_state"], loss = step(
            carry["params"], opt_state, x, y, num_localized
        )
        return loss

    return lambda x: nnx.merge(graphdef, carry["params"])(x), train_step


METHODS = {
    "Backprop Adam": lambda seed, inputs: backprop(adam(1e-3), seed, inputs),
    "SigProp (Adam)": sigprop,
    "Backprop SGD-m": lambda seed, inputs: backprop(sgd(1e-2, momentum=0.9), seed, inputs),
    "Localized k=1 (SGD-m)": localized,
}
NEEDS_EPOCHS = {"Localized k=1 (SGD-m)"}
BASE_ROW = {"SigProp (Adam)": "Backprop Adam", "Localized k=1 (SGD-m)": "Backprop SGD-m"}


def accuracy(model: Callable, x: np.ndarray, y: np.ndarray) -> float:
    logits = model(jnp.asarray(x))[0]
    return float(np.mean(np.asarray(jnp.argmax(logits, -1)) == y))


def run(name: str, seed: int, data, epochs: int, batch: int, switch: float) -> tuple[float, float]:
    """(test accuracy, median step seconds after the first epoch) of one run."""
    make, inputs = METHODS[name], data.x_train.shape[1]
    if name in NEEDS_EPOCHS:
        model, step = make(seed, inputs, int(switch * epochs))
    else:
        model, step = make(seed, inputs)
    rng = np.random.default_rng(seed)
    times = []
    for epoch in range(epochs):
        order = rng.permutation(len(data.x_train))
        for i in range(len(order) // batch):
            idx = order[i * batch : (i + 1) * batch]
            start = time.perf_counter()
            jax.block_until_ready(
                step(jnp.asarray(data.x_train[idx]), jnp.asarray(data.y_train[idx]), epoch)
            )
            if epoch:
                times.append(time.perf_counter() - start)
    return accuracy(model, data.x_test, data.y_test), float(np.median(times or [np.nan]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument(
        "--switch", type=float, default=0.8, help="localized from this epoch fraction"
    )
    parser.add_argument("--train-size", type=int, default=None, help="subsample (tests)")
    parser.add_argument("--dataset", choices=DATASETS, default="mnist5k")
    args = parser.parse_args()
    data = load_dataset(args.dataset)
    if args.train_size:
        data = data._replace(
            x_train=data.x_train[: args.train_size], y_train=data.y_train[: args.train_size]
        )
    results = {}
    for name in METHODS:
        runs = [
            run(name, seed, data, args.epochs, args.batch, args.switch)
            for seed in range(args.seeds)
        ]
        results[name] = (np.array([a for a, _ in runs]) * 100, np.nanmedian([t for _, t in runs]))
    print(f"{args.dataset}, {args.epochs} epochs, batch {args.batch}, {args.seeds} seeds")
    print("| method | test acc % (mean +- std) | vs its backprop base | step (ms) |")
    print("|---|---|---|---|")
    for name, (acc, step_time) in results.items():
        base = BASE_ROW.get(name)
        diff = f"{acc.mean() - results[base][0].mean():+.2f}" if base else "-"
        print(f"| {name} | {acc.mean():.2f} +- {acc.std():.2f} | {diff} | {1e3 * step_time:.2f} |")


if __name__ == "__main__":
    main()
